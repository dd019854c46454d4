"""Notifier against real AF_UNIX datagram sockets: a path in tmp_path and an abstract '@' name."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.systemd.notify import Notifier, socket_address
from edged.systemd.watchdog import (
    extending_timeout,
    ping_watchdog,
    watchdog_blocker,
)
from tests.support.datagram import receiver


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[socket.socket, str]]:
    """A bound receiver and the NOTIFY_SOCKET value that names it."""
    if request.param == "path":
        value = str(tmp_path / "notify.sock")
        sock = receiver(value, 10)
    else:
        value = f"@edged-test-{uuid.uuid4().hex}"
        sock = receiver("\0" + value[1:], 10)
    yield sock, value
    sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def _drained(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(10)
    return out


def test_lifecycle_messages_arrive_in_order(notify_socket: tuple[socket.socket, str]) -> None:
    sock, value = notify_socket
    env = {"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier(env)
    assert n.enabled
    assert n.watchdog_interval == 15.0

    assert n.ready("2/2 workers up, mqtt connected")
    assert _recv(sock) == ["READY=1", "STATUS=2/2 workers up, mqtt connected"]
    assert n.watchdog()
    assert _recv(sock) == ["WATCHDOG=1"]

    # The system-wide clock systemd compares against (not time since process start): the
    # stamp lies between two readings of CLOCK_MONOTONIC taken around the call.
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading("reloading config")
    reloading = _recv(sock)  # ONE datagram holds RELOADING=1 and MONOTONIC_USEC
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert reloading[0] == "RELOADING=1"
    assert reloading[1].startswith("MONOTONIC_USEC=")
    assert before <= int(reloading[1].removeprefix("MONOTONIC_USEC=")) <= after
    assert reloading[2] == "STATUS=reloading config"

    assert n.ready()
    assert _recv(sock) == ["READY=1"]
    assert n.status("reload failed:\nbad key; running gen 7")
    assert _recv(sock) == ["STATUS=reload failed: bad key; running gen 7"]
    assert n.extend_timeout(90)
    assert _recv(sock) == ["EXTEND_TIMEOUT_USEC=90000000"]
    assert n.stopping("stopping")
    assert _recv(sock) == ["STOPPING=1", "STATUS=stopping"]
    assert _drained(sock) == []


def test_reloading_without_status_is_still_one_datagram(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, value = notify_socket
    n = Notifier({"NOTIFY_SOCKET": value})
    n.reloading()
    fields = _recv(sock)
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=")
    assert len(fields) == 2


def test_environment_is_popped_so_children_do_not_inherit(tmp_path: Path) -> None:
    value = str(tmp_path / "notify.sock")
    sock = receiver(value, 10)
    # A real process: Notifier() reads os.environ, then spawns a child and reports what it sees.
    code = (
        "import json, multiprocessing, os\n"
        "from edged.systemd.notify import Notifier\n"
        "def child(q):\n"
        "    keys = ('NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID')\n"
        "    q.put({k: os.environ.get(k) for k in keys})\n"
        "if __name__ == '__main__':\n"
        "    n = Notifier()\n"
        "    ctx = multiprocessing.get_context('spawn')\n"
        "    q = ctx.Queue()\n"
        "    p = ctx.Process(target=child, args=(q,))\n"
        "    p.start()\n"
        "    seen = q.get(timeout=60)\n"
        "    p.join(60)\n"
        "    n.ready(json.dumps(seen) + ' ' + str(n.watchdog_interval))\n"
    )
    script = tmp_path / "parent.py"
    script.write_text(code)
    env = dict(os.environ, NOTIFY_SOCKET=value, WATCHDOG_USEC="4000000")
    env.pop("WATCHDOG_PID", None)
    subprocess.run([sys.executable, str(script)], env=env, timeout=120, check=True)
    fields = _recv(sock)
    sock.close()
    assert fields[0] == "READY=1"
    assert fields[1] == (
        'STATUS={"NOTIFY_SOCKET": null, "WATCHDOG_USEC": null, "WATCHDOG_PID": null} 2.0'
    )


def test_watchdog_for_another_pid_is_ignored(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    n = Notifier(env)
    assert n.watchdog_interval is None
    assert env == {}


def test_no_socket_means_disabled_and_silent() -> None:
    n = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.watchdog_interval is None
    assert not n.ready("x")
    assert not n.watchdog()


def test_send_errors_are_ignored(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.enabled
    assert not n.ready()  # ENOENT: reported as False, never raised


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == "\0abc"
    assert socket_address("vsock:2:1234") is None
    assert socket_address("@") is None


def test_watchdog_gating_decisions() -> None:
    assert watchdog_blocker({"cpu0": 1.0, "npu0": 2.0}, 5.0, publisher_alive=True) is None
    assert watchdog_blocker({}, 5.0, publisher_alive=False) == "mqtt publisher task is not running"
    assert watchdog_blocker({"cpu0": 6.0, "npu0": 1.0}, {"cpu0": 5.0, "npu0": 5.0}, True) == (
        "worker heartbeat late: cpu0 6.0s > 5.0s"
    )
    # No workers expected: the supervisor alone.
    assert watchdog_blocker({}, 5.0, publisher_alive=True) is None


def test_pings_stop_while_unhealthy_and_resume(notify_socket: tuple[socket.socket, str]) -> None:
    sock, value = notify_socket
    n = Notifier({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "40000"})  # ping every 20 ms
    assert n.watchdog_interval == 0.02
    state: dict[str, object] = {"reason": None, "unhealthy_checks": 0}

    def healthy() -> str | None:
        if state["reason"] is not None:
            state["unhealthy_checks"] = int(str(state["unhealthy_checks"])) + 1
        return state["reason"]  # type: ignore[return-value]

    async def wait_for(cond: object, what: str) -> None:
        deadline = time.monotonic() + 10
        while not cond():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.005)

    async def main() -> None:
        task = asyncio.create_task(ping_watchdog(n, healthy))
        loop = asyncio.get_running_loop()
        for _ in range(3):
            assert await loop.run_in_executor(None, sock.recv, 4096) == b"WATCHDOG=1"
        state["reason"] = "worker heartbeat late: cpu0"
        # Once one unhealthy check has happened, no ping can be in flight any more.
        await wait_for(lambda: int(str(state["unhealthy_checks"])) >= 1, "first unhealthy check")
        _drained(sock)
        await wait_for(lambda: int(str(state["unhealthy_checks"])) >= 5, "five unhealthy checks")
        assert _drained(sock) == []
        state["reason"] = None
        assert await loop.run_in_executor(None, sock.recv, 4096) == b"WATCHDOG=1"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_no_watchdog_means_no_ping_task(notify_socket: tuple[socket.socket, str]) -> None:
    _, value = notify_socket
    n = Notifier({"NOTIFY_SOCKET": value})
    asyncio.run(asyncio.wait_for(ping_watchdog(n, lambda: None), 10))  # returns at once


def test_extending_timeout_repeats_while_the_block_runs(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, value = notify_socket
    n = Notifier({"NOTIFY_SOCKET": value})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with extending_timeout(n, 0.05):
            for _ in range(3):
                data = await loop.run_in_executor(None, sock.recv, 4096)
                assert data == b"EXTEND_TIMEOUT_USEC=50000"
        # The repeating task is cancelled: the next loop turns let it finish, and no more come.
        await asyncio.sleep(0)
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "systemd-extend-timeout"]
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(t.cancelled() for t in tasks)

    asyncio.run(main())
