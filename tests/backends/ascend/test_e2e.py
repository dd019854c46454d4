"""End to end on the pyACL emulator: `edged run` with a cpu and an ascend worker on the same
video gives the same detections on the same frames; the emulator's reports are clean after a
stop, and after a worker was killed with SIGKILL and restarted."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.acl_emulator import (
    emulator_env,
    reports,
    stand_in_cpu_s,
)
from tests.support.agreement import agree
from tests.support.broker import Broker
from tests.support.daemon import (
    Daemon,
    TomlValue,
    cpu_worker,
    daemon_config,
    video_stream,
    wait_until,
)
from tests.support.mqtt import Message, Subscriber

FRAMES = 30


def npu_worker(om: Path, **keys: TomlValue) -> dict[str, TomlValue]:
    return {"name": "npu0", "backend": "ascend", "model": om, "heartbeat_timeout": 20, **keys}


def road(assets: Path, name: str, worker: str, **keys: TomlValue) -> dict[str, TomlValue]:
    """The traffic video, read as fast as it decodes."""
    return video_stream(
        assets, name, "traffic-720p.mp4", worker, realtime=False, min_score=0.4, **keys
    )


def config(assets: Path, om: Path, broker: Broker, state: Path, *, with_cpu: bool) -> str:
    """The road (looped) on an ascend worker, and once more on a CPU worker if `with_cpu`."""
    workers = [npu_worker(om)]
    streams = [road(assets, "road-npu", "npu0", loop=True)]
    if with_cpu:
        workers.append(cpu_worker(assets, threads=1))
        streams.append(road(assets, "road-cpu", "cpu0"))
    return daemon_config("e2e", state, broker.url, workers=workers, streams=streams)


def frames(messages: list[Message], stream: str) -> dict[int, Any]:
    out = {}
    for message in messages:
        if message.topic == f"edged/e2e/{stream}/detections":
            payload = message.json()
            out.setdefault(payload["frame"], payload["detections"])
    return out


def as_found(detections: Any) -> list[tuple[str, float, list[float]]]:
    return [(d["label"], d["score"], d["box"]) for d in detections]


def started(tmp_path: Path, text: str, run_mode: str) -> Daemon:
    daemon = Daemon(tmp_path, text)
    daemon.env.update(emulator_env(tmp_path / "acl", run_mode=run_mode, stats_interval="0.1"))
    daemon.start()
    return daemon


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


class Window:
    """Host CPU per frame of the cpu and the ascend worker over the same stretch of time; the
    ascend worker's figure leaves out what the emulator spent standing in for the device."""

    def __init__(self, daemon: Daemon, acl_dir: Path, subscriber: Subscriber) -> None:
        workers = daemon.workers()
        npu = [w for w in workers if (acl_dir / f"acl-{w.pid}.stats.json").exists()]
        assert len(workers) == 2 and len(npu) == 1, (workers, list(acl_dir.iterdir()))
        self.npu, self.cpu = npu[0], next(w for w in workers if w.pid != npu[0].pid)
        self.acl_dir, self.subscriber = acl_dir, subscriber
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, int, int]:
        messages = list(self.subscriber.messages)
        return (
            cpu_s(self.npu), stand_in_cpu_s(self.acl_dir, self.npu.pid), cpu_s(self.cpu),
            len(frames(messages, "road-npu")), len(frames(messages, "road-cpu")),
        )

    def per_frame_ms(self) -> tuple[float, float, float]:
        """(ascend host, ascend stand-in, cpu worker) core-ms a frame since the start."""
        end = self._sample()
        npu_cpu, stand_in, cpu_cpu, npu_frames, cpu_frames = (
            b - a for a, b in zip(self.start, end, strict=True)
        )
        assert npu_frames > 0 and cpu_frames > 0, (self.start, end)
        return (1000 * (npu_cpu - stand_in) / npu_frames, 1000 * stand_in / npu_frames,
                1000 * cpu_cpu / cpu_frames)


@pytest.mark.parametrize("run_mode", ["ACL_HOST", "ACL_DEVICE"])
def test_ascend_worker_detects_what_the_cpu_worker_detects(
    tmp_path: Path, assets: Path, om: Path, broker: Broker, run_mode: str
) -> None:
    subscriber = Subscriber(broker.port)
    text = config(assets, om, broker, tmp_path / "state", with_cpu=True)
    daemon = started(tmp_path, text, run_mode)
    try:
        with daemon.dumped_on_failure():

            def enough(messages: list[Message]) -> bool:
                npu, cpu = frames(messages, "road-npu"), frames(messages, "road-cpu")
                return len(set(npu) & set(cpu) & set(range(1, FRAMES + 1))) >= FRAMES

            messages = subscriber.wait_for(enough, 180, f"{FRAMES} frames on both workers")
            window = Window(daemon, tmp_path / "acl", subscriber)
            counted = len(subscriber.messages)
            def forty_more(ms: list[Message]) -> bool:
                return all(len(frames(ms[counted:], f"road-{w}")) >= 40 for w in ("npu", "cpu"))

            subscriber.wait_for(forty_more, 180, "40 more frames on both workers")
            host_ms, stand_in_ms, cpu_ms = window.per_frame_ms()
    finally:
        subscriber.close()
    code = daemon.stop(timeout=20)
    assert code == 0, daemon.log()
    npu, cpu = frames(messages, "road-npu"), frames(messages, "road-cpu")
    common = sorted(set(npu) & set(cpu) & set(range(1, FRAMES + 1)))
    agreement = agree([as_found(cpu[f]) for f in common], [as_found(npu[f]) for f in common])
    print(f"{run_mode}: {len(common)} frames, {agreement.line()}")
    print(f"{run_mode}: worker CPU a frame, same window: ascend host {host_ms:.2f} core-ms "
          f"(emulated device {stand_in_ms:.2f} core-ms left out), cpu backend {cpu_ms:.2f}")
    # The point of the NPU path: the host does the glue, not the decode, resize and inference.
    assert 0 < host_ms < cpu_ms / 2, (host_ms, stand_in_ms, cpu_ms)
    assert agreement.reference >= 3 * FRAMES  # cars, trucks: several a frame
    assert agreement.matched >= 0.9 * agreement.reference, agreement.line()
    assert agreement.mean_iou > 0.9, agreement.line()
    found = reports(tmp_path / "acl")
    assert len(found) == 1, found  # the ascend worker's; the supervisor never touched ACL
    assert found[0]["run_mode"] == run_mode and found[0]["finalized"]
    assert found[0]["violations"] == [] and found[0]["leaks"] == [], found[0]


def test_after_a_sigkill_and_a_restart_the_reports_stay_clean(
    tmp_path: Path, assets: Path, om: Path, broker: Broker
) -> None:
    subscriber = Subscriber(broker.port)
    text = config(assets, om, broker, tmp_path / "state", with_cpu=False)
    daemon = started(tmp_path, text, "ACL_HOST")
    try:
        with daemon.dumped_on_failure():
            subscriber.wait_for(lambda ms: len(frames(ms, "road-npu")) >= 5, 120,
                                "detections from the ascend worker")
            (worker,) = daemon.workers()
            killed = worker.pid
            os.kill(killed, signal.SIGKILL)
            wait_until(lambda: [w.pid for w in daemon.workers()] not in ([], [killed]), 60,
                       "a new ascend worker")
            (restarted,) = daemon.workers()
            count = len(subscriber.messages)
            subscriber.wait_for(
                lambda ms: len(frames(ms[count:], "road-npu")) >= 5, 120,
                "detections from the restarted worker",
            )
    finally:
        subscriber.close()
    code = daemon.stop(timeout=20)
    assert code == 0, daemon.log()
    found = {r["pid"]: r for r in reports(tmp_path / "acl")}
    # The killed worker wrote nothing (the driver frees a dead process's device memory); the
    # one that replaced it stopped cleanly: everything released, no rule broken.
    assert killed not in found
    assert restarted.pid in found, (found.keys(), restarted.pid)
    report = found[restarted.pid]
    assert report["finalized"] and report["violations"] == [] and report["leaks"] == [], report


def test_frames_of_several_streams_share_one_inference(
    tmp_path: Path, assets: Path, om: Path, broker: Broker
) -> None:
    text = daemon_config(
        "e2e",
        tmp_path / "state",
        broker.url,
        workers=[npu_worker(om, batch=4)],
        streams=[road(assets, f"road{i}", "npu0") for i in range(3)],
    )
    subscriber = Subscriber(broker.port)
    daemon = started(tmp_path, text, "ACL_HOST")
    try:
        with daemon.dumped_on_failure():
            subscriber.wait_for(
                lambda ms: all(len(frames(ms, f"road{i}")) >= 20 for i in range(3)), 180,
                "20 frames on each of three streams",
            )
    finally:
        subscriber.close()
    assert daemon.stop(timeout=20) == 0, daemon.log()
    (report,) = reports(tmp_path / "acl")
    batches = {int(k): v for k, v in report["executes_by_batch"].items()}
    print(f"executes by batch size: {batches}")
    # Three streams read as fast as they decode keep frames waiting: most inferences take
    # more than one (on the 4 gear), none more than the config's batch.
    assert max(batches) <= 4 and sum(v for k, v in batches.items() if k > 1) > 0, batches
    assert report["violations"] == [] and report["leaks"] == [], report


def test_without_pyacl_the_worker_is_a_boot_error_backed_off_not_a_crash_loop(
    tmp_path: Path, assets: Path, om: Path, broker: Broker
) -> None:
    text = config(assets, om, broker, tmp_path / "state", with_cpu=False)
    daemon = Daemon(tmp_path, text)  # no emulator on PYTHONPATH: `import acl` fails
    daemon.env["PYTHONPATH"] = ""
    daemon.start()
    try:
        with daemon.dumped_on_failure():
            wait_until(lambda: "worker will restart" in daemon.log(), 60, "the first backoff")
            log = [json.loads(line) for line in daemon.log().splitlines()
                   if line.startswith("{")]
            (backoff,) = [e for e in log if e.get("event") == "worker will restart"]
            assert "CANN toolkit" in backoff["reason"] and "set_env.sh" in backoff["reason"]
            assert backoff["reason"].startswith("exit code 3"), backoff  # EXIT_BOOT_ERROR
            # boot_error_delay (5 s, +-20 % jitter), not the 0.5 s of a crash.
            assert backoff["retry_in_s"] >= 4.0, backoff
    finally:
        assert daemon.stop(timeout=20) == 0, daemon.log()
