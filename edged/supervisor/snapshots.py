"""Snapshots kept on disk: `<state_dir>/snapshots/<stream>/<event id>.jpg`, pruned by age.

Runs in the supervisor process; every file operation runs on one dedicated thread, so the event
loop never waits for the disk. The JPEG was encoded in the worker; nothing here decodes it. An
event's file is replaced when its snapshot improves. Files older than the stream's
`snapshot_keep_days` are deleted, checked at most once a minute per stream. A disk error is
logged once and costs only the file.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from edged.protocol import ObjectEvent

log = structlog.get_logger(__name__)

PRUNE_EVERY_S = 60.0


class SnapshotStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "snapshots"
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="edged-snapshots")
        self._pruned: dict[str, float] = {}
        self._error = ""

    def keep(self, event: ObjectEvent, jpeg: bytes, keep_days: float) -> None:
        folder = self.root / event.stream
        path = folder / f"{event.event_id}.jpg"
        now = time.monotonic()
        prune = now - self._pruned.get(event.stream, -PRUNE_EVERY_S) >= PRUNE_EVERY_S
        if prune:
            self._pruned[event.stream] = now
        self._pool.submit(self._write, path, jpeg, keep_days * 86400 if prune else None)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _write(self, path: Path, jpeg: bytes, max_age_s: float | None) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(jpeg)
            os.replace(tmp, path)
            if max_age_s is not None:
                cutoff = time.time() - max_age_s
                for old in path.parent.glob("*.jpg"):
                    with contextlib.suppress(FileNotFoundError):
                        if old.stat().st_mtime < cutoff:
                            old.unlink()
        except OSError as exc:
            if str(exc) != self._error:
                log.error("snapshot not kept on disk", file=str(path), error=str(exc))
            self._error = str(exc)
