"""Home Assistant discovery against a real mosquitto: every config judged by Home Assistant's own
rules (tests/mqtt/ha_rules.py), a device per stream, availability on the stream's status,
republished on `homeassistant/status` = online, deletions before state clears, and nothing left
behind after a restart with less configured."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import pytest
import voluptuous as vol

from edged.config.model import StreamConfig, TrackingConfig
from edged.mqtt import Publisher
from tests.mqtt import ha_rules
from tests.mqtt.support import Received, Subscriber, configs, result, subscribed, until
from tests.support.broker import Broker
from tests.support.daemon import Daemon, TomlValue, cpu_worker, daemon_config, video_stream
from tests.support.mqtt import Message
from tests.support.mqtt import Subscriber as SyncSubscriber

# Per-frame counts (tracking off): a tracked stream's counts come from its tracker instead
# (edged.supervisor.events, tests/supervisor/test_events.py).
UNTRACKED = TrackingConfig(enabled=False)
CAM = StreamConfig(name="cam1", source="cam1.mp4", worker="cpu", tracking=UNTRACKED)
CAM2 = StreamConfig(name="cam2", source="cam2.mp4", worker="cpu", tracking=UNTRACKED)
LABELS = {"cam1": ["person", "traffic light"]}
D = "homeassistant"
N = "edged_edge"
PERSONS = "edged/edge/cam1/count/person"
# What one stream with two labels announces, spelt out (not computed by the code under test).
CAM1_CONFIGS = {
    f"{D}/binary_sensor/{N}/{N}_cam1_online/config",
    f"{D}/switch/{N}/{N}_cam1_detection/config",
    f"{D}/sensor/{N}/{N}_cam1_fps_in/config",
    f"{D}/sensor/{N}/{N}_cam1_fps_processed/config",
    f"{D}/sensor/{N}/{N}_cam1_person_count/config",
    f"{D}/binary_sensor/{N}/{N}_cam1_person_presence/config",
    f"{D}/sensor/{N}/{N}_cam1_traffic_light_count/config",
    f"{D}/binary_sensor/{N}/{N}_cam1_traffic_light_presence/config",
}
NODE_CONFIGS = {
    f"{D}/binary_sensor/{N}/{N}_status/config",
    f"{D}/sensor/{N}/{N}_cpu/config",
    f"{D}/sensor/{N}/{N}_outbox_depth/config",
}
CONFIGS = CAM1_CONFIGS | NODE_CONFIGS


def configs_seen(messages: list[Received], *, retained: bool | None = None) -> list[str]:
    return [
        m.topic
        for m in messages
        if m.topic.endswith("/config")
        and m.topic.startswith(f"{D}/")
        and m.payload
        and (retained is None or m.retain == retained)
    ]


async def retained_now(port: int) -> dict[str, bytes]:
    """Every retained message on the broker now (a live marker after them proves the end)."""
    async with subscribed(port) as late:
        async with aiomqtt.Client("127.0.0.1", port) as marker:
            await marker.publish("test/marker", "x", qos=1)
        await late.wait_for(lambda _: bool(late.on("test/marker")), 10, "marker")
        return {m.topic: m.payload for m in late.messages if m.retain and m.payload}


def latest(sub: Subscriber) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for m in sub.messages:
        out[m.topic] = m.payload
    return out


def test_discovery_retained_republished_and_removed(broker: Broker, tmp_path: Path) -> None:
    async def main() -> None:
        pub = Publisher(*configs(broker.url, ha=True), tmp_path / "state")
        pub.set_streams([CAM], LABELS)
        task = asyncio.create_task(pub.run())
        await until(lambda: pub.connected, 10, "connected")
        async with subscribed(broker.port) as early:
            await early.wait_for(lambda m: set(configs_seen(m)) >= CONFIGS, 10, "configs out")
        # A subscriber that comes later still gets every config: they are retained.
        async with subscribed(broker.port) as sub:
            await sub.wait_for(
                lambda m: set(configs_seen(m, retained=True)) == CONFIGS, 10, "retained configs"
            )
            doc = next(m for m in sub.messages if m.topic.endswith("person_count/config")).json()
            assert doc["unique_id"] == "edged_edge_cam1_person_count"
            assert doc["default_entity_id"] == "sensor.edged_edge_cam1_person_count"
            assert doc["state_topic"] == PERSONS
            assert [a["topic"] for a in doc["availability"]] == [
                "edged/edge/status",
                "edged/edge/cam1/status",
            ]
            assert doc["availability_mode"] == "all"
            # A device per stream, linked to the node's device.
            assert doc["device"]["identifiers"] == ["edged_edge_cam1"]
            assert doc["device"]["via_device"] == "edged_edge"
            node = next(m for m in sub.messages if m.topic.endswith(f"{N}_cpu/config")).json()
            assert node["device"]["identifiers"] == ["edged_edge"]
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

            # The stream goes away on reload: its entities are deleted (empty retained payload);
            # the node's stay.
            pub.set_streams([], {})
            await sub.wait_for(
                lambda m: {x.topic for x in m if x.topic in CAM1_CONFIGS and not x.payload}
                == CAM1_CONFIGS,
                10,
                "deletions",
            )
            # ... and then (after the configs, never before) its counts are cleared.
            await sub.wait_for(lambda _: sub.on(PERSONS)[-1].payload == b"", 10, "count cleared")
        left = await retained_now(broker.port)
        assert "edged/edge/status" in left
        assert {t for t in left if t.endswith("/config")} == NODE_CONFIGS
        assert PERSONS not in left
        await pub.stop()
        await task

    asyncio.run(main())


# A tracked stream (the default) with zones, a counting line and snapshots, from its config.
FULL = msgspec.convert(
    {
        "name": "cam1", "source": "cam1.mp4", "worker": "cpu",
        "zones": [
            {"name": "door", "points": [[0, 0], [1, 0], [1, 1]], "normalized": True,
             "objects": ["person"]},
            {"name": "drive-way", "points": [[0, 0], [1, 0], [0, 1]], "normalized": True},
        ],
        "lines": [{"name": "gate", "points": [[0, 0.5], [1, 0.5]], "normalized": True,
                   "objects": ["person"]}],
    },
    StreamConfig,
)


def test_every_config_follows_home_assistants_rules(broker: Broker, tmp_path: Path) -> None:
    """Each retained config is accepted by Home Assistant's schema for its platform, reading
    every key edged sent; and the check itself refuses what Home Assistant refuses."""

    async def main() -> dict[str, Any]:
        pub = Publisher(*configs(broker.url, ha=True), tmp_path / "state")
        pub.set_streams([FULL, CAM2], {"cam1": ["person", "car"], "cam2": ["person"]})
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(pub.run())
            async with subscribed(broker.port, f"{D}/#") as sub:
                await sub.wait_for(lambda m: len(set(configs_seen(m))) >= 27, 10, "configs")
            retained = await retained_now(broker.port)
            await pub.stop()
            await task
        return {t: json.loads(p) for t, p in retained.items() if t.endswith("/config")}

    found = asyncio.run(main())
    platforms: dict[str, int] = {}
    for topic, config in found.items():
        ha_rules.check(topic, config)
        component = topic.split("/")[1]
        platforms[component] = platforms.get(component, 0) + 1
    per_device: dict[str, int] = {}
    for config in found.values():
        dev = config["device"]
        per_device[dev["identifiers"][0]] = per_device.get(dev["identifiers"][0], 0) + 1
        if dev["identifiers"] != ["edged_edge"]:
            assert dev["via_device"] == "edged_edge"
    print(f"entities: node {per_device['edged_edge']}, cam1 (2 labels, 3 zone labels, "
          f"1 line label, snapshots) {per_device['edged_edge_cam1']}, cam2 (1 label) "
          f"{per_device['edged_edge_cam2']}; by platform {platforms}")
    # node 3; a stream: online, detection, 2 fps + per label count, presence (+ snapshot);
    # per zone label count + occupancy; per line label in + out.
    assert per_device == {"edged_edge": 3, "edged_edge_cam1": 4 + 2 * 3 + 3 * 2 + 2,
                          "edged_edge_cam2": 4 + 2}
    assert platforms["image"] == 2 and platforms["switch"] == 2
    entity_ids = [c["default_entity_id"] for c in found.values()]
    assert len(set(entity_ids)) == len(entity_ids)

    # The check is not a rubber stamp: what Home Assistant would drop or refuse fails it.
    sample_topic = f"{D}/sensor/{N}/{N}_cam1_person_count/config"
    sample = found[sample_topic]
    for broken in (
        {**sample, "state_topc": sample["state_topic"]},  # a misspelt key HA would drop
        {**sample, "value_template": "{{ value_json.count "},  # a template that does not compile
        {**sample, "availability_topic": "edged/edge/status"},  # exclusive with `availability`
        {**sample, "state_class": "sometimes"},
        {k: v for k, v in sample.items() if k != "state_topic"},
        {**sample, "device": {"name": "no identifiers"}},
    ):
        with pytest.raises((vol.Invalid, AssertionError)):
            ha_rules.check(sample_topic, broken)
    with pytest.raises(AssertionError):
        ha_rules.check(sample_topic, {**sample, "default_entity_id": "binary_sensor.x"})


def test_reload_deletes_configs_before_clearing_counts(broker: Broker, tmp_path: Path) -> None:
    """A removed label's discovery config is deleted before its count topic is cleared, so Home
    Assistant never renders `value_json` on an empty payload."""

    async def main() -> None:
        pub = Publisher(*configs(broker.url, ha=True), tmp_path / "state")
        pub.set_streams([CAM], {"cam1": ["person", "car", "dog"]})
        task = asyncio.create_task(pub.run())
        async with subscribed(broker.port) as sub:
            await sub.wait_for(lambda _: bool(sub.on("edged/edge/cam1/count/dog")), 10, "dog")
            pub.set_streams([CAM], {"cam1": ["person"]})
            gone = {
                f"{D}/sensor/{N}/{N}_cam1_car_count/config",
                f"{D}/binary_sensor/{N}/{N}_cam1_car_presence/config",
                f"{D}/sensor/{N}/{N}_cam1_dog_count/config",
                f"{D}/binary_sensor/{N}/{N}_cam1_dog_presence/config",
            }
            cleared = {"edged/edge/cam1/count/car", "edged/edge/cam1/count/dog"}

            def order(m: list[Received]) -> list[str]:
                return [x.topic for x in m if not x.payload and x.topic in gone | cleared]

            await sub.wait_for(lambda m: set(order(m)) == gone | cleared, 10, "deletions")
            seen = order(sub.messages)
            last_config = max(seen.index(t) for t in gone)
            first_clear = min(seen.index(t) for t in cleared)
            assert last_config < first_clear, seen
        await pub.stop()
        await task

    asyncio.run(main())


def test_restart_deletes_what_is_no_longer_configured(broker: Broker, tmp_path: Path) -> None:
    """A label and a stream removed while edged was stopped: the next start deletes their
    retained configs (remembered in the state directory), and only theirs."""
    state = tmp_path / "state"

    async def run(
        streams: list[StreamConfig], labels: dict[str, list[str]], expect: set[str]
    ) -> None:
        async with subscribed(broker.port, f"{D}/#") as sub:
            pub = Publisher(*configs(broker.url, ha=True), state)
            pub.set_streams(streams, labels)
            task = asyncio.create_task(pub.run())

            def announced(_: list[Received]) -> bool:
                return {t for t, p in latest(sub).items() if p and t.endswith("/config")} == expect

            await sub.wait_for(announced, 10, "configs as configured")
            await pub.stop()
            await task

    async def main() -> None:
        first = NODE_CONFIGS | {
            f"{D}/{c}/{N}/{N}_{e}/config"
            for c, e in (
                ("binary_sensor", "cam1_online"), ("switch", "cam1_detection"),
                ("sensor", "cam1_fps_in"), ("sensor", "cam1_fps_processed"),
                ("sensor", "cam1_person_count"), ("binary_sensor", "cam1_person_presence"),
                ("sensor", "cam1_car_count"), ("binary_sensor", "cam1_car_presence"),
                ("binary_sensor", "cam2_online"), ("switch", "cam2_detection"),
                ("sensor", "cam2_fps_in"), ("sensor", "cam2_fps_processed"),
                ("sensor", "cam2_dog_count"), ("binary_sensor", "cam2_dog_presence"),
            )
        }
        await run([CAM, CAM2], {"cam1": ["person", "car"], "cam2": ["dog"]}, first)
        second = (NODE_CONFIGS | CAM1_CONFIGS) - {
            f"{D}/sensor/{N}/{N}_cam1_traffic_light_count/config",
            f"{D}/binary_sensor/{N}/{N}_cam1_traffic_light_presence/config",
        }
        await run([CAM], {"cam1": ["person"]}, second)
        # What a later subscriber (Home Assistant starting) finds: only what is configured.
        left = {t for t in await retained_now(broker.port) if t.endswith("/config")}
        assert left == second
        remembered = json.loads((state / "ha-announced.json").read_text())["discovery"]
        assert set(remembered) == second

    asyncio.run(main())


def test_stream_offline_makes_its_entities_unavailable(broker: Broker, tmp_path: Path) -> None:
    """Read the way Home Assistant reads them: with the stream `online` its entities are
    available; the moment its retained status says otherwise they are not, except its
    connectivity sensor (now off) and its detection switch."""

    async def main() -> None:
        pub = Publisher(*configs(broker.url, ha=True), tmp_path / "state")
        pub.set_streams([CAM], LABELS)
        pub.set_detection("cam1", True)
        pub.set_state("cam1/status", {"stream": "cam1", "status": "online"})
        task = asyncio.create_task(pub.run())
        async with subscribed(broker.port) as sub:
            await sub.wait_for(lambda m: set(configs_seen(m)) >= CONFIGS, 10, "configs")
            cfg = {t: json.loads(latest(sub)[t]) for t in CAM1_CONFIGS}
            online = f"{D}/binary_sensor/{N}/{N}_cam1_online/config"
            switch = f"{D}/switch/{N}/{N}_cam1_detection/config"
            followers = set(CAM1_CONFIGS) - {online, switch}

            def unavailable() -> set[str]:
                now = latest(sub)
                return {t for t in CAM1_CONFIGS if not ha_rules.available(cfg[t], now)}

            await sub.wait_for(lambda _: not unavailable(), 10, "all available")
            assert ha_rules.render(cfg[online]["value_template"],
                                   latest(sub)["edged/edge/cam1/status"]) == "ON"

            t0 = time.monotonic()
            pub.set_state("cam1/status", {"stream": "cam1", "status": "offline",
                                          "reason": "stalled", "detail": "no frame for 10 s"})
            await sub.wait_for(lambda _: unavailable() == followers, 10, "unavailable")
            took = time.monotonic() - t0
            n = len(followers)
            print(f"stream offline -> {n} entities unavailable in {took * 1000:.1f} ms")
            assert ha_rules.render(cfg[online]["value_template"],
                                   latest(sub)["edged/edge/cam1/status"]) == "OFF"

            # A deleted status (empty payload) is offline too, not a template error.
            assert not ha_rules.available(cfg[f"{D}/sensor/{N}/{N}_cam1_person_count/config"],
                                          {**latest(sub), "edged/edge/cam1/status": b""})
            # A null count (edged.supervisor.events: the stream is not online) is unknown.
            presence = cfg[f"{D}/binary_sensor/{N}/{N}_cam1_person_presence/config"]
            assert ha_rules.render(presence["value_template"], b'{"count":null}') == "None"
            assert ha_rules.render(presence["value_template"], b'{"count":2}') == "ON"
        await pub.stop()
        await task

    asyncio.run(main())


def test_detection_command_reaches_the_supervisor(broker: Broker, tmp_path: Path) -> None:
    """The switch's command topic (also for Node-RED and scripts): ON/OFF reach the callback,
    anything else is ignored; other streams' and other nodes' topics are not ours."""
    asked: list[tuple[str, bool]] = []

    async def main() -> None:
        pub = Publisher(*configs(broker.url, ha=True), tmp_path / "state",
                        on_detection=lambda s, on: asked.append((s, on)))
        pub.set_streams([CAM], LABELS)
        task = asyncio.create_task(pub.run())
        await until(lambda: pub.connected, 10, "connected")
        async with subscribed(broker.port) as sub:
            await sub.wait_for(lambda m: set(configs_seen(m)) >= CONFIGS, 10, "configs")
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            for topic, payload in (
                ("edged/edge/cam1/detection/set", "OFF"),
                ("edged/edge/cam1/detection/set", "maybe"),
                ("edged/other/cam1/detection/set", "ON"),
                ("edged/edge/cam1/detection/set", "on"),
            ):
                await client.publish(topic, payload, qos=1)
        await until(lambda: len(asked) >= 2, 10, "two commands")
        assert asked == [("cam1", False), ("cam1", True)]
        await pub.stop()
        await task

    asyncio.run(main())


def test_presence_changes_a_few_times_a_minute_on_the_example_videos(
    tmp_path: Path, assets: Path, broker: Broker
) -> None:
    """The real daemon on both example videos (tracked, the default: 2 s count hold) at 2
    detections a second, as in the issue's Home Assistant setup: each presence binary_sensor,
    read through its own discovery template, changes at most a few times a minute."""
    # Both looped at 2 detections a second, with no detections messages and no snapshots.
    quiet: dict[str, TomlValue] = {
        "loop": True,
        "detect_fps": 2,
        "detections": False,
        "tracking": {"snapshot": "off"},
    }
    text = daemon_config(
        "ha",
        tmp_path / "state",
        broker.url,
        homeassistant=True,
        workers=[cpu_worker(assets, heartbeat_timeout=20)],
        streams=[
            video_stream(assets, "street", "pedestrians-720p.avi", labels=["person"], **quiet),
            video_stream(assets, "road", "traffic-720p.mp4", labels=["car", "truck", "bus"],
                         **quiet),
        ],
    )
    window_s = 30.0
    sub = SyncSubscriber(broker.port, ("homeassistant/binary_sensor/#", "edged/ha/+/count/+",
                                       "edged/ha/+/status"))
    daemon = Daemon(tmp_path, text)
    daemon.start()
    try:
        with daemon.dumped_on_failure():
            def online(ms: list[Message]) -> bool:
                docs = [json.loads(m.payload) for m in ms
                        if m.topic.endswith("/status") and m.payload]
                return {d["stream"] for d in docs if d["status"] == "online"} == {"street", "road"}

            sub.wait_for(online, 120, "both streams online")
            start, messages = sub.window(window_s)
            assert daemon.stop() == 0
    finally:
        sub.close()
    presence = {
        json.loads(m.payload)["state_topic"]: json.loads(m.payload)
        for m in messages
        if m.topic.endswith("_presence/config") and m.payload
    }
    assert set(presence) == {"edged/ha/street/count/person", "edged/ha/road/count/car",
                             "edged/ha/road/count/truck", "edged/ha/road/count/bus"}
    per_minute = {}
    for topic, config in presence.items():
        states = [ha_rules.render(config["value_template"], m.payload) for m in messages
                  if m.topic == topic and m.payload and start <= m.received < start + window_s]
        changes = sum(1 for a, b in itertools.pairwise(states) if a != b)
        per_minute[topic.split("/", 2)[2]] = changes * 60.0 / window_s
    for name, rate in per_minute.items():
        print(f"presence {name}: {rate:.0f} changes/min over {window_s:.0f} s")
    # What the videos really do bounds this: traffic-720p.mp4 loops every 12.3 s, and trucks
    # come and go in it (about 3.5 s at the start of each loop, single sightings near 8.5 s and
    # 9.5 s). Held and tracked, that is 4-8 changes a minute from run to run (the frames a
    # 2-a-second detector samples shift). Frame by frame at 2 detections a second, the same clip
    # flips truck presence about 39 times a minute: 12 still proves the debouncing.
    assert all(rate <= 12 for rate in per_minute.values()), per_minute
