"""The durable sender's own PUBLISH packing and PUBACK handling, against paho and a real broker.

The sender packs QoS 1 PUBLISH packets itself and takes its PUBACKs ahead of paho (see the
module's docstring for why). These tests pin down what that relies on: byte-for-byte the same
packets as paho's, the paho and aiomqtt internals it reaches into, and a refused message (MQTT 5
negative PUBACK from a broker ACL) counted and dropped while everything else is delivered.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import socket
import time
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest

from edged.mqtt import Publisher
from edged.mqtt.sender import publish_packet, remaining_length, topic_field
from tests.mqtt.support import configs, result, running, subscribed, until
from tests.support.broker import Broker


def paho_queued(protocol: int, topic: str, payload: bytes, mid: int) -> dict[str, object]:
    """What paho itself queues for the same QoS 1 publish (it writes nothing: the write callback
    that would make it write is a no-op)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=protocol)
    client.on_socket_register_write = lambda *_: None
    ours, theirs = socket.socketpair()
    with ours, theirs:
        client._sock = ours
        rc = client._send_publish(mid, topic.encode(), payload, qos=1, retain=False, dup=False)
        assert rc == paho.MQTT_ERR_SUCCESS
        client._sock = None
    return dict(client._out_packet[-1])


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311], ids=["v5", "v3.1.1"])
@pytest.mark.parametrize("size", [0, 1, 100, 127, 128, 16_383, 16_384, 2_097_152])
def test_packets_are_the_ones_paho_would_send(protocol: int, size: int) -> None:
    topic = "edged/edge/cam1/detections"
    payload = bytes(i % 251 for i in range(size))
    for mid in (1, 255, 256, 65_535):
        ours = publish_packet(topic_field(topic), payload, mid, protocol == paho.MQTTv5)
        assert ours == paho_queued(protocol, topic, payload, mid)["packet"]


def test_remaining_length_encoding() -> None:
    # The examples of the MQTT specification, 1.5.5 (both edges of each byte count).
    assert remaining_length(0) == b"\x00"
    assert remaining_length(127) == b"\x7f"
    assert remaining_length(128) == b"\x80\x01"
    assert remaining_length(16_383) == b"\xff\x7f"
    assert remaining_length(16_384) == b"\x80\x80\x01"
    assert remaining_length(268_435_455) == b"\xff\xff\xff\x7f"


def test_the_paho_and_aiomqtt_internals_it_uses_are_there() -> None:
    """If this fails after an upgrade, edged/mqtt/sender.py needs a look, not a pin bump."""

    async def make() -> paho.Client:
        return aiomqtt.Client("127.0.0.1")._client

    client = asyncio.run(make())
    assert isinstance(client, paho.Client)
    assert isinstance(client._out_packet, collections.deque)
    first = client._mid_generate()
    assert client._mid_generate() == first + 1
    assert isinstance(client._in_packet["packet"], bytearray)
    assert client._registered_write is False
    assert list(inspect.signature(client._handle_pubackcomp).parameters) == ["cmd"]
    # The sender queues its buffer in the shape paho's own queue entries have.
    queued = paho_queued(paho.MQTTv5, "t", b"x", 1)
    assert set(queued) == {"command", "mid", "qos", "pos", "to_process", "packet", "info"}
    assert queued["command"] == paho.PUBLISH and queued["qos"] == 1 and queued["pos"] == 0


def test_a_refused_message_is_counted_and_the_rest_delivered(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite #\ntopic deny edged/edge/blocked/#\n")
    broker = Broker(tmp_path, extra_conf=[f"acl_file {acl}"])
    broker.start()

    async def main() -> None:
        async with (
            subscribed(broker.port, "edged/edge/+/detections") as sub,
            running(Publisher(*configs(broker.url), tmp_path / "state")) as pub,
        ):
            await until(lambda: pub.connected, 10, "connected")
            for i in range(5):
                pub.publish_detections("open", result("open", i))
                pub.publish_detections("blocked", result("blocked", i))
            await until(lambda: pub.stats()["rejected"] == 5, 30, "5 refusals counted")
            await sub.wait_for(lambda _: len(sub.detections("open")) >= 5, 30, "5 delivered")
            assert sorted({d["frame"] for d in sub.detections("open")}) == list(range(5))
            assert sub.detections("blocked") == []
            stats = pub.stats()
            assert stats["published"] == 5 and stats["outbox_depth"] == 0

    try:
        asyncio.run(main())
    finally:
        broker.stop()


def test_an_idle_connection_does_not_spin_after_mixed_writes(
    broker: Broker, tmp_path: Path
) -> None:
    """Retained state (paho's own publish, whose socket writer aiomqtt registers a loop iteration
    later) and detections (written by the sender at once) in the same iteration: once everything
    is acknowledged, the event loop must go quiet, not keep a writable callback firing."""

    async def main() -> None:
        async with running(Publisher(*configs(broker.url), tmp_path / "state")) as pub:
            await until(lambda: pub.connected, 10, "connected")
            for i in range(200):
                pub.set_state("health", {"n": i})
                for _ in range(i % 4):  # the state publish is a few loop iterations away
                    await asyncio.sleep(0)
                pub.publish_detections("cam1", result("cam1", i))
                await asyncio.sleep(0.002)
            await until(lambda: pub.stats()["published"] == 200, 10, "all acknowledged")
            before = time.thread_time()
            await asyncio.sleep(1.0)
            busy = time.thread_time() - before
            # A spinning loop burns the whole second; an idle one a few milliseconds.
            assert busy < 0.3, f"the event loop used {busy:.2f} s of CPU in 1 s of idling"

    asyncio.run(main())
