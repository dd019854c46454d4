"""Run the real `edged run` as a subprocess, the way systemd would, and look at what it leaves;
write the config.toml it runs on.

Runs in the test process; a test that fails inside `Daemon.dumped_on_failure` kills the daemon
and its workers and prints its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

import psutil

# What a test config holds: scalars, arrays, tables (a mapping) and arrays of tables (a list of
# mappings), as in the TOML a user writes.
TomlValue: TypeAlias = (
    "str | int | float | bool | Path | Sequence[TomlValue] | Mapping[str, TomlValue]"
)
Table: TypeAlias = Mapping[str, TomlValue]


def toml_text(doc: Table) -> str:
    """`doc` as TOML: each table's plain keys, then its tables, then its arrays of tables."""
    return "\n".join(_table_lines(doc, "")).lstrip("\n") + "\n"


def _table_lines(table: Table, path: str) -> list[str]:
    lines = []
    for key, value in table.items():
        if not isinstance(value, Mapping) and not _is_tables(value):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in table.items():
        name = f"{path}.{key}" if path else key
        if isinstance(value, Mapping):
            lines += ["", f"[{name}]", *_table_lines(value, name)]
        elif _is_tables(value):
            assert isinstance(value, Sequence)
            for item in value:
                assert isinstance(item, Mapping)
                lines += ["", f"[[{name}]]", *_table_lines(item, name)]
    return lines


def _is_tables(value: TomlValue) -> bool:
    return isinstance(value, list | tuple) and bool(value) and isinstance(value[0], Mapping)


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def cpu_worker(assets: Path, name: str = "cpu0", **keys: TomlValue) -> dict[str, TomlValue]:
    """A [[workers]] table on the example model (the CPU backend, the default), plus `keys`."""
    return {"name": name, "model": assets / "models" / "yolox_nano.onnx", **keys}


def video_stream(
    assets: Path, name: str, video: str, worker: str = "cpu0", **keys: TomlValue
) -> dict[str, TomlValue]:
    """A [[streams]] table on an example video (`assets/media/<video>`), plus `keys`."""
    return {"name": name, "source": assets / "media" / video, "worker": worker, **keys}


def daemon_config(
    name: str,
    state_dir: Path | None,
    broker_url: str,
    *,
    workers: Sequence[Table] = (),
    streams: Sequence[Table] = (),
    homeassistant: bool = False,
    mqtt: Table | None = None,
    **node: TomlValue,
) -> str:
    """config.toml for a daemon under test: node `name` (and the `node` keys) keeping its state
    in `state_dir` (None: the default), publishing to `broker_url` (and the `mqtt` keys), with
    Home Assistant discovery if asked."""
    node_table: dict[str, TomlValue] = {"name": name}
    if state_dir is not None:
        node_table["state_dir"] = state_dir
    doc: dict[str, TomlValue] = {
        "node": {**node_table, **node},
        "mqtt": {"url": broker_url, **(mqtt or {})},
    }
    if homeassistant:
        doc["homeassistant"] = {"enabled": True}
    if workers:
        doc["workers"] = list(workers)
    if streams:
        doc["streams"] = list(streams)
    return toml_text(doc)


def shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Daemon:
    def __init__(
        self,
        workdir: Path,
        config_text: str,
        *,
        args: tuple[str, ...] = (),
        cpus: set[int] | None = None,
        entry: tuple[str, ...] = ("-m", "edged"),
    ) -> None:
        """`entry`: what `python` runs (`-m edged`, or a probe script that wraps the same CLI)."""
        self.workdir = workdir
        self.entry = entry
        self.cpus = cpus  # run it on these CPUs only (its affinity mask), like `taskset`
        self.config = workdir / "config.toml"
        self.config.write_text(config_text)
        self.args = args
        self.log_path = workdir / "edged.log"
        self.out_path = workdir / "edged.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ, EDGED_LOG_FORMAT="json", PYTHONUNBUFFERED="1")

    def start(self) -> None:
        with self.log_path.open("ab") as err, self.out_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *self._pinned(),
                    sys.executable,
                    *self.entry,
                    "run",
                    "--config",
                    str(self.config),
                    *self.args,
                ],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.workdir,
            )

    def write_stdin(self, line: str) -> None:
        """One line to the daemon's stdin (edged itself never reads it; probes do)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def output(self) -> str:
        """What the daemon wrote to stdout so far."""
        return self.out_path.read_text(errors="replace")

    def _pinned(self) -> list[str]:
        """`taskset` (util-linux, on every Linux) sets the affinity the daemon inherits."""
        if self.cpus is None:
            return []
        return ["taskset", "-c", ",".join(str(c) for c in sorted(self.cpus))]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[psutil.Process]:
        """Every descendant: workers and multiprocessing's resource tracker."""
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def workers(self) -> list[psutil.Process]:
        """The worker processes (spawn's children run `spawn_main`)."""
        return [p for p in self.children() if "spawn_main" in " ".join(_cmdline(p))]

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; kills everything left and fails loudly if it did not exit."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill_all()
            raise AssertionError(
                f"edged did not exit within {timeout} s; log:\n{self.log()}"
            ) from exc
        self._close_stdin()
        return code

    def _close_stdin(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    @contextlib.contextmanager
    def dumped_on_failure(self) -> Iterator[None]:
        """If the block fails: kill every process of the daemon and print its log for the report."""
        try:
            yield
        except BaseException:
            self.kill_all()
            print(self.log())
            raise

    def kill_all(self) -> None:
        if self.proc is None:
            return
        for child in self.workers():
            child.kill()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close_stdin()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def all_gone(processes: list[psutil.Process], timeout: float) -> None:
    """Every process has exited (and is not a zombie), within `timeout` seconds."""

    def gone() -> bool:
        return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in processes)

    wait_until(gone, timeout, f"processes {[p.pid for p in processes]} to exit")
