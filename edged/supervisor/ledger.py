"""What must outlive a worker and the daemon itself: open events and line totals.

Runs in the supervisor process. State is kept in memory and written to `<state_dir>/events.json`
(write to a temporary file, then rename: a crash leaves the old file or the new one, never half
of one) on one dedicated thread, so the event loop never waits for the disk.

The promise it keeps: every `new` gets exactly one `end`. A `new` is released for publishing only
after the file that lists it as open is written, so a crash at any moment leaves either an event
nobody saw (not published) or one the next start finds open and ends with reason `restart`.
Everything else is released in the order it was submitted, behind the write that precedes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import structlog

from edged.protocol import EventKind, ObjectEvent

log = structlog.get_logger(__name__)

FILE = "events.json"


class LineTotal(msgspec.Struct):
    since: float  # wall-clock seconds: first counted, or last reset
    counts: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)  # label -> in/out


class LedgerState(msgspec.Struct):
    # event id -> the last message of that event (without its snapshot)
    open: dict[str, ObjectEvent] = msgspec.field(default_factory=dict)
    # stream -> line -> totals
    lines: dict[str, dict[str, LineTotal]] = msgspec.field(default_factory=dict)


class Ledger:
    """Use from the event loop only. `release` callbacks run on the loop, in submission order."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE
        self.error = ""
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="edged-ledger")
        self.state = self._load()
        self._queue: list[Callable[[], None]] = []
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    # --- reading at start --------------------------------------------------------------------

    def _load(self) -> LedgerState:
        """Synchronous, once, before the loop handles any message (a small file)."""
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=LedgerState)
        except FileNotFoundError:
            return LedgerState()
        except (OSError, msgspec.DecodeError) as exc:
            # A broken file must not stop the daemon; its open events cannot be ended.
            log.error("event ledger unreadable; starting empty", file=str(self.path),
                      error=str(exc))
            return LedgerState()

    # --- changes -----------------------------------------------------------------------------

    def open_events(self, streams: set[str] | None = None) -> list[ObjectEvent]:
        return [e for e in self.state.open.values() if streams is None or e.stream in streams]

    def is_open(self, event_id: str) -> bool:
        return event_id in self.state.open

    def record(self, event: ObjectEvent, release: Callable[[], None]) -> None:
        """Note an event and queue its publishing; `new` and `end` are written down first."""
        stored = msgspec.structs.replace(event, snapshot=b"")
        if event.kind is EventKind.END:
            self._dirty |= self.state.open.pop(event.event_id, None) is not None
        elif event.kind is EventKind.NEW:
            self.state.open[event.event_id] = stored
            self._dirty = True
        elif event.event_id in self.state.open:
            self.state.open[event.event_id] = stored  # written with the next new or end
        self._submit(release)

    def count_crossing(
        self, stream: str, line: str, label: str, direction: str, release: Callable[[], None]
    ) -> LineTotal:
        total = self.state.lines.setdefault(stream, {}).setdefault(line, LineTotal(time.time()))
        per = total.counts.setdefault(label, {"in": 0, "out": 0})
        per[direction] = per.get(direction, 0) + 1
        self._dirty = True
        self._submit(release)
        return total

    def line_totals(self) -> dict[str, dict[str, LineTotal]]:
        return self.state.lines

    def reset_lines(self, stream: str, keep: set[str]) -> list[str]:
        """Forget the totals of a stream's lines not in `keep` (removed or redrawn)."""
        lines = self.state.lines.get(stream, {})
        gone = [name for name in lines if name not in keep]
        for name in gone:
            del lines[name]
            self._dirty = True
        if gone:
            self._submit(lambda: None)
        return gone

    async def settled(self) -> None:
        """Wait until everything submitted is written and released."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        await self.settled()
        self._pool.shutdown(wait=True)

    # --- writing -----------------------------------------------------------------------------

    def _submit(self, release: Callable[[], None]) -> None:
        self._queue.append(release)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="ledger")

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            if self._dirty:
                self._dirty = False
                data = msgspec.json.encode(self.state)
                try:
                    await loop.run_in_executor(self._pool, _write_atomic, self.path, data)
                    self.error = ""
                except OSError as exc:
                    # Publishing goes on: losing the crash promise beats losing the events.
                    if str(exc) != self.error:
                        log.error("event ledger not written", file=str(self.path),
                                  error=str(exc))
                    self.error = str(exc)
            for release in batch:
                try:
                    release()
                except Exception:
                    log.exception("event release failed")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        # The rename must reach the disk before the `new` it protects reaches the broker.
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
