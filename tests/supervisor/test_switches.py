"""The per-stream detection switch on a real daemon: OFF stops the stream on its worker (no more
detections, status `stopped`/`detection_off`), survives a restart, ON starts it again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.publish as mqtt_publish

from tests.support.broker import Broker
from tests.support.daemon import Daemon, cpu_worker, daemon_config, video_stream
from tests.support.mqtt import Message, Subscriber

BASE = "edged/sw"
STATE = f"{BASE}/street/detection"
STATUS = f"{BASE}/street/status"
HEALTH = f"{BASE}/health"
DETECTIONS = f"{BASE}/street/detections"


def config(assets: Path, broker: Broker, state_dir: Path) -> str:
    return daemon_config(
        "sw",
        state_dir,
        broker.url,
        health_interval=0.5,
        homeassistant=True,
        workers=[cpu_worker(assets, threads=1)],
        streams=[video_stream(assets, "street", "pedestrians-720p.avi", loop=True, detect_fps=5)],
    )


def last_json(messages: list[Message], topic: str) -> dict | None:  # type: ignore[type-arg]
    on = [m for m in messages if m.topic == topic and m.payload]
    return on[-1].json() if on else None


def command(broker: Broker, payload: str) -> None:
    mqtt_publish.single(f"{BASE}/street/detection/set", payload, qos=1, hostname="127.0.0.1",
                        port=broker.port)


def no_detections_over_health(sub: Subscriber, reports: int) -> None:
    """While `reports` more health messages arrive (0.5 s apart), no detection arrives."""
    since = time.time()
    before = len(sub.on(DETECTIONS))
    sub.wait_for(
        lambda ms: sum(m.topic == HEALTH and m.received > since for m in ms) >= reports,
        30,
        f"{reports} health messages",
    )
    assert len(sub.on(DETECTIONS)) == before, "detections while detection is off"


def test_switch_turns_detection_off_and_on_across_a_restart(
    tmp_path: Path, assets: Path, broker: Broker
) -> None:
    text = config(assets, broker, tmp_path / "state")
    sub = Subscriber(broker.port)
    daemon = Daemon(tmp_path, text)
    daemon.start()
    try:
        with daemon.dumped_on_failure():
            sub.wait_for(lambda ms: len([m for m in ms if m.topic == DETECTIONS]) >= 3, 90,
                         "detections")
            state = last_json(sub.snapshot(), STATE)
            assert state is not None and state["enabled"] is True

            command(broker, "OFF")
            sub.wait_for(lambda ms: (last_json(ms, STATE) or {}).get("enabled") is False, 20,
                         "switch state off")
            status = last_json(sub.snapshot(), STATUS)
            assert status is not None
            assert (status["status"], status["reason"]) == ("stopped", "detection_off")
            # Let what the worker had in flight drain (one health period), then nothing comes.
            no_detections_over_health(sub, 1)
            no_detections_over_health(sub, 4)
            saved = json.loads((tmp_path / "state" / "detection.json").read_text())
            assert saved["off"] == ["street"]
        assert daemon.stop(timeout=15) == 0, daemon.log()

        # A restart keeps it off: nothing is decoded or detected, the status says why.
        sub.messages.clear()
        daemon = Daemon(tmp_path, text)
        daemon.start()
        with daemon.dumped_on_failure():
            sub.wait_for(
                lambda ms: (last_json(ms, STATUS) or {}).get("reason") == "detection_off"
                and any(m.topic == HEALTH for m in ms),
                60,
                "stopped stream after the restart",
            )
            state = last_json(sub.snapshot(), STATE)
            assert state is not None and state["enabled"] is False
            no_detections_over_health(sub, 4)
            health = last_json(sub.snapshot(), HEALTH)
            assert health is not None
            assert health["streams"]["street"]["status"] == "stopped"

            command(broker, "ON")
            sub.wait_for(lambda ms: (last_json(ms, STATE) or {}).get("enabled") is True, 20,
                         "switch state on")
            sub.wait_for(lambda ms: any(m.topic == DETECTIONS for m in ms), 60,
                         "detections again")
            sub.wait_for(lambda ms: (last_json(ms, STATUS) or {}).get("status") == "online", 30,
                         "online again")
            saved = json.loads((tmp_path / "state" / "detection.json").read_text())
            assert saved["off"] == []
    finally:
        sub.close()
    assert daemon.stop(timeout=15) == 0, daemon.log()
