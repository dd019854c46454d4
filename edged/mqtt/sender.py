"""The durable sender: the outbox over one connection, QoS 1, in order, pipelined.

Runs in the supervisor process, on the event loop, for the life of one connection.

Why not `await aiomqtt.Client.publish()` per message: it waits for the PUBACK, so one message at a
time caps throughput at one per round trip, and a task per message cost more CPU than the rest of
the message's path. Why not paho's own `publish()` and `on_publish` either: profiled at 1 000
messages/s, paho turning each PUBACK into ReasonCode and Properties objects and running the
callbacks of paho and aiomqtt took 35 % of the supervisor's time, and `publish()` another 8 %,
more than decoding, encoding and queueing the detection together. So this module does the two
things the hot path needs itself, and leaves everything else to paho:

- it packs its QoS 1 PUBLISH packets (a few lines of the MQTT wire format, `publish_packet`),
  with packet ids drawn from paho's own counter so they never collide with paho's, and queues a
  whole batch as one buffer on paho's output queue, then asks paho to write it. paho still owns
  the socket: partial writes, TLS and the order against its own packets are its business;
- it recognises the PUBACKs for its own packet ids before paho decodes them (a hook in front of
  paho's PUBACK handler); any other PUBACK, and every other packet, goes to paho as before.

When nothing older is waiting (the usual case while connected), the outbox hands a new message
straight to `_write_now`, so a detection is written from the supervisor's pipe callback without
waking the sender's task; a backlog, a full window or `linger_ms` go through the task, in order.
Up to `WINDOW` messages are unacknowledged at once. This reaches into aiomqtt 2.x and paho-mqtt
2.x internals (`Client._client`; paho's `_mid_generate`, `_out_packet`, `_in_packet`,
`_handle_pubackcomp`, `_registered_write`); both are pinned below 3, it is all in this module, and
`tests/mqtt/test_sender.py` fails loudly if any of them changes.

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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edged.mqtt.outbox import Entry, Outbox

log = structlog.get_logger(__name__)

# Unacknowledged QoS 1 messages on the wire at once.
WINDOW = 64

_PUBLISH_QOS1 = 0x32  # packet type 3 (PUBLISH) in the high nibble, QoS 1 in bits 1-2
_NO_PROPERTIES = b"\x00"  # MQTT 5: a property length of zero


class PublishTimeout(aiomqtt.MqttError):
    pass


def remaining_length(n: int) -> bytes:
    """MQTT's variable byte integer: 7 bits a byte, low first, high bit = more follows."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def topic_field(topic: str) -> bytes:
    """The topic as PUBLISH carries it: a two-byte length, then UTF-8."""
    raw = topic.encode()
    return len(raw).to_bytes(2, "big") + raw


def publish_packet(topic: bytes, payload: bytes, mid: int, v5: bool) -> bytes:
    """One QoS 1 PUBLISH (not retained, not a duplicate); `topic` from `topic_field`."""
    props = _NO_PROPERTIES if v5 else b""
    size = len(topic) + 2 + len(props) + len(payload)
    return b"".join(
        (bytes((_PUBLISH_QOS1,)), remaining_length(size), topic, mid.to_bytes(2, "big"), props,
         payload)
    )


class DurableSender:
    def __init__(
        self, client: aiomqtt.Client, outbox: Outbox, timeout: float, linger: float = 0.0
    ) -> None:
        self._linger = linger
        self._paho: paho.Client = client._client  # aiomqtt 2.x internals, see module docstring
        self._v5 = self._paho.protocol == paho.MQTTv5
        self._outbox = outbox
        self._timeout = timeout
        self._pending: dict[int, tuple[Entry, float]] = {}  # mid -> (entry, sent at), in order
        self._topics: dict[str, bytes] = {}  # topic -> its packed field (a handful of streams)
        self._space = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    async def send(self) -> None:
        internals: dict[str, Any] = vars(self._paho)
        paho_puback = self._paho._handle_pubackcomp
        internals["_handle_pubackcomp"] = self._make_puback_hook(paho_puback)
        if self._linger == 0:
            self._outbox.direct = self._write_now
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
                    # and is rewound with the rest.
                    raise aiomqtt.MqttError("connection lost")
                rc = self._write(batch)
                if rc != paho.MQTT_ERR_SUCCESS:
                    raise aiomqtt.MqttCodeError(rc, "Could not publish message")
                if len(batch) < room and self._linger > 0:
                    # Not a backlog: let a few more messages gather, so that one socket wake-up
                    # writes them all and their PUBACKs come back together.
                    await asyncio.sleep(self._linger)
        finally:
            self._outbox.direct = None
            internals.pop("_handle_pubackcomp", None)

    async def watch(self) -> None:
        """End the connection when the oldest unacknowledged message is older than the timeout
        (a frozen broker or a silent partition; the keepalive notices later)."""
        while True:
            await asyncio.sleep(min(1.0, self._timeout / 4))
            if self._pending:
                _, sent = next(iter(self._pending.values()))
                if self._loop.time() - sent > self._timeout:
                    raise PublishTimeout(f"no PUBACK within {self._timeout} s")

    def _write_now(self, entry: Entry) -> bool:
        """The outbox's direct path: one message written as it is put, from the caller's stack
        (the supervisor's pipe callback), when nothing older is waiting. A write that fails
        leaves the message in flight: paho reports the lost connection (aiomqtt ends the
        session) and the outbox sends it again after the reconnect."""
        if len(self._pending) >= WINDOW or not self._paho.is_connected():
            return False
        rc = self._write([entry])
        if rc != paho.MQTT_ERR_SUCCESS:
            log.debug("mqtt_write_failed", rc=rc)
        return True

    def _write(self, batch: list[Entry]) -> int:
        now = self._loop.time()
        packets = []
        for entry in batch:
            topic = self._topics.get(entry.topic)
            if topic is None:
                topic = self._topics[entry.topic] = topic_field(entry.topic)
            mid = self._paho._mid_generate()
            packets.append(publish_packet(topic, entry.payload, mid, self._v5))
            self._pending[mid] = (entry, now)
        buffer = b"".join(packets)
        # One entry on paho's output queue, in the shape paho's `_packet_queue` makes: written
        # after whatever paho has queued before it, partial writes resumed by paho.
        self._paho._out_packet.append(
            {"command": paho.PUBLISH, "mid": 0, "qos": 1, "pos": 0,
             "to_process": len(buffer), "packet": buffer, "info": None}
        )
        if self._paho._registered_write:
            # A socket writer is registered, or about to be: aiomqtt adds it with
            # call_soon_threadsafe, a loop iteration after paho asked. It writes our buffer
            # too. Writing here instead would empty the queue and make paho remove the writer
            # before aiomqtt has added it; the writer added after that would never be removed
            # and would fire on every iteration (a spinning loop, seen in the bench).
            return paho.MQTT_ERR_SUCCESS
        # No writer: write now, in this loop iteration. What the socket does not take, paho
        # registers a writer for.
        return int(self._paho.loop_write())

    def _make_puback_hook(self, paho_puback: Any) -> Any:
        def on_puback_or_pubcomp(cmd: str) -> Any:
            if cmd == "PUBACK":
                packet = self._paho._in_packet["packet"]
                item = self._pending.pop(int.from_bytes(packet[:2], "big"), None)
                if item is not None:
                    self._acked(item[0], packet[2] if len(packet) > 2 else 0)
                    return paho.MQTT_ERR_SUCCESS
            return paho_puback(cmd)  # not ours: paho's own publishes, PUBCOMP

        return on_puback_or_pubcomp

    def _acked(self, entry: Entry, reason: int) -> None:
        # MQTT 5 adds a reason code when it is not 0 (success); 0x80 and above refuse the message.
        if reason >= 0x80:
            # The broker refuses this message (e.g. an ACL on the topic, v5 only): sending it
            # again cannot help and would block everything behind it. Drop and count it.
            why = ReasonCode(PacketTypes.PUBACK, identifier=reason)
            log.error("mqtt_publish_rejected", topic=entry.topic, reason=str(why))
            self._outbox.ack(entry, rejected=True)
        else:
            self._outbox.ack(entry)
        self._space.set()
