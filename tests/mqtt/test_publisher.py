"""The Publisher against a real mosquitto: availability, detections, state, reconnect, stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from edged.mqtt import Publisher
from tests.mqtt.support import configs, persistent_broker, result, running, subscribed, until
from tests.support.broker import Broker
from tests.support.mqtt import Subscriber
from tests.support.nats import NatsBroker


def test_detections_state_and_availability(broker: Broker, tmp_path: Path) -> None:
    echoed: list[str] = []

    async def main() -> None:
        async with subscribed(broker.port) as sub:
            pub = Publisher(
                *configs(broker.url), tmp_path / "state", echo=lambda t, p: echoed.append(t)
            )
            task = asyncio.create_task(pub.run())
            await until(lambda: pub.connected, 10, "connected")
            pub.set_state("health", {"fps": 5.0})
            pub.set_state("cam1/status", {"status": "online"})
            for i in range(200):
                pub.publish_detections("cam1", result("cam1", i))
            await sub.wait_for(lambda _: len(sub.detections()) == 200, 10, "200 detections")
            docs = sub.detections("cam1")
            assert [d["seq"] for d in docs] == list(range(1, 201))
            assert [d["frame"] for d in docs] == list(range(200))
            assert len({d["id"] for d in docs}) == 200
            await sub.wait_for(lambda _: bool(sub.on("edged/edge/health")), 5, "health")
            assert sub.on("edged/edge/status")[-1].payload == b"online"
            stats = pub.stats()
            assert stats["connected"] and stats["published"] == 200 and stats["dropped"] == 0
            await pub.stop()
            await task
            assert not pub.alive()
            await sub.wait_for(
                lambda _: sub.on("edged/edge/status")[-1].payload == b"offline", 5, "offline"
            )
        assert echoed.count("edged/edge/cam1/detections") == 200
        assert "edged/edge/health" in echoed

    asyncio.run(main())


def test_state_is_latest_value_wins_and_republished_on_reconnect(tmp_path: Path) -> None:
    broker = persistent_broker(tmp_path)
    broker.start()

    async def main() -> None:
        async with (
            subscribed(broker.port) as sub,
            running(Publisher(*configs(broker.url), tmp_path / "state")) as pub,
        ):
            await until(lambda: pub.connected, 10, "connected")
            pub.set_state("health", {"n": 0})
            await sub.wait_for(lambda _: bool(sub.on("edged/edge/health")), 5, "health")
            broker.stop()
            await until(lambda: not pub.connected, 10, "disconnected")
            mark = len(sub.messages)
            for n in (1, 2, 3):
                pub.set_state("health", {"n": n})  # not queued: only the last one matters
            broker.start()
            await until(lambda: pub.connected, 30, "reconnected")
            await sub.wait_for(
                lambda m: any(x.topic == "edged/edge/health" and not x.retain for x in m[mark:]),
                10,
                "health again",
            )
            await sub.wait_for(
                lambda m: (
                    [x.payload for x in m[mark:] if x.topic == "edged/edge/status"][-1:]
                    == [b"online"]
                ),
                10,
                "online again",
            )
            # Live deliveries only (the subscriber's resubscribe replays the retained value).
            after = [
                x.json()["n"]
                for x in sub.messages[mark:]
                if x.topic == "edged/edge/health" and not x.retain
            ]
            assert after == [3]

    try:
        asyncio.run(main())
    finally:
        broker.stop()


def test_mqtt_311_option(broker: Broker, tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            subscribed(broker.port) as sub,
            running(Publisher(*configs(broker.url, protocol="3.1.1"), tmp_path / "state")) as pub,
        ):
            for i in range(20):
                pub.publish_detections("cam1", result("cam1", i))
            await sub.wait_for(lambda _: len(sub.detections()) == 20, 10, "20 over v3.1.1")

    asyncio.run(main())


def test_reconfigure_renames_node_and_marks_old_tree_offline(
    broker: Broker, tmp_path: Path
) -> None:
    async def main() -> None:
        async with (
            subscribed(broker.port) as sub,
            running(Publisher(*configs(broker.url), tmp_path / "state")) as pub,
        ):
            await until(lambda: pub.connected, 10, "connected")
            pub.set_state("health", {"ok": True})
            pub.publish_detections("cam1", result("cam1", 0))
            await sub.wait_for(lambda _: len(sub.detections()) == 1, 10, "first detection")
            await pub.reconfigure(*configs(broker.url, node="yard"))
            pub.publish_detections("cam1", result("cam1", 1))
            await sub.wait_for(lambda _: bool(sub.on("edged/yard/cam1/detections")), 10, "renamed")
            await sub.wait_for(
                lambda _: sub.on("edged/edge/status")[-1].payload == b"offline",
                10,
                "old offline",
            )
            await sub.wait_for(lambda _: bool(sub.on("edged/yard/health")), 10, "state moved")
            assert sub.on("edged/yard/status")[-1].payload == b"online"
            # seq belongs to the stream, not the topic: it goes on.
            assert sub.on("edged/yard/cam1/detections")[0].json()["seq"] == 2
            assert pub.stats()["reconnects"] == 1

    asyncio.run(main())


def test_stop_without_broker_keeps_the_outbox(tmp_path: Path) -> None:
    dead = Broker(tmp_path)  # never started: nothing listens on its port

    async def main() -> None:
        pub = Publisher(*configs(dead.url), tmp_path / "state")
        task = asyncio.create_task(pub.run())
        for i in range(5):
            pub.publish_detections("cam1", result("cam1", i))
        # No broker to flush to: stop gives up after its flush timeout instead of waiting for
        # one (a deadline far past 0.5 s, so a busy box cannot fail it; a hang would).
        await asyncio.wait_for(pub.stop(flush_timeout=0.5), 30)
        await asyncio.wait_for(task, 30)
        again = Publisher(*configs(dead.url), tmp_path / "state")
        assert again.stats()["outbox_depth"] == 5
        await again.stop()

    asyncio.run(main())


def test_auto_protocol_falls_back_to_311_on_a_broker_without_mqtt5(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """nats-server's MQTT listener speaks 3.1.1 only and refuses an MQTT 5 CONNECT."""
    nats = NatsBroker(tmp_path)
    nats.start()
    sub = Subscriber(nats.port, ("edged/#",), protocol=paho.MQTTv311)

    async def main() -> None:
        strict = Publisher(*configs(nats.url, protocol="5"), tmp_path / "strict")
        async with running(strict):
            await until(lambda: strict.stats()["connect_failures"] >= 1, 20, "a refusal")
            assert "MQTT version" in strict.stats()["last_error"], strict.stats()
            assert not strict.connected
        # The default, protocol = "auto": MQTT 5 refused, 3.1.1 used, and the log says so.
        async with running(Publisher(*configs(nats.url), tmp_path / "state")) as pub:
            await asyncio.wait_for(pub.wait_connected(), 20)
            assert pub.stats()["protocol"] == "3.1.1"
            for i in range(20):
                pub.publish_detections("cam1", result("cam1", i))
            await until(lambda: pub.stats()["published"] == 20, 20, "20 acknowledged")

    try:
        asyncio.run(main())
        messages = sub.wait_for(
            lambda ms: sum(m.topic.endswith("/detections") for m in ms) == 20, 20, "20 received"
        )
        frames = [m.json()["frame"] for m in messages if m.topic.endswith("/detections")]
        assert frames == list(range(20))
    finally:
        sub.close()
        nats.stop()
    out = capsys.readouterr()
    assert "mqtt_protocol_fallback" in out.out + out.err
