"""Figures for supervision, measured on this machine with real processes and a real broker:

1. time from `kill -9` of a worker to the first detection (on MQTT) of a frame its replacement
   decoded, median of 10;
2. the supervisor's CPU use, % of one core, with 4 streams running (2 workers x 2 streams), at
   detect_fps = 5 and with the detector taking every frame it can.

Run: .venv/bin/python -m tests.supervisor.measure_restart [--kills 10] [--seconds 20]
Not a test (pytest does not collect it): it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from tests.conftest import assets_dir
from tests.support.broker import Broker
from tests.support.daemon import Daemon, wait_until
from tests.support.mqtt import Subscriber
from tests.support.supervision import (
    S,
    W,
    captured_after,
    config_text,
    detections,
    event_time,
    ready_pids,
    supervisor_events,
)

NODE = "measure"


def measure_restart(workdir: Path, broker: Broker, kills: int) -> None:
    # max_delay = delay = 0.5 s (the default first backoff): every kill in a row costs what a
    # first crash costs, instead of the doubling a crash loop earns.
    restart = {"delay": 0.5, "max_delay": 0.5, "budget": 1000}
    text = config_text(
        assets_dir(),
        broker,
        workdir / "state",
        [W("cpu0", restart=restart), W("cpu1", restart=restart)],
        [S("street", "cpu0", "street"), S("road", "cpu1", "road")],
        node=NODE,
    )
    subscriber = Subscriber(broker.port, (f"edged/{NODE}/+/detections",))
    daemon = Daemon(workdir, text)
    daemon.start()
    totals, to_spawn, to_ready = [], [], []
    try:
        for i in range(kills):
            wait_until(lambda n=i + 1: len(ready_pids(daemon, "cpu0")) >= n, 60, "cpu0 ready")
            # Let it settle so each kill hits a worker in steady detection.
            settled = time.time()
            subscriber.wait_for(
                lambda ms, t=settled: len(captured_after(ms, NODE, "street", t)) >= 5,
                30,
                "street detections",
            )
            victim = ready_pids(daemon, "cpu0")[-1]
            killed = time.time()
            psutil.Process(victim).kill()
            messages = subscriber.wait_for(
                lambda ms, t=killed: bool(captured_after(ms, NODE, "street", t)),
                60,
                "a detection from the replacement",
            )
            first = captured_after(messages, NODE, "street", killed)[0].received
            wait_until(lambda n=i + 2: len(ready_pids(daemon, "cpu0")) >= n, 30, "replacement")
            spawned = event_time(supervisor_events(daemon, "worker spawned", "cpu0")[-1])
            ready = event_time(supervisor_events(daemon, "worker ready", "cpu0")[-1])
            totals.append(first - killed)
            to_spawn.append(spawned - killed)
            to_ready.append(ready - killed)
        road = detections(subscriber.snapshot(), NODE, "road")
    finally:
        subscriber.close()
        code = daemon.stop()
    print(
        f"restart: kill -9 -> first detection from the new worker: median "
        f"{statistics.median(totals):.2f} s over {kills} kills (min {min(totals):.2f}, max "
        f"{max(totals):.2f}); of which backoff+spawn {statistics.median(to_spawn):.2f} s, "
        f"to READY {statistics.median(to_ready):.2f} s (restart delay 0.5 s, detect_fps 5, "
        f"{psutil.cpu_count()} CPUs); the other stream published {len(road)} detections "
        f"over the run; exit {code}"
    )


def measure_cpu(workdir: Path, broker: Broker, seconds: float, detect_fps: float) -> None:
    text = config_text(
        assets_dir(),
        broker,
        workdir / "state",
        [W("cpu0"), W("cpu1")],
        [
            S("street", "cpu0", "street", detect_fps),
            S("road", "cpu0", "road", detect_fps),
            S("street2", "cpu1", "street", detect_fps),
            S("road2", "cpu1", "road", detect_fps),
        ],
        node=NODE,
        health_interval=5,
    )
    subscriber = Subscriber(broker.port, (f"edged/{NODE}/+/detections",))
    daemon = Daemon(workdir, text)
    daemon.start()
    try:
        wait_until(lambda: all(ready_pids(daemon, w) for w in ("cpu0", "cpu1")), 60, "ready")
        subscriber.wait_for(
            lambda ms: len({m.topic for m in ms}) == 4, 30, "detections on all 4 streams"
        )
        time.sleep(2.0)  # past the streams' start-up
        me = psutil.Process(daemon.pid)
        before, count0, t0 = me.cpu_times(), len(subscriber.snapshot()), time.monotonic()
        time.sleep(seconds)  # the measurement window itself
        after, count1, t1 = me.cpu_times(), len(subscriber.snapshot()), time.monotonic()
    finally:
        subscriber.close()
        code = daemon.stop()
    busy = (after.user - before.user) + (after.system - before.system)
    rate = "every frame it can" if detect_fps == 0 else f"detect_fps {detect_fps:g}"
    print(
        f"supervisor CPU: {100 * busy / (t1 - t0):.2f} % of one core with 4 streams ({rate}), "
        f"{(count1 - count0) / (t1 - t0):.1f} detection messages/s published, over "
        f"{t1 - t0:.0f} s on {psutil.cpu_count()} CPUs; exit {code}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edged-measure-") as tmp:
        root = Path(tmp)
        broker = Broker(root)
        broker.start()
        try:
            for name, run in (
                ("restart", lambda d: measure_restart(d, broker, args.kills)),
                ("cpu5", lambda d: measure_cpu(d, broker, args.seconds, 5.0)),
                ("cpu0", lambda d: measure_cpu(d, broker, args.seconds, 0.0)),
            ):
                workdir = root / name
                workdir.mkdir()
                run(workdir)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
