"""Read and validate `config.toml`: every problem at once, each with its key path.

Runs in the supervisor (at start and on every reload) and in `edged check-config`. Nothing here
changes running state: a reload that fails validation leaves the daemon on its old config.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import msgspec

from edged.config import auto
from edged.config.labels import load_labels
from edged.config.model import Config, MqttConfig, NodeConfig, StreamConfig, WorkerConfig
from edged.config.paths import resolve_model, resolve_source, resolve_state_dir
from edged.urls import credentials


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file: where, and what was expected."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def log(self, logger: Any) -> None:
        """Log each problem as one error entry with its key path (`EDGED_KEY` in the journal),
        file and message: what `journalctl -u edged -p warning` shows, at start or on reload."""
        for problem in self.problems:
            logger.error(
                "config rejected", key=problem.key, problem=problem.message, file=problem.file
            )


@functools.cache
def config_schema() -> dict[str, Any]:
    """The JSON Schema of config.toml, generated from the structs in `edged.config.model`."""
    return msgspec.json.schema(Config)


def load_config(path: str | os.PathLike[str], *, state_dir: str | None = None) -> Config:
    """Read, validate and resolve a config file; raise `ConfigError` with every problem.

    `state_dir`: use this folder instead of `node.state_dir` (`check-config --state-dir`).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(file), "", f"cannot read: {exc.strerror}")]) from exc
    return parse_config(text, file, state_dir=state_dir)


def parse_config(text: str, file: Path, *, state_dir: str | None = None) -> Config:
    """Validate TOML text as if read from `file` (relative paths resolve against its folder)."""
    name = str(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(name, "", f"not valid TOML: {exc}")]) from exc
    schema = list(_schema_problems(data))
    problems = [(_key_path(path), message) for path, message in schema]
    # Cross-references and files are checked too, on each entry without its bad keys, so one
    # run reports a typo in a threshold and a missing model file together.
    bad = [path for path, _ in schema]
    parts = _Parts(
        node=_convert(data.get("node", {}), NodeConfig) or NodeConfig(),
        mqtt=_convert(data.get("mqtt", {}), MqttConfig) or MqttConfig(),
        workers=_convert_each(data.get("workers", []), WorkerConfig, _bad_keys(bad, "workers")),
        streams=_convert_each(data.get("streams", []), StreamConfig, _bad_keys(bad, "streams")),
    )
    if state_dir is not None:
        parts.node = msgspec.structs.replace(parts.node, state_dir=str(Path(state_dir).resolve()))
    resolved = _resolve_and_check(parts, file.resolve().parent, problems)
    if problems:
        problems.sort(key=lambda p: _sort_key(p[0]))
        raise ConfigError([ConfigProblem(name, key, msg) for key, msg in problems])
    config = msgspec.convert(data, Config)
    config = msgspec.structs.replace(
        config,
        node=resolved.node,
        mqtt=resolved.mqtt,
        workers=tuple(w for _, w in resolved.workers),
        streams=tuple(s for _, s in resolved.streams),
    )
    # "auto" thread counts become this machine's numbers here, so a reload that changes what
    # they depend on (a worker or stream added) restarts what must change, like any other key.
    return auto.resolve(config)


T = TypeVar("T", bound=msgspec.Struct)


@dataclass
class _Parts:
    node: NodeConfig
    mqtt: MqttConfig
    workers: list[tuple[int, WorkerConfig]]
    streams: list[tuple[int, StreamConfig]]


def _convert(raw: object, kind: type[T]) -> T | None:
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError:
        return None


def _bad_keys(paths: list[list[str | int]], section: str) -> dict[int, set[str | int]]:
    """For each entry of a [[section]], the keys that failed the schema."""
    bad: dict[int, set[str | int]] = {}
    for path in paths:
        if len(path) >= 3 and path[0] == section and isinstance(path[1], int):
            bad.setdefault(path[1], set()).add(path[2])
    return bad


def _convert_each(
    raw: object, kind: type[T], bad: dict[int, set[str | int]]
) -> list[tuple[int, T]]:
    if not isinstance(raw, list):
        return []
    out = []
    for i, entry in enumerate(raw):
        item = entry
        if isinstance(entry, dict):
            item = {k: v for k, v in entry.items() if k not in bad.get(i, set())}
        value = _convert(item, kind)
        if value is not None:
            out.append((i, value))
    return out


def _sort_key(key: str) -> list[str]:
    return [part.zfill(6) if part.isdigit() else part for part in re.split(r"[\[\].]", key)]


def _key_path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _schema_problems(data: dict[str, Any]) -> Iterator[tuple[list[str | int], str]]:
    validator = jsonschema.Draft202012Validator(config_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        yield from _describe(error)


def _describe(error: jsonschema.ValidationError) -> Iterator[tuple[list[str | int], str]]:
    path = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    value: Any = error.validator_value
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        known = set(allowed)
        instance = error.instance if isinstance(error.instance, dict) else {}
        for key in sorted(k for k in instance if k not in known):
            yield [*path, key], f"unknown key; expected one of: {', '.join(allowed)}"
        return
    if kind == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        for key in value:
            if key not in instance:
                yield [*path, key], "missing; this key is required"
        return
    got = f"got {error.instance!r}"
    if kind == "type":
        expected = value
        if isinstance(expected, list):
            expected = " or ".join(expected)
        message = f"expected {expected}, {got}"
    elif kind == "enum":
        options = ", ".join(repr(v) for v in value)
        message = f"expected one of {options}, {got}"
    elif kind == "pattern":
        message = f"expected {schema.get('description') or 'a string matching ' + kind}, {got}"
    elif kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        message = f"expected a number {sign[kind]} {value}, {got}"
    elif kind in ("minItems", "maxItems"):
        message = f"expected {len(schema.get('prefixItems', [])) or 'more'} items, {got}"
    elif kind == "anyOf" and isinstance(value, list):
        message = f"expected {' or '.join(_alternative(v) for v in value)}, {got}"
    else:
        message = error.message
    yield path, message


def _alternative(schema: Any) -> str:
    """One branch of an `anyOf` in words: `threads = 2` or `threads = "auto"`."""
    if not isinstance(schema, dict):
        return repr(schema)
    if "enum" in schema:
        return " or ".join(repr(v) for v in schema["enum"])
    kind = schema.get("type", "a value")
    low, high = schema.get("minimum"), schema.get("maximum")
    if kind == "integer" and low is not None and high is not None:
        return f"an integer from {low} to {high}"
    return f"{kind}"


def _duplicates(names: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    return {n for n in names if n in seen or seen.add(n)}  # type: ignore[func-returns-value]


def _resolve_and_check(parts: _Parts, base: Path, problems: list[tuple[str, str]]) -> _Parts:
    """Resolve relative paths and check what a schema cannot: names, references, files."""
    state_dir = resolve_state_dir(parts.node.state_dir, base)
    node = msgspec.structs.replace(parts.node, state_dir=str(state_dir))

    for dup in _duplicates(w.name for _, w in parts.workers):
        problems.append(("workers", f"two workers are named {dup!r}; names must be unique"))
    for dup in _duplicates(s.name for _, s in parts.streams):
        problems.append(("streams", f"two streams are named {dup!r}; names must be unique"))

    workers: list[tuple[int, WorkerConfig]] = []
    labels_of: dict[str, tuple[str, ...] | None] = {}
    for i, worker in parts.workers:
        key = f"workers[{i}]"
        model, why = resolve_model(worker.model, base, state_dir)
        if why:
            problems.append((f"{key}.model", why))
        labels_path = worker.labels
        if labels_path != "coco":
            labels_path = str((base / labels_path).resolve())
        try:
            labels_of[worker.name] = load_labels(labels_path)
        except (OSError, ValueError) as exc:
            labels_of[worker.name] = None
            problems.append((f"{key}.labels", f"expected 'coco' or a readable labels file: {exc}"))
        if worker.backend == "ascend":
            problems.extend(_ascend_problems(worker, key, model))
        workers.append((i, msgspec.structs.replace(worker, model=model, labels=labels_path)))

    streams: list[tuple[int, StreamConfig]] = []
    for i, stream in parts.streams:
        key = f"streams[{i}]"
        if stream.worker not in labels_of:
            names = ", ".join(repr(w.name) for _, w in workers) or "none defined"
            why = f"no worker named {stream.worker!r} (workers: {names})"
            problems.append((f"{key}.worker", why))
        known = labels_of.get(stream.worker)
        if known is not None:
            for j, label in enumerate(stream.labels):
                if label not in known:
                    problems.append(
                        (f"{key}.labels[{j}]", f"{label!r} is not a label of the worker's model")
                    )
        source, why = resolve_source(stream.source, base)
        if why:
            problems.append((f"{key}.source", why))
        streams.append((i, msgspec.structs.replace(stream, source=source)))

    return _Parts(node, _resolve_mqtt(parts.mqtt, base, problems), workers, streams)


def _ascend_problems(worker: WorkerConfig, key: str, model: str) -> Iterator[tuple[str, str]]:
    """What an Ascend worker needs that the schema cannot say."""
    if not model.endswith(".om"):
        yield (f"{key}.model", f"the ascend backend loads an ATC-converted .om model, got "
               f"{Path(model).name!r} (docs/ascend.md: converting with atc)")
    width, height = worker.input_size
    if worker.input_kind == "yuv420sp" and (width % 16 or height % 2):
        # VPC writes the model input with a 16-byte row stride and an even height; AIPP reads
        # it tightly packed, so both must agree (pyacl.md 3.4).
        yield (f"{key}.input_size", f"[{width}, {height}]: with input_kind \"yuv420sp\" the "
               "width must be a multiple of 16 and the height even")


# Credentials in mqtt.url are refused, not used: the password would sit in config.toml (and in
# every copy of it), where the documented places (a file, a systemd credential) keep it out.
CREDENTIALS_IN_URL = (
    "user name or password in the URL: set mqtt.username, and mqtt.password_file or "
    "mqtt.password_credential (the password is never written in config.toml)"
)


def _resolve_mqtt(mqtt: MqttConfig, base: Path, problems: list[tuple[str, str]]) -> MqttConfig:
    creds = credentials(mqtt.url)
    if creds.username is not None or creds.password is not None:
        problems.append(("mqtt.url", CREDENTIALS_IN_URL))
    tls = mqtt.tls
    for field in ("ca_file", "cert_file", "key_file"):
        value = getattr(tls, field)
        if value:
            path = (base / value).resolve()
            if not path.is_file():
                why = f"expected a readable file, {path} not found"
                problems.append((f"mqtt.tls.{field}", why))
            tls = msgspec.structs.replace(tls, **{field: str(path)})
    if any((tls.ca_file, tls.cert_file, tls.key_file)) and not mqtt.url.startswith("mqtts://"):
        problems.append(("mqtt.url", "expected mqtts://... when [mqtt.tls] files are set"))
    if (tls.cert_file == "") != (tls.key_file == ""):
        problems.append(("mqtt.tls", "cert_file and key_file go together"))
    mqtt = msgspec.structs.replace(mqtt, tls=tls)
    if mqtt.password_file:
        path = (base / mqtt.password_file).resolve()
        if not path.is_file():
            problems.append(("mqtt.password_file", f"expected a readable file, {path} not found"))
        mqtt = msgspec.structs.replace(mqtt, password_file=str(path))
    if mqtt.password_file and mqtt.password_credential:
        problems.append(("mqtt.password_credential", "set password_file or password_credential"))
    return mqtt
