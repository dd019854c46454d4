"""Health-gated watchdog pings and timeout extension, as asyncio tasks in the supervisor.

Runs in the supervisor's event loop only. The pings are sent from a coroutine on purpose: if the
loop is wedged, the pings stop, and systemd kills and restarts the unit (WatchdogSec=). A ping is
also withheld while the supervisor's own view of the system is unhealthy: a worker in a state
where it must heartbeat has missed its deadline, or the MQTT publisher task has died. A broker
outage is *not* unhealthy (the publisher task is alive and retrying): rebooting a camera box
because the network is down would fix nothing.

The supervisor restarts a single stalled worker itself; the watchdog is the backstop for when
that machinery (the supervisor) is itself stuck. So the heartbeat ages passed in should be those
of workers the supervisor expects to heartbeat (ready or running), not of workers it is
restarting or has given up on; with a deadline a little longer than the supervisor's own
escalation, the watchdog only fires when the supervisor failed to act.

If `healthy` raises, the exception ends the task; the supervisor should treat the end of this
task like any other essential task's end (shut down non-zero, so Restart=on-failure acts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping

import structlog

from edged.systemd.notify import Notifier

log = structlog.get_logger("edged.systemd.watchdog")


def watchdog_blocker(
    heartbeat_ages: Mapping[str, float],
    deadlines: Mapping[str, float] | float,
    publisher_alive: bool,
) -> str | None:
    """Why a WATCHDOG=1 ping must be withheld now, or None when it may be sent.

    `heartbeat_ages`: seconds since each expected worker's last heartbeat, by worker name.
    `deadlines`: the allowed age, per worker name or one value for all.
    `publisher_alive`: the MQTT publisher task exists and is not done (connected or retrying).
    """
    if not publisher_alive:
        return "mqtt publisher task is not running"
    late = []
    for name, age in sorted(heartbeat_ages.items()):
        deadline = deadlines if isinstance(deadlines, float | int) else deadlines[name]
        if age > deadline:
            late.append(f"{name} {age:.1f}s > {deadline:.1f}s")
    if late:
        return "worker heartbeat late: " + ", ".join(late)
    return None


async def ping_watchdog(notifier: Notifier, healthy: Callable[[], str | None]) -> None:
    """Ping every `notifier.watchdog_interval` seconds while `healthy()` returns None.

    `healthy` returns a reason string to withhold the ping (e.g. from `watchdog_blocker`).
    Returns at once when systemd set no watchdog. Run it as a named task after READY=1 and
    cancel it when stopping starts.
    """
    interval = notifier.watchdog_interval
    if interval is None:
        return
    withheld: str | None = None
    while True:
        reason = healthy()
        if reason is None:
            notifier.watchdog()
            if withheld is not None:
                log.info("watchdog pings resumed", after=withheld)
        elif reason != withheld:
            # Logged once per distinct reason: this is what explains a later watchdog kill.
            log.warning("withholding watchdog ping", reason=reason)
        withheld = reason
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def extending_timeout(notifier: Notifier, seconds: float) -> AsyncIterator[None]:
    """Keep sending EXTEND_TIMEOUT_USEC=`seconds` while the block runs (long model loads at
    start, a large outbox drain at stop). Each message is re-sent at half the period, so the
    deadline always lies at least `seconds`/2 ahead. After the block, the last extension
    simply runs out; nothing needs undoing."""

    async def keep_extending() -> None:
        while True:
            notifier.extend_timeout(seconds)
            await asyncio.sleep(seconds / 2)

    if not notifier.enabled:
        yield
        return
    task = asyncio.create_task(keep_extending(), name="systemd-extend-timeout")
    try:
        yield
    finally:
        # Not awaited: awaiting here could swallow a cancellation aimed at our caller.
        task.cancel()
