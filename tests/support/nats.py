"""A real broker that speaks MQTT 3.1.1 only: nats-server with its MQTT listener (and JetStream,
which the listener needs). It refuses an MQTT 5 CONNECT with "Unsupported protocol version".

The tests start their own on free ports in a temporary folder; `scripts/setup.sh --dev` installs
it (Debian package `nats-server`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from edged.bench.broker import free_port, terminate

INSTALL_HINT = "nats-server not found: run scripts/setup.sh --dev (apt-get install nats-server)"


@dataclass
class NatsBroker:
    workdir: Path
    port: int = field(default_factory=free_port)  # the MQTT listener
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"nats-{self.port}.log"

    def start(self, timeout: float = 20.0) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).exists():
            raise RuntimeError(INSTALL_HINT)
        conf = self.workdir / f"nats-{self.port}.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listen: 127.0.0.1:{free_port()}",
                    f'server_name: "edged-test-{self.port}"',
                    f'jetstream {{ store_dir: "{self.workdir / f"nats-{self.port}-js"}" }}',
                    f'mqtt {{ host: "127.0.0.1", port: {self.port} }}',
                ]
            )
            + "\n"
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not listen on 127.0.0.1:{self.port} in {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None
