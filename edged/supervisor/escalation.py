"""When a silent worker is declared hung, and how hard it is ended: pure logic on an injected clock.

Runs in the supervisor, inside a worker handle (no I/O, nothing to crash). A worker must say READY
within `ready_timeout` and then send a heartbeat at least every `heartbeat_timeout` seconds. The
first missed deadline asks for SIGABRT (the worker's faulthandler writes every thread's stack to
the log, which shows where inference is wedged); if the process is still there `kill_after`
seconds later, SIGKILL. A stopped (SIGSTOP) or uninterruptible process only yields to SIGKILL.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# After SIGABRT (tracebacks) a hung worker gets this long to die before SIGKILL.
KILL_AFTER_S = 3.0


class Action(enum.Enum):
    WAIT = "wait"
    ABORT = "abort"  # send SIGABRT
    KILL = "kill"  # send SIGKILL


@dataclass(frozen=True)
class Verdict:
    action: Action
    # Seconds until the next check is due (None: nothing left to decide).
    check_in: float | None


@dataclass
class HangWatch:
    """One worker process's deadlines, from spawn to exit."""

    ready_timeout: float
    heartbeat_timeout: float
    kill_after: float = KILL_AFTER_S
    clock: Callable[[], float] = time.monotonic
    _spawned: float = field(init=False)
    _last_beat: float | None = field(init=False, default=None)
    _aborted_at: float | None = field(init=False, default=None)
    _killed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._spawned = self.clock()

    def retime(self, ready_timeout: float, heartbeat_timeout: float) -> None:
        """New timeouts (a reload): deadlines are taken from them from now on."""
        self.ready_timeout = ready_timeout
        self.heartbeat_timeout = heartbeat_timeout

    def beat(self) -> None:
        """READY or a heartbeat arrived: the worker is making progress."""
        if self._aborted_at is None:  # once aborted, a late heartbeat does not save it
            self._last_beat = self.clock()

    @property
    def deadline(self) -> float:
        if self._last_beat is None:
            return self._spawned + self.ready_timeout
        return self._last_beat + self.heartbeat_timeout

    @property
    def hung(self) -> bool:
        return self._aborted_at is not None

    def reason(self) -> str:
        if self._last_beat is None:
            return f"not ready within {self.ready_timeout:g} s"
        return f"no heartbeat for {self.heartbeat_timeout:g} s"

    def check(self) -> Verdict:
        """What to do now; each action is asked for once."""
        now = self.clock()
        if self._killed:
            return Verdict(Action.WAIT, None)
        if self._aborted_at is not None:
            kill_at = self._aborted_at + self.kill_after
            if now >= kill_at:
                self._killed = True
                return Verdict(Action.KILL, None)
            return Verdict(Action.WAIT, kill_at - now)
        if now >= self.deadline:
            self._aborted_at = now
            return Verdict(Action.ABORT, self.kill_after)
        return Verdict(Action.WAIT, self.deadline - now)
