"""The real daemon speaks sd_notify to a real NOTIFY_SOCKET made by the test."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.supervisor.test_run_e2e import two_stream_config
from tests.support.broker import Broker
from tests.support.daemon import Daemon, wait_until
from tests.support.datagram import receiver


def test_ready_watchdog_reloading_stopping_in_order(
    tmp_path: Path, assets: Path, broker: Broker
) -> None:
    path = tmp_path / "notify.sock"
    sock = receiver(str(path), 0)
    received: list[tuple[float, str]] = []

    def drain() -> list[str]:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            received.append((time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000, data.decode()))
        return [text for _, text in received]

    def seen(prefix: str, after: int = 0) -> bool:
        return any(text.startswith(prefix) for text in drain()[after:])

    config = two_stream_config(assets, broker, tmp_path / "state")
    daemon = Daemon(tmp_path, config)
    # 0.4 s watchdog: pings every 0.2 s; no WATCHDOG_PID, so the daemon's own pid is implied
    daemon.env.update(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000")
    daemon.start()
    try:
        with daemon.dumped_on_failure():
            wait_until(lambda: seen("READY=1"), 60, "READY=1")
            ready_at = next(i for i, text in enumerate(drain()) if text.startswith("READY=1"))
            wait_until(lambda: drain()[ready_at:].count("WATCHDOG=1") >= 3, 10, "watchdog pings")
            for worker in daemon.workers():
                environ = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
                assert not any(e.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_")) for e in environ)

            mark = len(drain())
            hup_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            daemon.signal(signal.SIGHUP)
            wait_until(lambda: seen("RELOADING=1", mark), 10, "RELOADING=1")
            index, (at, reloading) = next(
                (i, r) for i, r in enumerate(received) if i >= mark and r[1].startswith("RELOADING")
            )
            fields = dict(line.split("=", 1) for line in reloading.splitlines())
            # One datagram holds both, and MONOTONIC_USEC is the system clock systemd compares
            # with: stamped after our SIGHUP and before we read the datagram.
            assert hup_at <= int(fields["MONOTONIC_USEC"]) <= at, (fields, hup_at, at)
            wait_until(lambda: seen("READY=1", index + 1), 20, "READY=1 after the reload")

            mark = len(drain())
            descendants = daemon.children()  # the workers and multiprocessing's resource tracker
            code = daemon.stop(timeout=10)
            # Nothing outlives the supervisor for systemd's KillMode=mixed to SIGKILL: checked at
            # once, without waiting, as systemd does when the main process exits.
            assert [p.pid for p in descendants if p.is_running()] == []
            assert code == 0
            assert seen("STOPPING=1", mark), drain()[mark:]
            # From STOPPING=1 on, STATUS= says what the stop does and ends with its outcome; no
            # worker count overwrites it (systemd keeps the last STATUS= after the stop).
            stop = drain()[mark:]
            stop = stop[next(i for i, text in enumerate(stop) if text.startswith("STOPPING=1")):]
            statuses = [
                line.removeprefix("STATUS=")
                for text in stop for line in text.splitlines() if line.startswith("STATUS=")
            ]
            assert statuses[0].startswith("stopping"), stop
            assert not [s for s in statuses if "workers ready" in s], stop
            assert statuses[-1].startswith("stopped: workers stopped, "), stop
    finally:
        sock.close()
    order = [text.split("\n")[0].split("=")[0] for _, text in received]
    firsts = [order.index(k) for k in ("READY", "WATCHDOG", "RELOADING", "STOPPING")]
    assert firsts == sorted(firsts), order
