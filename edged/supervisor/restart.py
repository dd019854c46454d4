"""Restart decisions for crashed or hung workers: pure logic on an injected clock.

Runs in the supervisor (no I/O, nothing to crash). Exponential backoff with jitter on the
monotonic clock; a budget of restarts per window, after which the worker is reported `failed` and
retried only at a slow cadence. A worker that stayed up for a while earns its fast restarts back.
"""

from __future__ import annotations

import random
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edged.backoff import Backoff
from edged.config.model import RestartConfig


@dataclass(frozen=True)
class RestartPolicy:
    initial_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.2  # +-20 % so workers that died together do not restart in lockstep
    budget: int = 5  # restarts allowed in `window` seconds before the worker is failed
    window: float = 300.0
    failed_retry: float = 300.0  # the slow cadence once failed
    # A model that did not load will not load in 0.5 s either: its backoff starts here.
    boot_error_delay: float = 5.0
    stable_after: float = 60.0  # up this long: the next crash starts the backoff afresh

    @classmethod
    def from_config(cls, config: RestartConfig) -> RestartPolicy:
        return cls(
            initial_delay=config.delay,
            max_delay=config.max_delay,
            budget=config.budget,
            window=config.window,
            failed_retry=config.failed_retry,
            boot_error_delay=config.boot_error_delay,
        )


@dataclass(frozen=True)
class Decision:
    failed: bool
    delay: float


@dataclass
class RestartTracker:
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random
    _restarts: deque[float] = field(default_factory=deque)
    _up_since: float | None = None
    _backoff: Backoff = field(init=False)

    def __post_init__(self) -> None:
        p = self.policy
        self._backoff = Backoff(p.initial_delay, p.max_delay, jitter=p.jitter, rng=self.rng)

    def set_policy(self, policy: RestartPolicy) -> None:
        """A reloaded `[workers.restart]`: the restarts counted so far still count."""
        self.policy = policy
        self._backoff.first, self._backoff.cap = policy.initial_delay, policy.max_delay
        self._backoff.jitter = policy.jitter

    def started(self) -> None:
        """The worker reported ready."""
        self._up_since = self.clock()

    def exited(self, *, boot_error: bool) -> Decision:
        """The worker is gone: decide how long to wait before starting it again."""
        now = self.clock()
        p = self.policy
        if self._up_since is not None and now - self._up_since >= p.stable_after:
            self._backoff.reset()
        self._up_since = None
        while self._restarts and now - self._restarts[0] > p.window:
            self._restarts.popleft()
        self._restarts.append(now)
        if len(self._restarts) > p.budget:
            # The slow cadence is not doubled further: a fixed model file is picked up within
            # `failed_retry`, and the jitter still spreads workers that failed together.
            return Decision(failed=True, delay=self._backoff.spread(p.failed_retry))
        first = p.boot_error_delay if boot_error else None
        return Decision(failed=False, delay=self._backoff.delay(first))

    @property
    def restarts_in_window(self) -> int:
        return len(self._restarts)


def describe_exit(
    exitcode: int | None, boot_error_code: int, *, sent: signal.Signals | None = None
) -> str:
    """Say in words why a worker process ended; `sent` is a signal the supervisor itself sent."""
    if exitcode is None:
        return "still running"
    if exitcode == 0:
        return "exited cleanly"
    if exitcode == boot_error_code:
        return f"exit code {exitcode}: could not load its model or open its device"
    if exitcode < 0:
        sig = -exitcode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        by = " from the supervisor" if sent is not None and sig == sent else ""
        if sig == signal.SIGABRT:
            return f"aborted by {name}{by} (its stack traces are in the log above)"
        if sig == signal.SIGKILL and not by:
            return f"killed by {name} (out of memory? see `dmesg` / `journalctl -k`)"
        return f"killed by {name}{by}"
    return f"exit code {exitcode}"
