"""The durable sender: the outbox over one connection, QoS 1, in order, pipelined.

Runs in the supervisor process, on the event loop, for the life of one `Connection`.

Why not one `await publish_acked()` per message: that waits for the PUBACK, so one message at a
time caps throughput at one per round trip. Instead up to `WINDOW` messages are unacknowledged at
once, published in outbox order with paho's public `publish()` (QoS 1) and acknowledged through
its `on_publish` callback, which carries the PUBACK's reason code.

When nothing older is waiting (the usual case while connected), the outbox hands a new message
straight to `write_now`, so a detection is written from the supervisor's pipe callback without
waking the sender's task; a backlog, a full window or `linger_ms` go through the task, in order,
a whole batch (up to the free window) per loop iteration.

A connection error, a refused publish or a PUBACK missing for longer than the publish timeout
ends the connection (raised from `send` or `watch`); the publisher then rewinds the outbox, so
everything unacknowledged is sent again, in order, on the next connection.
"""

from __future__ import annotations

import asyncio

import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edged.mqtt.client import REFUSED, Connection, ConnectionLost
from edged.mqtt.outbox import Entry, Outbox

log = structlog.get_logger(__name__)

# Unacknowledged QoS 1 messages on the wire at once.
WINDOW = 64


class PublishTimeout(ConnectionLost):
    pass


class DurableSender:
    def __init__(
        self, conn: Connection, outbox: Outbox, timeout: float, linger: float = 0.0
    ) -> None:
        self._conn = conn
        self._linger = linger
        self._outbox = outbox
        self._timeout = timeout
        self._pending: dict[int, tuple[Entry, float]] = {}  # mid -> (entry, sent at), in order
        self._space = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    async def send(self) -> None:
        if self._linger == 0:
            self._outbox.direct = self.write_now
        try:
            while True:
                room = WINDOW - len(self._pending)
                if room <= 0:
                    self._space.clear()
                    await self._space.wait()
                    continue
                batch = await self._outbox.take(room)
                # Raises ConnectionLost when the connection went while we waited (the batch
                # stays in flight and is rewound with the rest).
                now = self._loop.time()
                for entry in batch:
                    self._publish(entry, now)
                if len(batch) < room and self._linger > 0:
                    # Not a backlog: let a few more messages gather, so that their PUBACKs come
                    # back together and one wake-up handles them.
                    await asyncio.sleep(self._linger)
        finally:
            self._outbox.direct = None

    async def watch(self) -> None:
        """End the connection when the oldest unacknowledged message is older than the timeout
        (a frozen broker or a silent partition; the keepalive notices later)."""
        while True:
            await asyncio.sleep(min(1.0, self._timeout / 4))
            if self._pending:
                _, sent = next(iter(self._pending.values()))
                if self._loop.time() - sent > self._timeout:
                    raise PublishTimeout(f"no PUBACK within {self._timeout:g} s")

    def write_now(self, entry: Entry) -> bool:
        """The outbox's direct path: one message published as it is put, from the caller's stack
        (the supervisor's pipe callback), when nothing older is waiting. False: not now (window
        full or connection gone); the outbox queues it for `send`."""
        if len(self._pending) >= WINDOW:
            return False
        try:
            self._publish(entry, self._loop.time())
        except ConnectionLost:
            return False
        return True

    def _publish(self, entry: Entry, now: float) -> None:
        mid = self._conn.publish(entry.topic, entry.payload, False, self._acked)
        self._pending[mid] = (entry, now)

    def _acked(self, mid: int, reason: int) -> None:
        item = self._pending.pop(mid, None)
        if item is None:
            return
        entry = item[0]
        if reason >= REFUSED:
            # The broker refuses this message (e.g. an ACL on the topic, v5 only): sending it
            # again cannot help and would block everything behind it. Drop and count it.
            why = ReasonCode(PacketTypes.PUBACK, identifier=reason)
            log.error("mqtt_publish_rejected", topic=entry.topic, reason=str(why))
            self._outbox.ack(entry, rejected=True)
        else:
            self._outbox.ack(entry)
        self._space.set()
