"""Health: the tracker alone on an injected clock, then on MQTT from a real `edged run` (the
retained health message, availability with its last will, and per-stream retained status, each
checked against the shipped JSON Schemas).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import psutil
from referencing import Registry, Resource

from edged import __version__
from edged.config.model import WorkerConfig
from edged.mqtt.payloads import load_schema
from edged.protocol import (
    Metrics,
    Result,
    StreamCounters,
    StreamReason,
    StreamState,
    StreamStatus,
    WorkerState,
)
from edged.supervisor.handle import WorkerEvents, WorkerHandle
from edged.supervisor.health import HealthTracker
from tests.support.broker import Broker
from tests.support.daemon import Daemon, all_gone
from tests.support.mqtt import Message, Subscriber
from tests.support.supervision import S, W, config_text

NODE = "hl"
HEALTH = f"edged/{NODE}/health"
STATUS = f"edged/{NODE}/status"


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schemas = [load_schema(n) for n in ("state", "health", "stream_status", "availability")]
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas
    )
    return jsonschema.Draft202012Validator(load_schema(name), registry=registry)


def validate(message: Message) -> None:
    if message.topic == STATUS:
        validator("availability").validate(message.payload.decode())
    elif message.topic == HEALTH:
        validator("health").validate(message.json())
    elif message.topic.endswith("/status"):
        validator("stream_status").validate(message.json())


def healths(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic == HEALTH]


def complete(health: dict[str, Any]) -> bool:
    """Every figure has had time to fill in: rates, percentiles, process figures."""
    streams, workers = health["streams"].values(), health["workers"].values()
    return (
        len(streams) == 2
        and all(s["fps_in"] > 0 and s["fps_processed"] > 0 for s in streams)
        and all(s["latency_ms"]["p50"] is not None for s in streams)
        and all(w["infer_ms_p50"] is not None and w["cpu_percent"] for w in workers)
    )


def retained(port: int, topics: tuple[str, ...], timeout: float = 10) -> dict[str, Message]:
    """What a client connecting now is told: the retained message of each topic."""
    fresh = Subscriber(port, topics)
    try:
        messages = fresh.wait_for(
            lambda ms: {m.topic for m in ms} >= set(topics), timeout, f"retained {topics}"
        )
    finally:
        fresh.close()
    return {m.topic: m for m in messages}


def test_health_availability_and_stream_status(
    tmp_path: Path, assets: Path, broker: Broker
) -> None:
    subscriber = Subscriber(broker.port)
    text = config_text(
        assets,
        broker,
        tmp_path / "state",
        [W("cpu0"), W("cpu1")],
        [S("street", "cpu0", "street"), S("road", "cpu1", "road")],
        node=NODE,
        health_interval=1,
    )
    daemon = Daemon(tmp_path, text)
    daemon.start()
    try:
        with daemon.dumped_on_failure():
            messages = subscriber.wait_for(
                lambda ms: any(complete(h) for h in healths(ms)), 30, "a complete health message"
            )
            for message in messages:
                validate(message)
            health = next(h for h in reversed(healths(messages)) if complete(h))

            d = health["daemon"]
            assert (d["version"], d["pid"], d["config_generation"]) == (__version__, daemon.pid, 1)
            assert (
                d["uptime_s"] > 0 and d["rss_bytes"] > 10_000_000 and d["cpu_percent"] is not None
            )
            assert health["mqtt"]["connected"] is True

            for name, native_fps in (("street", 50), ("road", 30)):
                s = health["streams"][name]
                assert s["status"] == "online" and s["reason"] == ""
                # Files play in real time at their own rate, never faster; the detector runs at
                # detect_fps = 5, never more. (A loaded box may run both slower.)
                assert 0 < s["fps_in"] <= 1.3 * native_fps, s
                assert 0 < s["fps_processed"] <= 1.3 * 5, s
                assert s["frames_processed"] <= s["frames_in"]
                p = s["latency_ms"]
                assert 0 < p["p50"] <= p["p95"] <= p["p99"], p
                # Capture to publish is a few inferences, not a queue: relative to this run's
                # own inference time, as slow or fast as the box is today.
                infer = health["workers"][s["worker"]]["infer_ms_p50"]
                assert p["p50"] <= 20 * infer, (p, infer)

            worker_pids = {p.pid for p in daemon.workers()}
            for name in ("cpu0", "cpu1"):
                w = health["workers"][name]
                assert w["state"] == "ready" and w["pid"] in worker_pids, w
                assert (w["restarts"], w["last_exit"]) == (0, ""), w
                assert w["rss_bytes"] > 50_000_000 and w["cpu_percent"] > 0, w
                # Heartbeats within the deadline (heartbeat_timeout, 10 s: later is a hang).
                assert 0 <= w["heartbeat_age_s"] < 10 and w["infer_ms_p50"] > 0, w

            # A client that connects now learns the state from retained messages alone.
            topics = (STATUS, HEALTH, f"edged/{NODE}/street/status", f"edged/{NODE}/road/status")
            now = retained(broker.port, topics)
            assert all(m.retain for m in now.values()), now
            assert now[STATUS].payload == b"online"
            assert now[f"edged/{NODE}/street/status"].json()["status"] == "online"
            assert now[f"edged/{NODE}/road/status"].json()["worker"] == "cpu1"
            for message in now.values():
                validate(message)

            # The supervisor dies without a word: the broker publishes its last will, retained, and
            # the workers see their pipes close and exit on their own.
            children = daemon.children()
            assert daemon.proc is not None
            daemon.proc.kill()
            daemon.proc.wait(5)
            subscriber.wait_for(
                lambda ms: any(m.topic == STATUS and m.payload == b"offline" for m in ms),
                10,
                "the last will",
            )
            after = retained(broker.port, (STATUS,))
            assert after[STATUS].payload == b"offline" and after[STATUS].retain
            all_gone(children, timeout=10)
            assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)
    finally:
        subscriber.close()


# --- HealthTracker alone, on an injected clock: snapshot() reads, rollover() closes ----------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counters(frames_in: int, processed: int) -> StreamCounters:
    return StreamCounters("cam", frames_in, processed, 0, 0, 0)


def handle(state: WorkerState) -> WorkerHandle:
    h = WorkerHandle(
        WorkerConfig(name="w", model="m.onnx"), {}, WorkerEvents(lambda *a: None, lambda h: None)
    )
    h.state = state
    return h


def test_snapshot_reads_and_rollover_closes_the_interval() -> None:
    clock = Clock()
    health = HealthTracker(clock)
    handles = {"w": handle(WorkerState.READY)}
    health.track_stream("cam", "w")
    assert health.on_stream_state(StreamState("cam", StreamStatus.ONLINE, StreamReason.NONE))
    health.on_metrics("w", Metrics((counters(0, 0),), (10.0, 20.0, 30.0)))
    clock.now += 2.0
    health.on_metrics("w", Metrics((counters(50, 20),), ()))
    for ms in (100.0, 200.0, 300.0):
        health.on_result(Result("cam", 1, 1000.0, 640, 480, 5.0, b"[]"), 1000.0 + ms / 1000.0)

    health.rollover(handles)
    first = health.snapshot(handles, 1, {})
    # Reading twice gives the same answer: nothing moves without a rollover.
    assert health.snapshot(handles, 1, {}) == first
    stream = first["streams"]["cam"]
    assert (stream["fps_in"], stream["fps_processed"]) == (25.0, 10.0)
    assert stream["latency_ms"] == {"p50": 200.0, "p95": 290.0, "p99": 298.0}
    assert stream["status"] == "online"
    assert first["workers"]["w"]["infer_ms_p50"] == 20.0

    # A new interval without new samples: no latency figures, the last rates and p50 stand.
    health.rollover(handles)
    second = health.snapshot(handles, 1, {})
    assert second["streams"]["cam"]["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert second["streams"]["cam"]["fps_in"] == 25.0
    assert second["workers"]["w"]["infer_ms_p50"] == 20.0


def test_a_worker_in_backoff_or_failed_shows_in_its_streams_status() -> None:
    health = HealthTracker(Clock())
    health.track_stream("cam", "w")
    health.on_stream_state(StreamState("cam", StreamStatus.ONLINE, StreamReason.NONE))
    backoff, failed = handle(WorkerState.BACKOFF), handle(WorkerState.FAILED)
    backoff.last_exit = failed.last_exit = "exit code 1"
    stream = health.snapshot({"w": backoff}, 1, {})["streams"]["cam"]
    assert (stream["status"], stream["reason"], stream["detail"]) == (
        "offline",
        "worker_restarting",
        "worker w restarting after: exit code 1",
    )
    stream = health.snapshot({"w": failed}, 1, {})["streams"]["cam"]
    assert (stream["status"], stream["reason"], stream["detail"]) == (
        "failed",
        "worker_failed",
        "worker w failed: exit code 1",
    )
    worker = health.snapshot({"w": failed}, 1, {})["workers"]["w"]
    assert worker["state"] == "failed" and worker["pid"] is None


def test_worker_gone_takes_its_online_streams_offline_and_restarts_their_rates() -> None:
    clock = Clock()
    health = HealthTracker(clock)
    health.track_stream("cam", "w")
    health.on_stream_state(StreamState("cam", StreamStatus.ONLINE, StreamReason.NONE))
    health.on_metrics("w", Metrics((counters(0, 0),), ()))
    clock.now += 1.0
    health.on_metrics("w", Metrics((counters(10, 10),), ()))
    health.worker_gone("w")
    assert health.streams["cam"].status is StreamStatus.OFFLINE
    assert health.online() == 0
    health.rollover({})
    assert health.snapshot({}, 1, {})["streams"]["cam"]["fps_in"] == 0.0
