"""Supervision with real processes: `edged run`, spawned workers, the real model and videos, and a
real mosquitto. Workers are killed (SIGKILL), frozen (SIGSTOP), given a model that cannot load, and
the daemon is stopped under load; the tests watch what reaches MQTT and what the log says.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from edged.supervisor.daemon import STOP_GRACE_S
from edged.supervisor.escalation import KILL_AFTER_S
from tests.support.broker import Broker
from tests.support.daemon import Daemon, Table, all_gone, shm_entries, wait_until
from tests.support.mqtt import Message, Subscriber
from tests.support.supervision import (
    S,
    W,
    captured_after,
    config_text,
    detections,
    event_time,
    fd_count,
    gaps,
    garbage_model,
    log_events,
    ready_pids,
    supervisor_events,
)

NODE = "sv"


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    s = Subscriber(broker.port)
    yield s
    s.close()


def start(tmp_path: Path, text: str) -> Daemon:
    daemon = Daemon(tmp_path, text)
    daemon.start()
    return daemon


def wait_ready(daemon: Daemon, *workers: str, count: int = 1, timeout: float = 60) -> None:
    def ready() -> bool:
        return all(len(ready_pids(daemon, w)) >= count for w in workers)

    try:
        wait_until(ready, timeout, f"{workers} ready {count} time(s)")
    except AssertionError:
        print(daemon.log())
        raise


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def two_workers(
    assets: Path, broker: Broker, tmp_path: Path, *, heartbeat_timeout: float = 10.0
) -> str:
    return config_text(
        assets,
        broker,
        tmp_path / "state",
        [W(name, heartbeat_timeout=heartbeat_timeout) for name in ("cpu0", "cpu1")],
        [S("street", "cpu0", "street"), S("road", "cpu1", "road")],
        node=NODE,
    )


def test_kill9_worker_is_replaced_and_the_other_stream_has_no_gap(
    tmp_path: Path, assets: Path, broker: Broker, subscriber: Subscriber
) -> None:
    daemon = start(tmp_path, two_workers(assets, broker, tmp_path))
    with daemon.dumped_on_failure():
        wait_ready(daemon, "cpu0", "cpu1")
        subscriber.wait_for(
            lambda ms: all(len(detections(ms, NODE, s)) >= 10 for s in ("street", "road")),
            30,
            "10 detections on each stream",
        )
        victim = ready_pids(daemon, "cpu0")[-1]
        bystander = ready_pids(daemon, "cpu1")[-1]
        killed_at = time.time()
        psutil.Process(victim).kill()

        # Replaced: a new cpu0 process says READY, and its stream's detections resume.
        wait_ready(daemon, "cpu0", count=2, timeout=30)
        messages = subscriber.wait_for(
            lambda ms: len(captured_after(ms, NODE, "street", killed_at)) >= 5,
            30,
            "street detections from the new worker",
        )
        new = ready_pids(daemon, "cpu0")[-1]
        assert new != victim and gone(victim)
        died = supervisor_events(daemon, "worker died", "cpu0")
        assert len(died) == 1, died
        assert died[0]["reason"].startswith("killed by SIGKILL (out of memory?"), died[0]
        assert supervisor_events(daemon, "worker will restart", "cpu0")

        # The other worker was never touched and its stream never paused: its gaps while cpu0
        # was down and coming back look like its normal cadence (5 detections a second).
        assert ready_pids(daemon, "cpu1") == [bystander]
        resumed = captured_after(messages, NODE, "street", killed_at)[0].received
        road = detections(messages, NODE, "road")
        before = [m for m in road if m.received < killed_at]
        during = [m for m in road if killed_at - 0.5 <= m.received <= resumed + 0.5]
        normal = statistics.median(gaps(before))
        worst = max(gaps(during))
        assert worst < max(1.0, 5 * normal), (worst, normal)
        seqs = [m.json()["seq"] for m in road]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost either
        print(
            f"kill -9 -> new worker's first detection: {resumed - killed_at:.2f} s; "
            f"road gaps: normal {normal:.3f} s, worst {worst:.3f} s"
        )
    assert daemon.stop(timeout=10) == 0


def test_sigstopped_worker_is_declared_hung_and_replaced(
    tmp_path: Path, assets: Path, broker: Broker, subscriber: Subscriber
) -> None:
    timeout = 3.0
    daemon = start(tmp_path, two_workers(assets, broker, tmp_path, heartbeat_timeout=timeout))
    with daemon.dumped_on_failure():
        wait_ready(daemon, "cpu0", "cpu1")
        subscriber.wait_for(
            lambda ms: len(detections(ms, NODE, "street")) >= 5, 30, "street detections"
        )
        victim = ready_pids(daemon, "cpu0")[-1]
        stopped_at = time.time()
        psutil.Process(victim).suspend()  # SIGSTOP: alive, silent, deaf to SIGABRT

        wait_until(
            lambda: bool(supervisor_events(daemon, "worker died", "cpu0")), 20, "cpu0 declared dead"
        )
        (hung,) = supervisor_events(
            daemon, "worker hung; aborting it with SIGABRT (stack traces follow)", "cpu0"
        )
        # Declared after the SIGSTOP, for the silence. (The exact deadline arithmetic is
        # tested on virtual time in test_handle.py; here, on a loaded box, only the order.)
        assert event_time(hung) > stopped_at
        assert hung["reason"] == f"no heartbeat for {timeout:g} s"
        # A stopped process does not act on SIGABRT: the escalation must end in SIGKILL.
        (killed,) = supervisor_events(
            daemon, "hung worker still there after SIGABRT; killing it", "cpu0"
        )
        # SIGKILL never before kill_after (3 s) past the SIGABRT; later only if the box is slow.
        assert event_time(killed) - event_time(hung) >= KILL_AFTER_S - 0.05
        (died,) = supervisor_events(daemon, "worker died", "cpu0")
        assert died["reason"] == "no heartbeat for 3 s; killed by SIGKILL from the supervisor"
        assert gone(victim)

        wait_ready(daemon, "cpu0", count=2, timeout=30)
        subscriber.wait_for(
            lambda ms: len(captured_after(ms, NODE, "street", event_time(died))) >= 3,
            30,
            "street detections from the replacement",
        )
        assert len(ready_pids(daemon, "cpu1")) == 1  # the other worker was left alone
    assert daemon.stop(timeout=10) == 0


def test_model_that_fails_to_load_backs_off_and_is_reported_failed(
    tmp_path: Path, assets: Path, broker: Broker, subscriber: Subscriber
) -> None:
    budget, failed_retry = 3, 3.0
    restart: Table = {
        "delay": 0.1,
        "boot_error_delay": 0.4,
        "budget": budget,
        "window": 120,
        "failed_retry": failed_retry,
    }
    bad = garbage_model(tmp_path / "truncated.onnx")
    text = config_text(
        assets,
        broker,
        tmp_path / "state",
        [W("bad", model=bad, restart=restart), W("good")],
        [S("street", "bad", "street"), S("road", "good", "road")],
        node=NODE,
        health_interval=1,
    )
    daemon = start(tmp_path, text)
    with daemon.dumped_on_failure():
        # Failed after the budget, then retried once at the slow cadence, and failed again.
        wait_until(
            lambda: len(supervisor_events(daemon, "worker failed; retrying slowly", "bad")) >= 2,
            60,
            "the bad worker to be failed twice",
        )
        spawned = [event_time(e) for e in supervisor_events(daemon, "worker spawned", "bad")]
        died = supervisor_events(daemon, "worker died", "bad")
        will = supervisor_events(daemon, "worker will restart", "bad")
        failed = supervisor_events(daemon, "worker failed; retrying slowly", "bad")
        for event in died:
            assert event["reason"].startswith(
                "exit code 3: could not load its model or open its device: cannot load model"
            ), event
        # No hot loop: budget + 1 starts, then one slow retry; never READY.
        assert len(spawned) == budget + 2, spawned
        assert len(will) == budget and [e["restarts_in_window"] for e in will] == [1, 2, 3]
        assert failed[0]["restarts_in_window"] == budget + 1
        assert ready_pids(daemon, "bad") == []
        # Backoff: the chosen delay doubles (0.4, 0.8, 1.6 s, +-20 % jitter), then the slow
        # cadence; each is honoured: the next start never comes sooner (no hot loop). How much
        # later depends on the box's load; test_handle.py checks the exact times.
        delays = [e["retry_in_s"] for e in will] + [failed[0]["retry_in_s"]]
        for delay, expected in zip(delays, (0.4, 0.8, 1.6, failed_retry), strict=True):
            assert 0.8 * expected - 0.01 <= delay <= 1.2 * expected + 0.01, delays
        waits = [spawned[i + 1] - event_time(died[i]) for i in range(budget + 1)]
        for wait, delay in zip(waits, delays, strict=True):
            assert wait >= delay - 0.05, (waits, delays)

        # Reported: the worker and its stream are `failed` in the health message and the stream's
        # retained status; the good worker's stream is online and detecting all along.
        def failed_healths(ms: list[Message]) -> list[dict[str, Any]]:
            healths = [m.json() for m in ms if m.topic == f"edged/{NODE}/health"]
            return [
                h
                for h in healths
                if h["workers"]["bad"]["state"] == "failed"
                and h["streams"]["street"]["status"] == "failed"
            ]

        messages = subscriber.wait_for(
            lambda ms: bool(failed_healths(ms)), 10, "health saying `failed`"
        )
        health = failed_healths(messages)[-1]
        assert health["workers"]["bad"]["restarts"] >= budget + 1
        assert health["workers"]["bad"]["pid"] is None  # no process while it waits, failed
        assert "could not load its model" in health["workers"]["bad"]["last_exit"]
        assert health["streams"]["street"]["reason"] == "worker_failed"
        assert "could not load its model" in health["streams"]["street"]["detail"]
        statuses = [m.json() for m in messages if m.topic == f"edged/{NODE}/street/status"]
        failed_status = [st for st in statuses if st["status"] == "failed"]
        assert failed_status, statuses
        assert failed_status[0]["reason"] == "worker_failed", statuses
        assert failed_status[0]["detail"].startswith("worker bad failed: exit code 3"), statuses
        assert len(detections(messages, NODE, "road")) >= 10
        assert health["workers"]["good"]["state"] == "ready"
    assert daemon.stop(timeout=10) == 0


def test_sigterm_under_load_after_many_crashes_leaks_nothing(
    tmp_path: Path, assets: Path, broker: Broker, subscriber: Subscriber
) -> None:
    cycles = 6
    shm_before = shm_entries()
    text = config_text(
        assets,
        broker,
        tmp_path / "state",
        [W(n, restart={"delay": 0.05, "max_delay": 0.1, "budget": 100}) for n in ("cpu0", "cpu1")],
        # Full load: every frame the detector can take.
        [S("street", "cpu0", "street", detect_fps=0), S("road", "cpu1", "road", detect_fps=0)],
        node=NODE,
    )
    daemon = start(tmp_path, text)
    with daemon.dumped_on_failure():
        wait_ready(daemon, "cpu0", "cpu1")
        fds: list[int] = []
        for cycle in range(cycles):
            worker = ("cpu0", "cpu1")[cycle % 2]
            psutil.Process(ready_pids(daemon, worker)[-1]).kill()
            wait_ready(daemon, worker, count=cycle // 2 + 2, timeout=30)
            fds.append(fd_count(daemon.pid))
        subscriber.wait_for(
            lambda ms: all(len(detections(ms, NODE, s)) >= 20 for s in ("street", "road")),
            30,
            "detections on both streams",
        )
        # After the first cycle everything lazily created (executor threads, the resource
        # tracker's pipe) exists; later cycles must not add a descriptor each.
        assert fds[-1] <= fds[0] + 1, fds
        children = daemon.children()
        assert len(daemon.workers()) == 2
    stopping = time.monotonic()
    code = daemon.stop(timeout=10)
    took = time.monotonic() - stopping
    assert code == 0, daemon.log()  # within daemon.stop's deadline, under load
    all_gone(children, timeout=5)
    assert shm_entries() - shm_before == set()
    print(f"supervisor fds after each crash cycle: {fds}; stopped under load in {took:.2f} s")


def test_second_signal_while_stopping_kills_stragglers_at_once(
    tmp_path: Path, assets: Path, broker: Broker
) -> None:
    daemon = start(tmp_path, two_workers(assets, broker, tmp_path))
    with daemon.dumped_on_failure():
        wait_ready(daemon, "cpu0", "cpu1")
        children = daemon.children()
        # A frozen worker ignores the Shutdown message: stopping would wait the whole grace.
        psutil.Process(ready_pids(daemon, "cpu0")[-1]).suspend()
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        wait_until(
            lambda: any(e.get("event") == "stopping" for e in log_events(daemon)),
            5,
            "the supervisor to start stopping",
        )
        daemon.signal(signal.SIGINT)
        code = daemon.stop(timeout=10)
        took = time.monotonic() - started
    assert code == 0, daemon.log()
    # Killed because of the second signal, not at the end of the grace period.
    assert not supervisor_events(daemon, "worker did not stop in time; killing it", "cpu0")
    print(f"stopped {took:.2f} s after the first signal (grace {STOP_GRACE_S:g} s)")
    all_gone(children, timeout=5)
    assert supervisor_events(daemon, "second signal; killing the worker now", "cpu0")
