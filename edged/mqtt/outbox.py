"""The outbox: durable messages in order, in memory while the broker keeps up, on disk otherwise.

Runs in the supervisor process. Bookkeeping happens on the event loop; every SQLite call runs on one
dedicated thread (`edged-outbox`), so the loop never waits for the disk and disk operations run
strictly in the order they were submitted (a read sees every earlier write).

Order: every message gets an outbox id (`oid`, increasing) when it is queued; it is sent in `oid`
order. Messages live in exactly one of: `_mem` (queued, not on disk), `_inflight` (handed to the
connection, not yet acknowledged), or the disk store. All disk rows are older than everything in
`_mem`, because only a prefix of `_mem` is ever spilled; the sender drains the disk before memory.

When the connection is up nothing touches the disk unless memory passes its bound. When it goes
down, everything not acknowledged (in flight and queued) is written to disk at once, and every new
message follows within one loop iteration: a SIGKILL during an outage loses at most the messages of
the last few milliseconds. After a restart the disk rows are sent first.

Crash: an acknowledged message whose disk row was not yet deleted is sent again after a restart,
which is why every payload carries a unique `id` (at-least-once, subscribers de-duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from edged.mqtt.store import Depth, Row, Store

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A restart continues a stream's seq from its reservation; reserving blocks keeps seq writes rare.
SEQ_BLOCK = 1000
# Acknowledged disk rows are deleted in batches at most this often (seconds).
DELETE_DELAY = 0.2
# Without a working disk store, memory holds this many times `memory_messages` before dropping.
NO_DISK_FACTOR = 10


@dataclass(slots=True)
class Entry:
    oid: int
    topic: str
    payload: bytes
    on_disk: bool = False


class Outbox:
    """Bounded, ordered, crash-surviving queue of QoS 1 messages. Use from the event loop only."""

    def __init__(self, state_dir: Path, memory_messages: int, disk_bytes: int) -> None:
        self.memory_messages = memory_messages
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="edged-outbox")
        self._store: Store | None = None
        self.disk_error = ""
        seqs: dict[str, int] = {}
        try:
            # Synchronous once, at construction: seq numbers must be known before the first
            # message. The daemon constructs its publisher before the event loop starts
            # (`edged.cli`), so this never runs on the loop there.
            self._store = Store(state_dir, disk_bytes)
            seqs = self._store.load_seqs()
            self._next_oid = self._store.next_oid()
            self._disk = self._store.depth()
            # Reserve ahead now, so a crash before the first reservation write cannot reuse seqs.
            self._store.save_seqs({s: n + SEQ_BLOCK for s, n in seqs.items()})
        except (OSError, sqlite3.Error) as exc:
            self._no_disk(exc)
            self._next_oid = 1
            self._disk = Depth(0, 0, 0)
        self._seq_next = dict(seqs)
        self._seq_durable = {s: n + SEQ_BLOCK for s, n in seqs.items()}
        self._seq_requested = dict(self._seq_durable)

        self._mem: deque[Entry] = deque()
        self._inflight: dict[int, Entry] = {}
        self._inflight_disk = 0  # how many of `_inflight` came from disk
        self._online = False
        self._cursor = 0  # highest disk oid handed out since the last rewind
        self._disk_dirty = self._disk.rows > 0  # disk may hold rows above the cursor
        self._spill_gen = 0
        self._rewind_gen = 0
        self._to_spill: list[Entry] = []
        self._spill_scheduled = False
        self._to_delete: list[int] = []
        self._delete_handle: asyncio.TimerHandle | None = None
        self._ready = asyncio.Event()
        # The connection's sender while it can write a message the moment it is put (nothing
        # older waiting); it says False when it cannot (window full, connection gone).
        self.direct: Callable[[Entry], bool] | None = None
        self._pending_io: set[asyncio.Future[Any]] = set()
        # Streams that handed out a seq not yet covered by a reservation on disk: while any
        # is, nothing queued is sent (see `next_seq`).
        self._seq_waiting: set[str] = set()
        self.dropped_memory = 0
        self.acked = 0
        self.rejected = 0
        self.peak = self._disk.rows

    # --- producer side ----------------------------------------------------------------------

    def next_seq(self, stream: str) -> int:
        n = self._seq_next.get(stream, 1)
        self._seq_next[stream] = n + 1
        if self._store is None:
            return n
        if n >= self._seq_durable.get(stream, 1):
            # Rare (first message of a never-seen stream, or the disk thread far behind): an
            # unreserved seq could repeat after a crash, so nothing queued from here on is sent
            # until a reservation covering it is on disk. The loop does not wait for that, the
            # sender does (`take`, `put`'s direct path).
            self._seq_waiting.add(stream)
        if n + SEQ_BLOCK // 2 >= self._seq_requested.get(stream, 1):
            # Reserve ahead, so the durable mark normally stays far in front of the seqs used.
            target = n + SEQ_BLOCK
            self._seq_requested[stream] = target
            self._submit(
                self._store.save_seqs,
                {stream: target},
                on_done=lambda _: self._seq_reserved(stream, target),
                on_error=lambda exc: self._seq_reserve_failed(stream, exc),
            )
        return n

    def _seq_reserved(self, stream: str, upto: int) -> None:
        durable = self._seq_durable[stream] = max(self._seq_durable.get(stream, 1), upto)
        if stream in self._seq_waiting and self._seq_next.get(stream, 1) <= durable:
            self._seq_waiting.discard(stream)
            self._ready.set()

    def _seq_reserve_failed(self, stream: str, exc: BaseException) -> None:
        # The disk is failing: holding messages back would not make their seqs safer, and
        # health shows the disk error. Send them.
        self._no_disk(exc, keep_store=True)
        if stream in self._seq_waiting:
            self._seq_waiting.discard(stream)
            self._ready.set()

    def reserve(self, streams: list[str]) -> None:
        """Reserve seqs for streams ahead of their first message (so it never waits)."""
        if self._store is None:
            return
        todo = {s: SEQ_BLOCK + 1 for s in streams if s not in self._seq_requested}
        if not todo:
            return
        self._seq_requested.update(todo)

        def done(_: object) -> None:
            for s, n in todo.items():
                self._seq_reserved(s, n)

        self._submit(self._store.save_seqs, todo, on_done=done)

    def put(self, topic: str, payload: bytes) -> None:
        """Queue one message (sync, never blocks)."""
        entry = Entry(self._next_oid, topic, payload)
        self._next_oid += 1
        if (
            self.direct is not None
            and self._online
            and not self._seq_waiting
            and not self._mem
            and not self._to_spill
            and not self._disk_dirty
        ):
            # Nothing older is waiting, so writing it now keeps the order, and saves waking
            # the sender's task for every message.
            self._inflight[entry.oid] = entry
            if self.direct(entry):
                self.peak = max(self.peak, self.depth)
                return
            del self._inflight[entry.oid]
        self._mem.append(entry)
        self._ready.set()
        if len(self._mem) > self.memory_messages * NO_DISK_FACTOR:
            # Only reachable without a working disk: the oldest go, counted.
            self._mem.popleft()
            self.dropped_memory += 1
        if self._store is not None and (not self._online or len(self._mem) > self.memory_messages):
            self._schedule_spill()
        depth = self.depth
        self.peak = max(self.peak, depth)

    # --- connection side --------------------------------------------------------------------

    async def take(self, limit: int) -> list[Entry]:
        """The next messages in order (waits until there are some); they become in flight."""
        while True:
            if self._disk_dirty and self._store is not None:
                gen, rewind = self._spill_gen, self._rewind_gen
                try:
                    rows = await self._run(self._store.read, self._cursor, limit)
                except sqlite3.Error as exc:
                    # Unreadable rows stay where they are; the next reconnect tries again.
                    self._no_disk(exc, keep_store=True)
                    self._disk_dirty = False
                    continue
                if rewind != self._rewind_gen:
                    continue  # the connection went down meanwhile: start again from the oldest
                if rows:
                    self._cursor = rows[-1].oid
                    entries = [Entry(r.oid, r.topic, r.payload, on_disk=True) for r in rows]
                    for e in entries:
                        self._inflight[e.oid] = e
                    self._inflight_disk += len(entries)
                    return entries
                if gen == self._spill_gen:
                    self._disk_dirty = False
                continue
            if self._mem and not self._seq_waiting:
                n = min(limit, len(self._mem))
                entries = [self._mem.popleft() for _ in range(n)]
                for e in entries:
                    self._inflight[e.oid] = e
                return entries
            self._ready.clear()
            await self._ready.wait()

    def ack(self, entry: Entry, *, rejected: bool = False) -> None:
        """The broker has it (or refused it for good: `rejected`, counted, never retried)."""
        if self._inflight.pop(entry.oid, None) is None:
            return
        if rejected:
            self.rejected += 1
        else:
            self.acked += 1
        if entry.on_disk:
            self._inflight_disk -= 1
            self._to_delete.append(entry.oid)
            if self._delete_handle is None:
                loop = asyncio.get_running_loop()
                self._delete_handle = loop.call_later(DELETE_DELAY, self._flush_deletes)

    def set_online(self) -> None:
        self._online = True
        self._ready.set()

    def set_offline(self) -> None:
        """The connection is gone: unacknowledged messages go back in order (to disk if any)."""
        self._online = False
        self._rewind_gen += 1
        back = sorted((e for e in self._inflight.values() if not e.on_disk), key=lambda e: e.oid)
        self._inflight.clear()
        self._inflight_disk = 0
        self._flush_deletes()  # before any re-read, so acknowledged rows are not sent again
        if self._store is not None:
            self._to_spill.extend(back)
            self._to_spill.extend(self._mem)
            self._mem.clear()
            self._flush_spill()
            self._cursor = 0
            self._disk_dirty = True
        else:
            self._mem.extendleft(reversed(back))
        self._ready.set()

    # --- figures ----------------------------------------------------------------------------

    @property
    def memory_depth(self) -> int:
        return len(self._mem) + len(self._to_spill) + len(self._inflight)

    @property
    def depth(self) -> int:
        """Messages not yet acknowledged, memory and disk (disk rows in flight counted once)."""
        return self.memory_depth - self._inflight_disk + self._disk.rows

    @property
    def disk(self) -> Depth:
        return self._disk

    @property
    def dropped(self) -> int:
        return self.dropped_memory + self._disk.dropped

    def empty(self) -> bool:
        return not self._mem and not self._inflight and not self._to_spill and not self._disk_dirty

    # --- shutdown ---------------------------------------------------------------------------

    async def settled(self) -> None:
        """Return once every disk write asked for so far (spills, deletes, seq reservations) is
        done: batched work is flushed now rather than when its timer fires."""
        if self._spill_scheduled:
            self._flush_spill()
        self._flush_deletes()
        while self._pending_io:
            # A finished write can ask for another (e.g. a spill's callback); wait for those too.
            await asyncio.gather(*list(self._pending_io), return_exceptions=True)

    async def close(self) -> None:
        """Persist everything unacknowledged and the exact seqs, then close the store."""
        if self._store is not None:
            self.set_offline()
            await self._run(self._store.save_seqs, dict(self._seq_next))
            await asyncio.gather(*self._pending_io, return_exceptions=True)
            with contextlib.suppress(sqlite3.Error):
                await self._run(self._store.close)
        if self._mem:
            log.warning(
                "mqtt_outbox_lost_on_close", messages=len(self._mem), reason=self.disk_error
            )
        # Every write was awaited above: the thread is idle and ends by itself.
        self._pool.shutdown(wait=False)

    # --- disk plumbing ----------------------------------------------------------------------

    def _schedule_spill(self) -> None:
        if not self._spill_scheduled:
            self._spill_scheduled = True
            # call_soon: one disk write per loop iteration, whatever arrived in it.
            asyncio.get_running_loop().call_soon(self._flush_spill)

    def _flush_spill(self) -> None:
        self._spill_scheduled = False
        if self._store is None:
            return
        if self._online:
            # Connected but behind: spill only the oldest part beyond the memory bound.
            excess = len(self._mem) - self.memory_messages
            self._to_spill.extend(self._mem.popleft() for _ in range(max(excess, 0)))
        else:
            self._to_spill.extend(self._mem)
            self._mem.clear()
        if not self._to_spill:
            return
        batch, self._to_spill = self._to_spill, []
        self._spill_gen += 1
        self._disk_dirty = True
        rows = [Row(e.oid, e.topic, e.payload) for e in batch]

        def failed(exc: BaseException) -> None:
            # Disk full or gone: keep them in memory (bounded) rather than lose them now.
            self._no_disk(exc, keep_store=True)
            self._mem.extendleft(reversed(batch))
            self._ready.set()

        def stored(_: Depth) -> None:
            self.disk_error = ""

        self._submit(self._store.append, rows, on_done=stored, on_error=failed)

    def _flush_deletes(self) -> None:
        if self._delete_handle is not None:
            self._delete_handle.cancel()
            self._delete_handle = None
        if self._to_delete and self._store is not None:
            oids, self._to_delete = self._to_delete, []
            self._submit(self._store.delete, oids)

    def _no_disk(self, exc: BaseException, *, keep_store: bool = False) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        if msg != self.disk_error:
            log.error("mqtt_outbox_disk_error", error=msg)
        self.disk_error = msg
        if not keep_store:
            self._store = None

    def _submit(
        self,
        fn: Callable[..., T],
        *args: object,
        on_done: Callable[[T], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> asyncio.Future[T]:
        fut: asyncio.Future[T] = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        self._pending_io.add(fut)

        def finished(f: asyncio.Future[T]) -> None:
            self._pending_io.discard(f)
            exc = f.exception()
            if exc is not None:
                if on_error is not None:
                    on_error(exc)
                else:
                    self._no_disk(exc, keep_store=True)
                return
            result = f.result()
            if isinstance(result, Depth):
                self._disk = result
            if on_done is not None:
                on_done(result)

        fut.add_done_callback(finished)
        return fut

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        result = await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        if isinstance(result, Depth):
            self._disk = result
        return result
