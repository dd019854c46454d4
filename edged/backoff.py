"""One exponential backoff for everything edged retries: workers, streams, the MQTT connection.

Pure logic (no I/O, no sleeping), used in both processes: the supervisor's worker restarts and
broker reconnects, a worker's stream reopening. The caller waits the delay it is given, on its own
clock, so a test drives it with an injected random source and no real time passes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays `first`, `2 first`, `4 first`, ... up to `cap`, each spread by ±`jitter`.

    The jitter (a fraction, 0.2 is ±20 %) keeps things that failed together (workers, a fleet of
    boxes after a broker restart) from retrying in lockstep; 0 gives the exact doubling.
    `reset()` after a success starts again from `first`.
    """

    first: float
    cap: float
    jitter: float = 0.2
    rng: Callable[[], float] = random.random
    _attempts: int = field(default=0, init=False)

    def delay(self, first: float | None = None) -> float:
        """The next delay; `first` overrides where the doubling starts (e.g. a boot error)."""
        start = self.first if first is None else first
        delay = min(self.cap, start * 2**self._attempts)
        self._attempts += 1
        return self.spread(delay)

    def spread(self, delay: float) -> float:
        """`delay` with this backoff's jitter applied (also for fixed cadences)."""
        return delay * (1.0 + self.jitter * (2.0 * self.rng() - 1.0))

    def reset(self) -> None:
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempts
