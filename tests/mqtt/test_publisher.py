"""The Publisher against a real mosquitto: availability, detections, state, reconnect, stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edged.mqtt import Publisher
from tests.mqtt.support import configs, result, subscribed, until
from tests.support.broker import Broker


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
