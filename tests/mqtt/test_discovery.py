"""Home Assistant discovery: retained configs, republished on `homeassistant/status` = online,
count topics that follow the detections, entities deleted when their stream goes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt

from edged.config.model import StreamConfig, TrackingConfig
from edged.mqtt import Publisher
from tests.mqtt.support import Received, configs, result, subscribed, until
from tests.support.broker import Broker

# Per-frame counts (tracking off): a tracked stream's counts come from its tracker instead
# (edged.supervisor.events, tests/supervisor/test_events.py).
CAM = StreamConfig(
    name="cam1", source="cam1.mp4", worker="cpu", tracking=TrackingConfig(enabled=False)
)
LABELS = {"cam1": ["person", "traffic light"]}
CONFIGS = {
    "homeassistant/sensor/edged_edge/edged_edge_cam1_person_count/config",
    "homeassistant/binary_sensor/edged_edge/edged_edge_cam1_person_presence/config",
    "homeassistant/sensor/edged_edge/edged_edge_cam1_traffic_light_count/config",
    "homeassistant/binary_sensor/edged_edge/edged_edge_cam1_traffic_light_presence/config",
}
PERSONS = "edged/edge/cam1/count/person"


def configs_seen(messages: list[Received], *, retained: bool | None = None) -> list[str]:
    return [
        m.topic
        for m in messages
        if m.topic.endswith("/config")
        and m.topic.startswith("homeassistant/")
        and m.payload
        and (retained is None or m.retain == retained)
    ]


def test_discovery_retained_republished_and_removed(broker: Broker, tmp_path: Path) -> None:
    async def main() -> None:
        pub = Publisher(*configs(broker.url, ha=True), tmp_path / "state")
        pub.set_streams([CAM], LABELS)
        task = asyncio.create_task(pub.run())
        await until(lambda: pub.connected, 10, "connected")
        # Connected comes before the first publish: wait until the configs are out (live or
        # retained, whichever this subscriber happened to be in time for).
        async with subscribed(broker.port) as early:
            await early.wait_for(lambda m: set(configs_seen(m)) == CONFIGS, 10, "configs out")

        # A subscriber that comes later still gets every config: they are retained.
        async with subscribed(broker.port) as sub:
            await sub.wait_for(
                lambda m: set(configs_seen(m, retained=True)) == CONFIGS, 10, "retained configs"
            )
            doc = next(m for m in sub.messages if m.topic.endswith("person_count/config")).json()
            assert doc["unique_id"] == "edged_edge_cam1_person_count"
            assert doc["state_topic"] == PERSONS
            assert doc["availability"][0]["topic"] == "edged/edge/status"
            assert doc["device"]["identifiers"] == ["edged_edge"]
            await sub.wait_for(lambda _: bool(sub.on(PERSONS)), 10, "initial count")
            assert sub.on(PERSONS)[-1].json()["count"] == 0

            # Counts follow the detections, and only changes are published.
            for i in range(5):
                pub.publish_detections("cam1", result("cam1", i, n_boxes=3, labels=("person",)))
            await sub.wait_for(lambda _: sub.on(PERSONS)[-1].json()["count"] == 3, 10, "count 3")
            assert len(sub.on(PERSONS)) == 2

            # Home Assistant restarts and says so: the configs come again.
            before = len(configs_seen(sub.messages))
            async with aiomqtt.Client("127.0.0.1", broker.port) as ha:
                await ha.publish("homeassistant/status", "online", qos=1)
            await sub.wait_for(
                lambda m: len(configs_seen(m)) >= before + len(CONFIGS), 10, "configs again"
            )

            # The stream goes away on reload: its entities are deleted (empty retained payload).
            pub.set_streams([], {})
            await sub.wait_for(
                lambda m: {x.topic for x in m if x.topic in CONFIGS and not x.payload} == CONFIGS,
                10,
                "deletions",
            )
        async with subscribed(broker.port) as late:
            # Retained messages are sent when the subscription is made, so once a later live
            # marker has arrived, every retained message there is has arrived too.
            async with aiomqtt.Client("127.0.0.1", broker.port) as marker:
                await marker.publish("test/marker", "x", qos=1)
            await late.wait_for(lambda m: bool(late.on("test/marker")), 10, "marker")
            assert late.on("edged/edge/status")
            assert not configs_seen(late.messages)
            assert not late.on(PERSONS)
        await pub.stop()
        await task

    asyncio.run(main())
