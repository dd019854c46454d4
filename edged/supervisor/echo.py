"""`edged run --print`: every published message also goes to stdout, one line each.

Runs in the supervisor. For a first run without an MQTT client at hand; not meant for load.
"""

from __future__ import annotations

import sys


def stdout_echo(topic: str, payload: bytes) -> None:
    sys.stdout.write(f"{topic} {payload.decode('utf-8', 'replace')}\n")
    sys.stdout.flush()
