"""The on-disk half of the outbox: one SQLite database in WAL mode in the state directory.

Runs in the supervisor process, but only ever on the outbox's single disk thread (see
`outbox.py`), so SQLite calls never block the event loop and run strictly in submission order.

Crash behaviour: every method commits before it returns. In WAL mode with `synchronous=NORMAL` a
committed transaction survives a crash of the process (SIGKILL, OOM kill); only a power cut may lose
the last transactions since the previous checkpoint. A database that cannot be opened or is
corrupt is moved aside (`*.corrupt-<time>`) and a fresh one created, so a broken file never stops
the daemon from starting.

Tables:
  outbox(id INTEGER PRIMARY KEY, topic TEXT, payload BLOB)  -- id is the outbox order
  seq(stream TEXT PRIMARY KEY, next INTEGER)                -- next seq a restart may hand out
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

FILENAME = "mqtt-outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, topic TEXT NOT NULL,
                                   payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seq (stream TEXT PRIMARY KEY, next INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Row:
    oid: int
    topic: str
    payload: bytes

    @property
    def size(self) -> int:
        return len(self.topic) + len(self.payload)


@dataclass(frozen=True)
class Depth:
    """What is on disk now, and how many messages the byte bound has dropped so far."""

    rows: int
    bytes: int
    dropped: int


class Store:
    """Synchronous SQLite access; one instance, used from one thread at a time."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.path = directory / FILENAME
        self.max_bytes = max_bytes
        self.dropped = 0
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{FILENAME}.corrupt-{int(time.time())}")
            log.error(
                "mqtt_outbox_corrupt", path=str(self.path), moved_to=str(aside), error=str(exc)
            )
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._db = self._open()
        self.rows, self.bytes = self._count()

    def _count(self) -> tuple[int, int]:
        rows, size = self._db.execute(
            "SELECT count(*), coalesce(sum(length(topic) + length(payload)), 0) FROM outbox"
        ).fetchone()
        return int(rows), int(size)

    def _open(self) -> sqlite3.Connection:
        # check_same_thread=False: opened on the caller's thread, then used on the disk thread.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: commits survive a process crash; no fsync per transaction.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute("PRAGMA quick_check").fetchone()
        return db

    def depth(self) -> Depth:
        return Depth(self.rows, self.bytes, self.dropped)

    def next_oid(self) -> int:
        (top,) = self._db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
        return int(top) + 1

    def load_seqs(self) -> dict[str, int]:
        return {s: int(n) for s, n in self._db.execute("SELECT stream, next FROM seq")}

    def save_seqs(self, seqs: dict[str, int]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO seq(stream, next) VALUES(?, ?) "
                "ON CONFLICT(stream) DO UPDATE SET next = excluded.next",
                seqs.items(),
            )

    def append(self, rows: list[Row]) -> Depth:
        """Insert rows (in any order: `id` is the order), then drop the oldest beyond the bound."""
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.executemany(
                "INSERT OR IGNORE INTO outbox(id, topic, payload) VALUES(?, ?, ?)",
                [(r.oid, r.topic, r.payload) for r in rows],
            )
            if cur.rowcount == len(rows):
                self.rows += len(rows)
                self.bytes += sum(r.size for r in rows)
            else:
                # An id was already stored (should not happen): recount rather than guess.
                self.rows, self.bytes = self._count()
            while self.bytes > self.max_bytes and self.rows > 0:
                # Oldest first, in chunks, until the store fits its bound again.
                sizes = self._db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 256) "
                    "RETURNING length(topic) + length(payload)"
                ).fetchall()
                if not sizes:
                    break
                self._forget(sizes)
                self.dropped += len(sizes)
        return self.depth()

    def read(self, after_oid: int, limit: int) -> list[Row]:
        return [
            Row(int(i), t, bytes(p))
            for i, t, p in self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_oid, limit),
            )
        ]

    def delete(self, oids: list[int]) -> Depth:
        with self._db:
            self._db.execute("BEGIN")
            for i in range(0, len(oids), 500):
                chunk = oids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sizes = self._db.execute(
                    f"DELETE FROM outbox WHERE id IN ({marks}) "
                    "RETURNING length(topic) + length(payload)",
                    chunk,
                ).fetchall()
                self._forget(sizes)
        return self.depth()

    def _forget(self, sizes: list[tuple[int]]) -> None:
        self.rows -= len(sizes)
        self.bytes -= sum(s for (s,) in sizes)

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()
