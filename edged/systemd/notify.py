"""sd_notify in pure Python: the supervisor's messages to systemd (READY, STATUS, WATCHDOG, ...).

Runs in the supervisor only. `Notifier()` is built once, early in the supervisor's start, and it
*removes* NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from os.environ: workers are spawned
later with a copy of that environment, and a worker that thought it should notify or ping the
watchdog would be a bug (under NotifyAccess=main systemd drops its messages anyway).

Outside systemd (no NOTIFY_SOCKET) every method is a no-op. A send error is logged at debug level
and otherwise ignored: systemd's answer to a missing READY or WATCHDOG is its own timeout, which
is the right outcome, and the notifier must never take the supervisor down. Each message opens a
fresh socket (as libsystemd does), so a `systemctl daemon-reexec` that re-creates the manager's
socket needs no reconnect logic. Sending a datagram to a local AF_UNIX socket does not block, so
the methods are safe to call from the event loop.

Protocol: systemd man/sd_notify.xml; conventions and pitfalls: docs/systemd-mqtt.md section 1.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping

import structlog

log = structlog.get_logger("edged.systemd.notify")

ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def monotonic_usec() -> int:
    """The system-wide CLOCK_MONOTONIC in µs, the clock MONOTONIC_USEC= must use."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str) -> str | None:
    """NOTIFY_SOCKET's value as an AF_UNIX address; None for a kind edged does not support."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        # Linux abstract namespace: the leading '@' stands for a NUL byte.
        return "\0" + value[1:]
    return None


def _one_line(text: str) -> str:
    # STATUS= is one line; a newline would start a new (bogus) assignment.
    return " ".join(text.split())


class Notifier:
    """Sends sd_notify messages for the supervisor. Build it once; it pops its variables."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        values = {key: env.pop(key, None) for key in ENV_KEYS}
        raw = values["NOTIFY_SOCKET"] or ""
        self.address = socket_address(raw) if raw else None
        if raw and self.address is None:
            log.warning("unsupported NOTIFY_SOCKET, not notifying systemd", notify_socket=raw)
        self._watchdog_interval = _watchdog_interval(values, os.getpid())

    @property
    def enabled(self) -> bool:
        """True when running under a systemd that listens (Type=notify / notify-reload)."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None without a watchdog."""
        return self._watchdog_interval if self.enabled else None

    def send(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` assignments in one datagram; True if the kernel accepted it."""
        if self.address is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(data)
        except OSError as exc:
            log.debug("sd_notify send failed", error=str(exc), message=assignments[0])
            return False
        return True

    def _with_status(self, first: str, status: str | None) -> bool:
        if status is None:
            return self.send(first)
        return self.send(first, f"STATUS={_one_line(status)}")

    def ready(self, status: str | None = None) -> bool:
        """Startup or a reload is finished. Send after workers are ready and MQTT is up."""
        return self._with_status("READY=1", status)

    def reloading(self, status: str | None = None) -> bool:
        """A reload starts: RELOADING=1 and MONOTONIC_USEC in ONE datagram (systemd >= 253
        fails a notify-reload unit's reload without the timestamp); follow with `ready`."""
        if status is None:
            return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")
        return self.send(
            "RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", f"STATUS={_one_line(status)}"
        )

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown starts (final: since systemd 259 it cannot be taken back)."""
        return self._with_status("STOPPING=1", status)

    def status(self, text: str) -> bool:
        """One-line summary for `systemctl status`, e.g. '3/3 workers up, mqtt connected'."""
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ping. Only send it when the supervisor is healthy (see edged.systemd
        .watchdog): a ping that does not depend on health makes the watchdog useless."""
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Extend the current start/stop/runtime timeout to `seconds` from now. Repeat within
        each such interval while a long phase (model load, outbox drain) lasts."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}")


def _watchdog_interval(values: Mapping[str, str | None], pid: int) -> float | None:
    usec, owner = values["WATCHDOG_USEC"], values["WATCHDOG_PID"]
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    # The watchdog is meant for WATCHDOG_PID only (sd_watchdog_enabled(3)).
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    # Half the timeout, as sd_watchdog_enabled(3) recommends: one late ping is not fatal.
    return int(usec) / 2_000_000
