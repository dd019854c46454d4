"""A throw-away mosquitto for `edged bench`, on a free local port.

Runs in the bench process (a short-lived command), which starts mosquitto as a child process. If
the bench crashes, `stop()` in its `finally` ends the broker; a broker left behind by a SIGKILL
of the bench listens only on 127.0.0.1 and holds no state (persistence off).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = (
    "mosquitto is not installed: install it (`apt-get install -y mosquitto`) or point the bench "
    "at a broker with --broker mqtt://host:port"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """One mosquitto process bound to 127.0.0.1, its config and log in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError(INSTALL_HINT)
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            # The bench's subscriber must see every message, however far it falls behind.
            "max_queued_messages 0",
        ]
        if os.geteuid() == 0:
            # As root mosquitto drops to the mosquitto user, who may not read a private tmp dir.
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}: {self.log_path.read_text()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} in {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
