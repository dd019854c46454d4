"""Which streams have detection turned off (the per-stream switch), kept across restarts.

Runs in the supervisor process. The list is read once at start, before the event loop serves
anything (a few bytes, like the outbox's store), and written through `asyncio.to_thread`, atomically
(write, then rename), so a crash leaves either the old list or the new one. A stream missing from
the file has detection on: a new stream starts detecting.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

FILE = "detection.json"


class DetectionSwitches:
    def __init__(self, state_dir: Path) -> None:
        self._path = Path(state_dir) / FILE
        self._off: set[str] = self._read()
        self._lock = asyncio.Lock()

    def enabled(self, stream: str) -> bool:
        return stream not in self._off

    @property
    def off(self) -> frozenset[str]:
        return frozenset(self._off)

    def switch(self, stream: str, enabled: bool) -> bool:
        """Change in memory; True when it changed (then `save`)."""
        if self.enabled(stream) == enabled:
            return False
        if enabled:
            self._off.discard(stream)
        else:
            self._off.add(stream)
        return True

    async def save(self) -> None:
        async with self._lock:  # two quick toggles: the later list is written last
            off = sorted(self._off)
            try:
                await asyncio.to_thread(self._write, off)
            except OSError as exc:
                # Applied anyway; it only would not survive a restart: say so.
                log.error("detection switches not saved", file=str(self._path), error=str(exc))

    def _read(self) -> set[str]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            log.warning("detection switches unreadable; detection on everywhere",
                        file=str(self._path), error=str(exc))
            return set()
        off = data.get("off", []) if isinstance(data, dict) else []
        return {s for s in off if isinstance(s, str)}

    def _write(self, off: list[str]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"v": 1, "off": off}))
        tmp.replace(self._path)
