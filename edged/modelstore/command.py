"""`edged models fetch NAME` and `edged models list`: the command-line side of the model store.

Runs in the short-lived `edged` CLI process (a person, a provisioning script), never in the
daemon. `cli.py` calls `register(subparsers)` and then `args.func(args)`; handlers return the
exit code: 0 done, 1 the fetch failed (message on stderr, nothing partial left on disk), 2 a
usage problem (an unreadable config file, a bad `node.state_dir`).

The final path goes to stdout alone, so `MODEL=$(edged models fetch yolox-nano)` works in a
script; everything else (progress, "already fetched", errors) goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import TextIO

from edged.config.paths import resolve_state_dir
from edged.modelstore.catalog import CATALOG
from edged.modelstore.fetch import (
    FetchError,
    catalog_entry,
    fetch_model,
    file_sha256,
    is_fetched,
    model_path,
)


class UsageError(Exception):
    """The command line or the config file it names cannot be used; exit code 2."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `models fetch` and `models list` to the main parser's sub-commands."""
    models = subparsers.add_parser(
        "models",
        help="fetch and list the known detection models",
        description="Fetch the known detection models into the state directory and list them.",
    )
    commands = models.add_subparsers(dest="models_command", metavar="COMMAND", required=True)

    fetch = commands.add_parser(
        "fetch",
        help="download a known model and verify its pinned sha256",
        description=(
            "Download a known model into <state_dir>/models/ and verify its pinned sha256. "
            "Prints the model's path on stdout."
        ),
    )
    fetch.add_argument("name", metavar="NAME", help=f"model name: {', '.join(sorted(CATALOG))}")
    source = fetch.add_mutually_exclusive_group()
    source.add_argument("--url", help="download from this URL instead (a mirror); same sha256")
    source.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        type=Path,
        help="copy a local file instead of downloading (no internet); same sha256",
    )
    _add_state_dir_options(fetch)
    fetch.set_defaults(func=_fetch)

    listing = commands.add_parser(
        "list",
        help="show the known models, whether fetched, and where",
        description="Show the known models, whether each is fetched and verified, and its path.",
    )
    _add_state_dir_options(listing)
    listing.set_defaults(func=_list)


def _add_state_dir_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="state directory (default: node.state_dir of --config, else $STATE_DIRECTORY, "
        "$XDG_STATE_HOME/edged or ~/.local/state/edged)",
    )
    parser.add_argument(
        "--config", metavar="PATH", type=Path, help="take the state directory from this config"
    )


def state_dir_from_args(args: argparse.Namespace) -> Path:
    """--state-dir, else the config's node.state_dir, else the default; `UsageError` if unusable.

    Only `node.state_dir` is read from the config (not the whole validation), so that a config
    with other errors, such as a model that is not fetched yet, still says where models go.
    """
    if args.state_dir is not None:
        return Path(args.state_dir).resolve()
    config: Path | None = args.config
    if config is None:
        return resolve_state_dir("", Path.cwd())
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {config}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{config}: not valid TOML: {exc}") from exc
    node = data.get("node", {})
    configured = node.get("state_dir", "") if isinstance(node, dict) else ""
    if not isinstance(configured, str):
        raise UsageError(f"{config}: node.state_dir: expected a string (a folder path)")
    return resolve_state_dir(configured, config.resolve().parent)


def _fetch(args: argparse.Namespace) -> int:
    try:
        state_dir = state_dir_from_args(args)
    except UsageError as exc:
        print(f"edged models fetch: {exc}", file=sys.stderr)
        return 2
    name: str = args.name
    try:
        if is_fetched(name, state_dir):
            print(
                f"{name} is already fetched and its sha256 verified; nothing to do", file=sys.stderr
            )
            print(model_path(name, state_dir))
            return 0
        where = args.from_file or args.url or catalog_entry(name).url
        print(f"fetching {name} from {where}", file=sys.stderr)
        progress = _ProgressLine(name, sys.stderr) if sys.stderr.isatty() else None
        try:
            path = fetch_model(
                name, state_dir, url=args.url, from_file=args.from_file, progress=progress
            )
        finally:
            if progress is not None:
                progress.finish()
    except FetchError as exc:
        print(f"edged models fetch: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: sha256 verified", file=sys.stderr)
    print(path)
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        state_dir = state_dir_from_args(args)
    except UsageError as exc:
        print(f"edged models list: {exc}", file=sys.stderr)
        return 2
    rows: list[tuple[str, str, str]] = []
    for name in sorted(CATALOG):
        path = model_path(name, state_dir)
        if is_fetched(name, state_dir):
            status = "fetched"
        elif path.exists():
            # Say why rather than just "not fetched": a re-fetch will replace it.
            status = "corrupt" if _readable(path) else "unreadable"
        else:
            status = "missing"
        rows.append((name, status, str(path)))
    width = max(len(r[0]) for r in rows)
    for name, status, where in rows:
        print(f"{name:<{width}}  {status:<10}  {where}")
    return 0


def _readable(path: Path) -> bool:
    try:
        file_sha256(path)
    except OSError:
        return False
    return True


class _ProgressLine:
    """A one-line percentage on a terminal, redrawn only when the whole percent changes."""

    def __init__(self, name: str, stream: TextIO) -> None:
        self._name = name
        self._stream = stream
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = min(100, done * 100 // total) if total > 0 else 0
        if percent == self._shown:
            return
        self._shown = percent
        self._stream.write(
            f"\r{self._name}: {percent:3d}% ({done / 1e6:.1f} of {total / 1e6:.1f} MB)"
        )
        self._stream.flush()

    def finish(self) -> None:
        if self._shown >= 0:
            self._stream.write("\n")
            self._stream.flush()
