"""Helpers for tests that supervise real workers: configs, the daemon's JSON log, MQTT gaps."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.broker import Broker
from tests.support.daemon import (
    Daemon,
    Table,
    TomlValue,
    cpu_worker,
    daemon_config,
    video_stream,
)
from tests.support.mqtt import Message

VIDEOS = {"street": "pedestrians-720p.avi", "road": "traffic-720p.mp4"}


@dataclass(frozen=True)
class W:
    """A `[[workers]]` table; `model` None is the shared YOLOX-nano."""

    name: str
    model: Path | None = None
    heartbeat_timeout: float = 10.0
    ready_timeout: float = 60.0
    # Its `[workers.restart]` table, e.g. {"delay": 0.1, "budget": 50}; empty: the defaults.
    restart: Table = field(default_factory=dict)


@dataclass(frozen=True)
class S:
    """A `[[streams]]` table; `video` names one of VIDEOS (looped, in real time)."""

    name: str
    worker: str
    video: str = "street"
    detect_fps: float = 5.0


def config_text(
    assets: Path,
    broker: Broker,
    state_dir: Path,
    workers: list[W],
    streams: list[S],
    *,
    node: str = "sv",
    health_interval: float = 30.0,
) -> str:
    return daemon_config(
        node,
        state_dir,
        broker.url,
        health_interval=health_interval,
        workers=[_worker_table(assets, w) for w in workers],
        streams=[
            video_stream(
                assets,
                s.name,
                VIDEOS[s.video],
                s.worker,
                loop=True,
                detect_fps=s.detect_fps,
                min_score=0.4,
            )
            for s in streams
        ],
    )


def _worker_table(assets: Path, w: W) -> dict[str, TomlValue]:
    table = cpu_worker(
        assets,
        w.name,
        threads=1,
        heartbeat_timeout=w.heartbeat_timeout,
        ready_timeout=w.ready_timeout,
    )
    if w.model is not None:
        table["model"] = w.model
    if w.restart:
        table["restart"] = w.restart
    return table


def log_events(daemon: Daemon) -> list[dict[str, Any]]:
    """Every JSON log line the supervisor and its workers wrote so far (others skipped)."""
    events = []
    for line in daemon.log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a partial last line, or a faulthandler traceback
        if isinstance(event, dict):
            events.append(event)
    return events


def supervisor_events(daemon: Daemon, event: str, worker: str) -> list[dict[str, Any]]:
    """The supervisor's log events named `event` about `worker`, oldest first."""
    return [
        e
        for e in log_events(daemon)
        if e.get("process") == "supervisor"
        and e.get("event") == event
        and e.get("worker") == worker
    ]


def event_time(event: dict[str, Any]) -> float:
    """A log event's timestamp as seconds since the epoch (comparable to time.time())."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def ready_pids(daemon: Daemon, worker: str) -> list[int]:
    """Pids of `worker`'s processes that reported READY, oldest first."""
    return [int(e["pid"]) for e in supervisor_events(daemon, "worker ready", worker)]


def detections(messages: list[Message], node: str, stream: str) -> list[Message]:
    return [m for m in messages if m.topic == f"edged/{node}/{stream}/detections"]


def captured_after(messages: list[Message], node: str, stream: str, t: float) -> list[Message]:
    """Detections of frames captured after `t` (time.time()): not from a worker killed at `t`."""
    return [m for m in detections(messages, node, stream) if m.json()["ts_ms"] / 1000.0 > t]


def gaps(messages: list[Message]) -> list[float]:
    """Seconds between consecutive arrivals."""
    times = [m.received for m in messages]
    return [b - a for a, b in itertools.pairwise(times)]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def garbage_model(path: Path) -> Path:
    """A file named like a model that ONNX Runtime cannot load (a truncated download)."""
    path.write_bytes(b"\x08\x07\x12\x04edged" + os.urandom(2048))
    return path
