"""The supervisor's message routing: worker messages in, MQTT out (real broker, real publisher).

The workers are fakes that speak the real pipe protocol (tests/support/virtual.py): what is
tested is where each message goes, not model loading. Real processes are in test_run_e2e.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from edged.config.model import Config, MqttConfig, NodeConfig, StreamConfig, WorkerConfig
from edged.protocol import (
    Detection,
    Metrics,
    Ready,
    Result,
    StreamCounters,
    StreamReason,
    StreamState,
    StreamStatus,
    detections_json,
)
from edged.supervisor.daemon import Supervisor
from edged.supervisor.restart import RestartPolicy
from edged.systemd.notify import Notifier
from tests.support.broker import Broker
from tests.support.mqtt import Message, Subscriber
from tests.support.virtual import FakeWorkers

NODE = "rt"


def status_of(messages: list[Message], stream: str) -> dict[str, Any] | None:
    found = [m.json() for m in messages if m.topic == f"edged/{NODE}/{stream}/status"]
    return found[-1] if found else None


def test_worker_messages_are_routed_to_mqtt_and_health(tmp_path: Path, broker: Broker) -> None:
    config = Config(
        node=NodeConfig(name=NODE, state_dir=str(tmp_path / "state"), health_interval=0.2),
        mqtt=MqttConfig(url=broker.url),
        workers=(WorkerConfig(name="w", model="m.onnx"),),
        streams=(
            StreamConfig(name="cam", source="/videos/cam.mp4", worker="w"),
            StreamConfig(name="door", source="/videos/door.mp4", worker="w"),
        ),
    )
    config_path = tmp_path / "config.toml"
    config_path.write_text("# built in the test\n")
    subscriber = Subscriber(broker.port)
    workers = FakeWorkers()
    # Two crashes in the window: the worker is failed (and its streams with it).
    policy = RestartPolicy(initial_delay=0.05, jitter=0.0, budget=1, failed_retry=300.0)

    async def main() -> None:
        supervisor = Supervisor(
            config_path, config, notifier=Notifier({}), policy=policy, host=workers.host()
        )
        run = asyncio.create_task(supervisor.run())

        async def wait_for(predicate: Any, what: str) -> list[Message]:
            return await asyncio.to_thread(subscriber.wait_for, predicate, 20, what)

        worker = await asyncio.wait_for(workers.spawn_count(1), 20)
        assert [s.name for s in worker.spec.streams] == ["cam", "door"]
        worker.send(Ready(1, "cpu", "m.onnx", ("CPUExecutionProvider",), 1.0, 1.0))
        worker.send(StreamState("cam", StreamStatus.ONLINE, StreamReason.NONE))
        person = Detection("person", 0, 0.9, (1.0, 2.0, 3.0, 4.0))
        worker.send(Result("cam", 7, 1_700_000_000.0, 640, 480, 5.0, detections_json([person])))
        # A result for a stream this worker does not own (a reload moved it) goes nowhere.
        worker.send(Result("ghost", 1, 1_700_000_000.0, 640, 480, 5.0, b"[]"))
        worker.send(Metrics((StreamCounters("cam", 10, 5, 0, 0, 0),), (5.0,)))

        messages = await wait_for(
            lambda ms: (
                any(m.topic == f"edged/{NODE}/cam/detections" for m in ms)
                and (status_of(ms, "cam") or {}).get("status") == "online"
                and any(
                    m.topic == f"edged/{NODE}/health"
                    and m.json()["workers"]["w"]["state"] == "ready"
                    for m in ms
                )
            ),
            "a detection, cam online and a health message with w ready",
        )
        (published,) = [m.json() for m in messages if m.topic.endswith("/cam/detections")]
        assert published["frame"] == 7 and published["detections"] == [
            {"label": "person", "class_id": 0, "score": 0.9, "box": [1.0, 2.0, 3.0, 4.0]}
        ]
        assert not any("ghost" in m.topic for m in messages)
        cam = status_of(messages, "cam") or {}
        assert {k: cam.get(k) for k in ("stream", "status", "reason", "detail", "worker")} == {
            "stream": "cam",
            "status": "online",
            "reason": "",
            "detail": "",
            "worker": "w",
        }

        # The worker crashes twice: past its budget, it is failed; both its streams say so.
        worker.exit(1)
        (await asyncio.wait_for(workers.spawn_count(2), 20)).exit(1)
        messages = await wait_for(
            lambda ms: all(
                (status_of(ms, s) or {}).get("status") == "failed" for s in ("cam", "door")
            ),
            "both streams failed",
        )
        for stream in ("cam", "door"):
            failed = status_of(messages, stream) or {}
            assert (failed["reason"], failed["detail"]) == (
                "worker_failed",
                "worker w failed: exit code 1",
            )

        # SIGTERM (to this process: the supervisor's own handler takes it) stops in order.
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(run, 20) == 0
        messages = await wait_for(
            lambda ms: all(
                (status_of(ms, s) or {}).get("reason") == "edged_stopped" for s in ("cam", "door")
            ),
            "streams offline on stop",
        )
        assert status_of(messages, "cam")["status"] == "offline"  # type: ignore[index]

    try:
        asyncio.run(main())
    finally:
        subscriber.close()
