"""The "auto" thread counts come from the machine, and `edged run` uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from edged.config import Config, StreamConfig, WorkerConfig, parse_config
from edged.config.auto import _cgroup_quota, cores, decoder_threads, inference_threads, resolve
from tests.support.broker import Broker
from tests.support.daemon import Daemon, cpu_worker, daemon_config, video_stream, wait_until
from tests.support.mqtt import Message, Subscriber


def config_text(assets: Path, broker_url: str = "mqtt://127.0.0.1:1883", workers: int = 1) -> str:
    """Workers and streams with no thread keys at all: what a user gets by default."""
    return daemon_config(
        "auto",
        None,
        broker_url,
        health_interval=1,
        workers=[cpu_worker(assets, f"cpu{w}") for w in range(workers)],
        streams=[
            video_stream(assets, name, video, loop=True, detect_fps=2)
            for name, video in (("street", "pedestrians-720p.avi"), ("road", "traffic-720p.mp4"))
        ],
    )


def test_cores_is_the_affinity_mask_not_the_host(tmp_path: Path) -> None:
    assert cores() == len(os.sched_getaffinity(0))
    first = min(os.sched_getaffinity(0))
    code = "from edged.config.auto import cores; print(cores())"
    done = subprocess.run(
        ["taskset", "-c", str(first), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "1"


def test_a_cgroup_quota_caps_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: two cores may run at once
    assert _cgroup_quota(cpu_max) == 2
    cpu_max.write_text("max 100000\n")
    assert _cgroup_quota(cpu_max) is None
    assert _cgroup_quota(tmp_path / "absent") is None


def test_threads_share_the_cores_between_cpu_workers(assets: Path, tmp_path: Path) -> None:
    config = parse_config(config_text(assets), tmp_path / "config.toml")
    assert config.workers[0].threads == cores()  # resolved when the config is loaded

    raw = msgspec.convert(msgspec.toml.decode(config_text(assets, workers=3)), Config)
    assert raw.workers[0].threads == "auto"
    assert [w.threads for w in resolve(raw, n_cores=8).workers] == [2, 2, 2]
    assert [w.threads for w in resolve(raw, n_cores=2).workers] == [1, 1, 1]  # at least one
    fixed = WorkerConfig(name="w", model="m.onnx", threads=3)
    assert inference_threads(fixed, cpu_workers=4, n_cores=2) == 3  # a number is kept


def test_decoder_threads_share_the_cores_between_a_workers_streams() -> None:
    stream = StreamConfig(name="s", source="x.mp4", worker="w")
    assert stream.decoder_threads == "auto"
    assert decoder_threads(stream, worker_streams=1, n_cores=4) == 4
    assert decoder_threads(stream, worker_streams=2, n_cores=4) == 2
    assert decoder_threads(stream, worker_streams=6, n_cores=4) == 1
    zero = msgspec.structs.replace(stream, decoder_threads=0)  # FFmpeg's own choice stays 0
    assert decoder_threads(zero, worker_streams=1, n_cores=4) == 0


def test_check_config_prints_the_resolved_numbers(assets: Path, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(assets))
    done = subprocess.run(
        [sys.executable, "-m", "edged", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    n = cores()
    assert f"({n} cores)" in done.stdout, done.stdout
    assert f"worker cpu0: {n} inference thread(s)" in done.stdout, done.stdout
    assert f"stream road: {max(1, n // 2)} decoder thread(s)" in done.stdout, done.stdout


@pytest.mark.parametrize("pinned", [True, False], ids=["one-core", "all-cores"])
def test_edged_run_runs_one_inference_thread_per_core_it_may_use(
    assets: Path, tmp_path: Path, broker: Broker, pinned: bool
) -> None:
    allowed = os.sched_getaffinity(0)
    cpus = {min(allowed)} if pinned else allowed
    subscriber = Subscriber(broker.port)
    daemon = Daemon(tmp_path, config_text(assets, broker.url), cpus=cpus)
    daemon.start()
    try:
        with daemon.dumped_on_failure():

            def health_with_worker(messages: list[Message]) -> bool:
                return any(
                    m.topic == "edged/auto/health" and m.json()["workers"]["cpu0"]["pid"]
                    for m in messages
                )

            messages = subscriber.wait_for(health_with_worker, 60, "health with a running worker")
            health = [m.json() for m in messages if m.topic == "edged/auto/health"][-1]
            assert health["workers"]["cpu0"]["threads"] == len(cpus)
            # The worker itself says so, and it runs on the one core it was given.
            wait_until(lambda: '"worker starting"' in daemon.log(), 30, "the worker's start line")
            starting = [
                json.loads(line)
                for line in daemon.log().splitlines()
                if '"worker starting"' in line
            ]
            assert starting[-1]["threads"] == len(cpus), starting
            assert all(w.cpu_affinity() == sorted(cpus) for w in daemon.workers())
    finally:
        subscriber.close()
    assert daemon.stop(timeout=10) == 0, daemon.log()
