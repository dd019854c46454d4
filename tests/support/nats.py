"""A real broker that speaks MQTT 3.1.1 only: nats-server with its MQTT listener (and JetStream,
which the listener needs). It refuses an MQTT 5 CONNECT with "Unsupported protocol version".

The tests start their own on free ports in a temporary folder, started, waited on and stopped as
the mosquitto broker is (edged.bench.broker.ChildBroker); `scripts/setup.sh --dev` installs it
(Debian package `nats-server`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edged.bench.broker import ChildBroker, free_port


@dataclass
class NatsBroker(ChildBroker):
    """`port` is the MQTT listener; the NATS client port is another free one."""

    program: ClassVar[str] = "nats-server"
    install_hint: ClassVar[str] = (
        "nats-server not found: run scripts/setup.sh --dev (apt-get install nats-server)"
    )
    start_timeout: ClassVar[float] = 20.0  # JetStream sets up its store first

    def config_lines(self) -> list[str]:
        return [
            f"listen: 127.0.0.1:{free_port()}",
            f'server_name: "edged-test-{self.port}"',
            f'jetstream {{ store_dir: "{self.workdir / f"nats-{self.port}-js"}" }}',
            f'mqtt {{ host: "127.0.0.1", port: {self.port} }}',
        ]
