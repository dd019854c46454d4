"""A bound AF_UNIX datagram socket for the tests: what journald's and systemd's notify sockets
are to edged. Runs in the test process; the caller closes it (a `with` or a fixture's teardown).
"""

from __future__ import annotations

import socket


def receiver(address: str, timeout: float | None) -> socket.socket:
    """Bound at `address` (a path, or "\\0name" for the abstract namespace); `recv` waits up to
    `timeout` seconds (0: never waits, None: waits for ever)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(timeout)
    return sock
