"""RTSP camera scenarios against the real `edged run`: what a camera installation meets on day one.

Runs in the test process (tests/supervisor/test_rtsp_e2e.py asserts on it) or alone, printing the
table for the closing note:

    EDGED_TEST_ASSETS=/work/shared .venv/bin/python -m tests.support.rtsp_scenarios

One scenario is one daemon run with a healthy camera (the real RTSP server, through a proxy that
can freeze it) on a worker, alone or beside cameras that accept the connection and never answer.
It measures, from the messages a subscriber to the broker receives:
  - first detection: the stream's `starting` status -> its first detections message with a box;
  - reconnect: the camera restarts (server stopped, `offline` seen, server started on the same
    port) -> `offline` status -> first detection again;
  - freeze: the proxy stops passing data, sockets open -> `offline` status (reason `stalled`).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.broker import Broker
from tests.support.daemon import Daemon, Table, cpu_worker, daemon_config
from tests.support.mqtt import Message, Subscriber
from tests.support.rtsp import Mount, RtspServer
from tests.support.rtsp_faults import Proxy, SilentServer
from tests.support.rtsp_media import H264_720, H265_720, Variant

NODE = "rtsp"
STALL_TIMEOUT = 3.0
RECONNECT_DELAY = 2.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    source: str
    keys: Table = field(default_factory=dict)  # more keys for its [[streams]] table


def config(assets: Path, broker: Broker, state_dir: Path, streams: list[StreamSpec]) -> str:
    """One worker running every stream (neighbours share its process, threads and model)."""
    return daemon_config(
        NODE,
        state_dir,
        broker.url,
        health_interval=30,
        workers=[cpu_worker(assets, threads=1)],
        streams=[
            {
                "name": stream.name,
                "source": stream.source,
                "worker": "cpu0",
                "detect_fps": 5,
                "min_score": 0.3,
                **stream.keys,
            }
            for stream in streams
        ],
    )


def status_topic(stream: str) -> str:
    return f"edged/{NODE}/{stream}/status"


def statuses(messages: list[Message], stream: str) -> list[tuple[float, dict]]:  # type: ignore[type-arg]
    """The stream's status messages as published (not the retained ones a subscriber is told
    first: the broker may still hold those from an earlier run)."""
    topic = status_topic(stream)
    return [(m.received, m.json()) for m in messages if m.topic == topic and not m.retain]


def detections_with_boxes(messages: list[Message], stream: str, after: float = 0.0) -> list[float]:
    """When each detections message with a box arrived, for frames captured after `after`
    (a frame decoded before a camera dropped can still be in the detector when it does)."""
    topic = f"edged/{NODE}/{stream}/detections"
    found = []
    for message in messages:
        if message.topic == topic:
            payload = message.json()
            if payload["detections"] and payload["ts_ms"] / 1000 >= after:
                found.append(message.received)
    return found


class Watch:
    """Waits on what edged published, by stream, after a point in time."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber

    def status(self, stream: str, status: str, after: float, timeout: float) -> dict:  # type: ignore[type-arg]
        def seen(messages: list[Message]) -> bool:
            return any(t >= after and p["status"] == status for t, p in statuses(messages, stream))

        messages = self.subscriber.wait_for(seen, timeout, f"{stream} {status}")
        return next(
            {"received": t, **p}
            for t, p in statuses(messages, stream)
            if t >= after and p["status"] == status
        )

    def detection(self, stream: str, after: float, timeout: float) -> float:
        def seen(messages: list[Message]) -> bool:
            return bool(detections_with_boxes(messages, stream, after))

        messages = self.subscriber.wait_for(seen, timeout, f"a detection on {stream}")
        return detections_with_boxes(messages, stream, after)[0]


@dataclass(frozen=True)
class Timings:
    first_detection: float
    reconnect: float
    freeze_detected: float | None  # None: not measured (or UDP: its media bypasses the proxy)
    freeze_reason: str
    dead_reasons: tuple[str, ...]  # the dead neighbours' retained reasons


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    daemon.start()
    try:
        with daemon.dumped_on_failure():
            yield daemon
    finally:
        code = daemon.stop(timeout=20)
        assert code == 0, f"edged exited {code}\n{daemon.log()}"


def healthy_camera_run(
    assets: Path,
    workdir: Path,
    broker: Broker,
    server: RtspServer,
    path: str = "/cam",
    dead: int = 0,
    transport: str = "tcp",
    freeze: bool = True,
) -> Timings:
    """One daemon run: first detection, a camera restart and (`freeze`) a freeze, beside `dead`
    silent cameras on the same worker."""
    workdir.mkdir(parents=True, exist_ok=True)
    silent = [SilentServer() for _ in range(dead)]
    proxy = Proxy(server.port)
    subscriber = Subscriber(broker.port)
    watch = Watch(subscriber)
    keys: Table = {
        "rtsp_transport": transport,
        "stall_timeout": STALL_TIMEOUT,
        "reconnect_delay": RECONNECT_DELAY,
    }
    streams = [StreamSpec("cam", proxy.url(path), keys)]
    streams += [StreamSpec(f"dead{i}", s.url(), keys) for i, s in enumerate(silent, 1)]
    daemon = Daemon(workdir, config(assets, broker, workdir / "state", streams))
    try:
        with running(daemon):
            starting = watch.status("cam", "starting", 0, 60)["received"]
            first = watch.detection("cam", starting, 60) - starting

            server.stop()  # the camera reboots
            offline = watch.status("cam", "offline", starting, 30)["received"]
            server.start()
            back = watch.detection("cam", offline, 60)

            freeze_detected, freeze_reason = None, ""
            if freeze and transport == "tcp":  # over UDP the video bypasses the proxy
                proxy.freeze()
                frozen = time.time()
                stalled = watch.status("cam", "offline", frozen, 30)
                freeze_detected = stalled["received"] - frozen
                freeze_reason = stalled.get("reason", "")
            dead_reasons = tuple(
                watch.status(f"dead{i}", "offline", starting, 60).get("reason", "")
                for i in range(1, dead + 1)
            )
    finally:
        subscriber.close()
        proxy.close()
        for s in silent:
            s.close()
    return Timings(
        first_detection=first,
        reconnect=back - offline,
        freeze_detected=freeze_detected,
        freeze_reason=freeze_reason,
        dead_reasons=dead_reasons,
    )


def freeze_cell(alone: Timings, beside: Timings) -> str:
    if alone.freeze_detected is None or beside.freeze_detected is None:
        return "n/a (UDP media bypasses the freezing proxy)"
    return (
        f"{alone.freeze_detected:.2f} s alone, {beside.freeze_detected:.2f} s with neighbours "
        f"({alone.freeze_reason})"
    )


ROWS: list[tuple[str, Variant, str]] = [
    ("H.264 720p, RTSP over TCP", H264_720, "tcp"),
    ("H.265 720p, RTSP over TCP", H265_720, "tcp"),
    ("H.264 720p, RTSP over UDP", H264_720, "udp"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=len(ROWS), help="first N scenarios only")
    args = parser.parse_args()
    from tests.conftest import assets_dir

    assets = assets_dir()
    with tempfile.TemporaryDirectory(prefix="edged-rtsp-") as tmp:
        root = Path(tmp)
        broker = Broker(root)
        broker.start()
        lines = [
            f"stall_timeout = {STALL_TIMEOUT:g} s, reconnect_delay = {RECONNECT_DELAY:g} s, "
            "2 dead neighbours = 2 cameras that accept TCP and never answer, same worker",
            "",
            "| scenario | first detection alone | with 2 dead neighbours | reconnect alone "
            "| reconnect with 2 dead neighbours | time to detect a freeze |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        try:
            for label, variant, transport in ROWS[: args.rows]:
                mounts = [Mount("/cam", variant)]
                with RtspServer(mounts, assets / "media", root / "media", root / "rtsp.log") as s:
                    run = root / label.split(",")[0].replace(" ", "-").replace(".", "")
                    alone = healthy_camera_run(
                        assets, run / "alone", broker, s, transport=transport
                    )
                    beside = healthy_camera_run(
                        assets, run / "dead", broker, s, dead=2, transport=transport
                    )
                lines.append(
                    f"| {label} | {alone.first_detection:.2f} s "
                    f"| {beside.first_detection:.2f} s | {alone.reconnect:.2f} s "
                    f"| {beside.reconnect:.2f} s | {freeze_cell(alone, beside)} |"
                )
                print(lines[-1], flush=True)
        finally:
            broker.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
