"""The durable sender: the outbox over one connection, QoS 1, in order, pipelined.

Runs in the supervisor process, on the event loop, for the life of one connection.

Why not `await aiomqtt.Client.publish()` per message: it waits for the PUBACK, so one message at a
time caps throughput at one per round trip, and running it as a task per message (an Event, a
`wait_for` and a task each) cost more CPU than the rest of the message's path together at
hundreds of messages a second. Instead this hands messages to paho (aiomqtt's underlying client)
in outbox order and counts PUBACKs in paho's `on_publish` callback, with up to `WINDOW`
unacknowledged. This reaches into aiomqtt 2.x (`Client._client`, pinned `<3`); it is confined to
this module, and `tests/mqtt` fails loudly if that attribute changes.

A connection error, a refused publish or a PUBACK missing for longer than the publish timeout
ends the connection (raised from `send` or `watch`); the publisher then rewinds the outbox, so
everything unacknowledged is sent again, in order, on the next connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog

from edged.mqtt.outbox import Entry, Outbox

log = structlog.get_logger(__name__)

# Unacknowledged QoS 1 messages on the wire at once (paho's in-flight limit is set to match).
WINDOW = 64


class PublishTimeout(aiomqtt.MqttError):
    pass


class DurableSender:
    def __init__(
        self, client: aiomqtt.Client, outbox: Outbox, timeout: float, linger: float = 0.0
    ) -> None:
        self._linger = linger
        self._paho: paho.Client = client._client  # aiomqtt 2.x internals, see module docstring
        self._outbox = outbox
        self._timeout = timeout
        self._pending: dict[int, tuple[Entry, float]] = {}  # mid -> (entry, sent at), in order
        self._space = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    async def send(self) -> None:
        chained = self._paho.on_publish
        self._paho.on_publish = self._make_hook(chained)
        try:
            while True:
                room = WINDOW - len(self._pending)
                if room <= 0:
                    self._space.clear()
                    await self._space.wait()
                    continue
                batch = await self._outbox.take(room)
                if not self._paho.is_connected():
                    # Lost while we waited (the reader task reports why); the batch stays in flight
                    # and is rewound with the rest. Publishing now would only make aiomqtt register
                    # a writer on a closed socket.
                    raise aiomqtt.MqttError("connection lost")
                now = self._loop.time()
                for entry in batch:
                    info = self._paho.publish(entry.topic, entry.payload, 1)
                    if info.rc != paho.MQTT_ERR_SUCCESS:
                        raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
                    self._pending[info.mid] = (entry, now)
                if len(batch) < room and self._linger > 0:
                    # Not a backlog: let a few more messages gather, so that one socket wake-up
                    # writes them all and their PUBACKs come back together.
                    await asyncio.sleep(self._linger)
        finally:
            self._paho.on_publish = chained

    async def watch(self) -> None:
        """End the connection when the oldest unacknowledged message is older than the timeout
        (a frozen broker or a silent partition; the keepalive notices later)."""
        while True:
            await asyncio.sleep(min(1.0, self._timeout / 4))
            if self._pending:
                _, sent = next(iter(self._pending.values()))
                if self._loop.time() - sent > self._timeout:
                    raise PublishTimeout(f"no PUBACK within {self._timeout} s")

    def _make_hook(self, chained: Any) -> Any:
        def on_publish(
            client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any
        ) -> None:
            if chained is not None:
                chained(client, userdata, mid, reason, props)  # aiomqtt's own (state publishes)
            item = self._pending.pop(mid, None)
            if item is None:
                return
            entry = item[0]
            if getattr(reason, "is_failure", False):
                # The broker refuses this message (e.g. an ACL on the topic, v5 only): sending it
                # again cannot help and would block everything behind it. Drop and count it.
                log.error("mqtt_publish_rejected", topic=entry.topic, reason=str(reason))
                self._outbox.ack(entry, rejected=True)
            else:
                self._outbox.ack(entry)
            self._space.set()

        return on_publish
