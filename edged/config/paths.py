"""Where relative paths in config.toml point: the config file's folder, the state directory."""

from __future__ import annotations

import os
from pathlib import Path

from edged.modelstore.catalog import CATALOG

# Sources that are not local files: opened as they are.
_URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")


def resolve_state_dir(configured: str, base: Path) -> Path:
    """The folder for the outbox and fetched models.

    Order: the config's `node.state_dir`; systemd's $STATE_DIRECTORY; $XDG_STATE_HOME/edged;
    ~/.local/state/edged.
    """
    if configured:
        return (base / configured).resolve()
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "edged"


def resolve_model(model: str, base: Path, state_dir: Path) -> tuple[str, str]:
    """(absolute path, problem or ""). A catalogue name resolves into the state directory."""
    entry = CATALOG.get(model)
    if entry is not None:
        path = state_dir / "models" / entry.filename
        if not path.is_file():
            return str(path), (
                f"model {model!r} is not fetched yet ({path} not found); "
                f"run `edged models fetch {model}` or point model at a local file"
            )
        return str(path), ""
    path = (base / model).resolve()
    if not path.is_file():
        known = ", ".join(sorted(CATALOG))
        why = f"expected a model file or a fetched model name ({known}); {path} not found"
        return str(path), why
    return str(path), ""


def resolve_source(source: str, base: Path) -> tuple[str, str]:
    """(source as the worker opens it, problem or ""). Local files must exist."""
    if source.startswith(_URL_SCHEMES) or source.startswith("/dev/video"):
        return source, ""
    if "://" in source:
        return source, "expected rtsp://, http(s)://, udp://, /dev/videoN, file:PATH or a path"
    path = (base / source.removeprefix("file:")).resolve()
    if not path.is_file():
        return str(path), f"expected a video file, {path} not found"
    return str(path), ""
