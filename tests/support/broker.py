"""The tests' real mosquitto: the same throw-away broker `edged bench` starts."""

from edged.bench.broker import INSTALL_HINT, LocalBroker, free_port

Broker = LocalBroker

__all__ = ["INSTALL_HINT", "Broker", "free_port"]
