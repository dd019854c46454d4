"""A real mosquitto broker for tests, on a free port, that a test can stop and start again."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "mosquitto is not installed: run `apt-get install -y mosquitto mosquitto-clients`"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, deadline_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline_s} s")


@dataclass
class Broker:
    """One mosquitto process. `extra_conf` lines go into its config (TLS, password file)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_conf: list[str] = field(default_factory=list)
    anonymous: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"mosquitto-{self.port}.log"

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError(INSTALL_HINT)
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 0",
            *self.extra_conf,
        ]
        if os.geteuid() == 0:
            # As root mosquitto drops to the mosquitto user, who cannot read pytest's tmp files.
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        try:
            wait_for_port(self.port, 10.0, self.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}; log:\n{self.log_path.read_text()}") from exc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
