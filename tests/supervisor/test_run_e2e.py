"""End to end: config.toml -> `edged run` (spawned workers, real model, real video) -> MQTT."""

from __future__ import annotations

from pathlib import Path

from tests.support.broker import Broker
from tests.support.daemon import Daemon, all_gone, cpu_worker, daemon_config, video_stream
from tests.support.mqtt import Message, Subscriber


def two_stream_config(
    assets: Path, broker: Broker, state_dir: Path, *, health_interval: float = 30
) -> str:
    """Node "e2e": the street on worker cpu0, the road on cpu1, one thread each."""
    return daemon_config(
        "e2e",
        state_dir,
        broker.url,
        health_interval=health_interval,
        workers=[
            cpu_worker(assets, name, threads=1, heartbeat_timeout=10) for name in ("cpu0", "cpu1")
        ],
        streams=[
            video_stream(
                assets,
                "street",
                "pedestrians-720p.avi",
                "cpu0",
                loop=True,
                detect_fps=5,
                min_score=0.4,
            ),
            video_stream(
                assets, "road", "traffic-720p.mp4", "cpu1", loop=True, detect_fps=5, min_score=0.4
            ),
        ],
    )


def detections(messages: list[Message], stream: str) -> list[dict]:  # type: ignore[type-arg]
    return [m.json() for m in messages if m.topic == f"edged/e2e/{stream}/detections"]


def test_two_streams_reach_mqtt_and_sigterm_stops_cleanly(
    tmp_path: Path, assets: Path, broker: Broker
) -> None:
    subscriber = Subscriber(broker.port)
    daemon = Daemon(tmp_path, two_stream_config(assets, broker, tmp_path / "state"))
    daemon.start()
    try:
        with daemon.dumped_on_failure():

            def enough(messages: list[Message]) -> bool:
                return all(len(detections(messages, s)) >= 10 for s in ("street", "road"))

            messages = subscriber.wait_for(enough, 90, "10 detection messages on each stream")
            street = detections(messages, "street")
            road = detections(messages, "road")
            street_labels = [d["label"] for m in street for d in m["detections"]]
            road_labels = [d["label"] for m in road for d in m["detections"]]
            # An overhead view of a station hall full of walkers; a road with passing cars.
            assert street_labels.count("person") >= 10 * len(street) // 2, street_labels[:50]
            assert "car" in road_labels, road_labels[:50]
            for message in street + road:
                assert (message["width"], message["height"]) == (1280, 720)
                for det in message["detections"]:
                    x1, y1, x2, y2 = det["box"]
                    assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720, det
                    assert det["score"] >= 0.4
            # frames go forward, seq has no gaps
            for stream in (street, road):
                seqs = [m["seq"] for m in stream]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert len(daemon.workers()) == 2
            children = daemon.children()
    finally:
        subscriber.close()
    code = daemon.stop(timeout=10)
    assert code == 0, daemon.log()
    all_gone(children, timeout=5)
