"""A throw-away MQTT broker on a free local port: mosquitto for `edged bench` and the test suite,
and the one way any broker binary is started, waited on and stopped (the tests' nats-server,
tests/support/nats.py, is the same `ChildBroker` with another config).

Runs in the process that needs a broker (the bench, a test), which starts the broker as a child.
`stop()` belongs in a `finally`; a broker left behind by a SIGKILL of its parent listens only on
127.0.0.1 and holds no state (mosquitto's persistence is off unless `extra_conf` turns it on). It
can be stopped and started again on the same port, which is how outage tests cut the broker away.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import psutil

INSTALL_HINT = (
    "mosquitto is not installed: install it (`apt-get install -y mosquitto`), or point the bench "
    "at a broker with --broker mqtt://host:port"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM a child of the bench, SIGKILL it after `grace` seconds, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ChildBroker:
    """One broker process (`program -c <config>`) whose MQTT listener is 127.0.0.1:`port`, its
    config and log in `workdir`. A subclass names the program and writes its config."""

    program: ClassVar[str]
    install_hint: ClassVar[str]
    start_timeout: ClassVar[float] = 10.0  # seconds from spawn to a listening port

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, kw_only=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.program}-{self.port}.log"

    def config_lines(self) -> list[str]:
        """The broker's config file, a line each."""
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> None:
        """Spawn the broker and return once its port accepts a connection; if it exits first or
        does not listen within `timeout` (default `start_timeout`), stop it and raise."""
        timeout = self.start_timeout if timeout is None else timeout
        binary = shutil.which(self.program) or f"/usr/sbin/{self.program}"
        if not Path(binary).exists():
            raise RuntimeError(self.install_hint)
        conf = self.workdir / f"{self.program}-{self.port}.conf"
        conf.write_text("\n".join(self.config_lines()) + "\n")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.program} exited with {self.proc.returncode}: "
                    f"{self.log_path.read_text()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.program} did not listen on 127.0.0.1:{self.port} in {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None


@dataclass
class LocalBroker(ChildBroker):
    """mosquitto. `extra_conf` lines are appended to its config (TLS listener options, a password
    file, persistence); `anonymous=False` requires a login."""

    program: ClassVar[str] = "mosquitto"
    install_hint: ClassVar[str] = INSTALL_HINT

    extra_conf: list[str] = field(default_factory=list)
    anonymous: bool = True

    def config_lines(self) -> list[str]:
        lines = [
            f"listener {self.port} 127.0.0.1",
            # mosquitto 2 turns anonymous access off as soon as a listener is defined
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            # A subscriber must see every message, however far it falls behind.
            "max_queued_messages 0",
            *self.extra_conf,
        ]
        if os.geteuid() == 0:
            # As root mosquitto drops to the mosquitto user, who may not read a private tmp dir.
            lines.append("user root")
        return lines


@contextmanager
def bench_broker(
    workdir: Path, url: str | None, progress: Callable[[str], None]
) -> Iterator[tuple[str, psutil.Process | None]]:
    """The broker a bench run publishes to: `url` when given (nothing to start or to measure),
    else a mosquitto started here and stopped on the way out. Yields its URL and, for one this
    started, its process (the bench measures its CPU)."""
    if url:
        yield url, None
        return
    import psutil

    progress("broker: starting mosquitto")
    # $SYS every second: the bench counts what the daemon publishes from the broker's own count
    # (counter.BROKER_RECEIVED), which costs the daemon nothing.
    broker = LocalBroker(workdir, extra_conf=["sys_interval 1"])
    broker.start()
    try:
        assert broker.proc is not None
        yield broker.url, psutil.Process(broker.proc.pid)
    finally:
        broker.stop()
