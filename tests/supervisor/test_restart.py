"""Restart decisions on an injected clock and random source; exit reasons in words."""

from __future__ import annotations

import signal

import pytest

from edged.config.model import RestartConfig
from edged.protocol import EXIT_BOOT_ERROR
from edged.supervisor.restart import RestartPolicy, RestartTracker, describe_exit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(policy: RestartPolicy, clock: Clock, rng: float = 0.5) -> RestartTracker:
    # rng() == 0.5 is the middle of the jitter range: no jitter at all.
    return RestartTracker(policy, clock=clock, rng=lambda: rng)


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    clock = Clock()
    t = tracker(RestartPolicy(initial_delay=0.5, max_delay=4.0, budget=100), clock)
    delays = []
    for _ in range(6):
        clock.now += 0.1  # crashes right after starting
        decision = t.exited(boot_error=False)
        assert not decision.failed
        delays.append(decision.delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.parametrize(("rng", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)])
def test_jitter_stays_within_its_bounds(rng: float, factor: float) -> None:
    clock = Clock()
    t = tracker(RestartPolicy(initial_delay=1.0, jitter=0.2, budget=100), clock, rng)
    assert t.exited(boot_error=False).delay == pytest.approx(1.0 * factor, abs=1e-5)
    assert t.exited(boot_error=False).delay == pytest.approx(2.0 * factor, abs=1e-5)


def test_jitter_spreads_real_random_draws_within_bounds() -> None:
    policy = RestartPolicy(initial_delay=1.0, jitter=0.2, budget=1000, window=1.0)
    delays = set()
    for _ in range(200):
        # A fresh tracker each time: every draw from the first step of the backoff.
        delays.add(RestartTracker(policy, clock=Clock()).exited(boot_error=False).delay)
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert len(delays) > 100  # really random, not one fixed factor


def test_budget_exhausted_reports_failed_and_retries_slowly() -> None:
    clock = Clock()
    policy = RestartPolicy(initial_delay=0.5, budget=3, window=60.0, failed_retry=120.0)
    t = tracker(policy, clock)
    for _ in range(3):
        clock.now += 1.0
        assert not t.exited(boot_error=False).failed
    clock.now += 1.0
    decision = t.exited(boot_error=False)
    assert decision.failed and decision.delay == 120.0
    # The slow retry fails again while the window still holds the burst: still failed.
    # (Real retries come `failed_retry` apart; the clock is shortened to keep the burst in view.)
    clock.now += 50.0
    decision = t.exited(boot_error=False)
    assert decision.failed and decision.delay == 120.0


def test_old_restarts_leave_the_window() -> None:
    clock = Clock()
    t = tracker(RestartPolicy(budget=2, window=10.0, stable_after=1e9), clock)
    assert not t.exited(boot_error=False).failed
    clock.now += 4.0
    assert not t.exited(boot_error=False).failed
    clock.now += 4.0
    assert t.exited(boot_error=False).failed  # three within 10 s
    clock.now += 6.5  # 14.5 and 10.5 s old: the first two fall out of the 10 s window
    assert not t.exited(boot_error=False).failed
    assert t.restarts_in_window == 2


def test_a_worker_that_stayed_up_starts_the_backoff_afresh() -> None:
    clock = Clock()
    t = tracker(RestartPolicy(initial_delay=0.5, stable_after=60.0, budget=100), clock)
    t.started()
    assert t.exited(boot_error=False).delay == 0.5
    t.started()
    assert t.exited(boot_error=False).delay == 1.0
    t.started()
    clock.now += 59.0  # not quite stable
    assert t.exited(boot_error=False).delay == 2.0
    t.started()
    clock.now += 60.0
    assert t.exited(boot_error=False).delay == 0.5
    # Never reported ready: the backoff keeps growing whatever the time between crashes.
    clock.now += 100.0
    assert t.exited(boot_error=False).delay == 1.0


def test_a_boot_error_backs_off_from_its_own_longer_delay() -> None:
    clock = Clock()
    policy = RestartPolicy(initial_delay=0.5, boot_error_delay=5.0, max_delay=30.0, budget=100)
    t = tracker(policy, clock)
    delays = [t.exited(boot_error=True).delay for _ in range(4)]
    assert delays == [5.0, 10.0, 20.0, 30.0]


def test_policy_from_config() -> None:
    config = RestartConfig(
        delay=0.1, max_delay=2.0, boot_error_delay=0.3, budget=7, window=9.0, failed_retry=4.0
    )
    policy = RestartPolicy.from_config(config)
    assert (policy.initial_delay, policy.max_delay, policy.boot_error_delay) == (0.1, 2.0, 0.3)
    assert (policy.budget, policy.window, policy.failed_retry) == (7, 9.0, 4.0)
    assert RestartPolicy.from_config(RestartConfig()) == RestartPolicy()


@pytest.mark.parametrize(
    ("exitcode", "sent", "words"),
    [
        (None, None, "still running"),
        (0, None, "exited cleanly"),
        (1, None, "exit code 1"),
        (EXIT_BOOT_ERROR, None, "exit code 3: could not load its model or open its device"),
        (-9, None, "killed by SIGKILL (out of memory? see `dmesg` / `journalctl -k`)"),
        (-9, signal.SIGKILL, "killed by SIGKILL from the supervisor"),
        (-6, signal.SIGABRT, "aborted by SIGABRT from the supervisor (its stack traces are in"),
        (-6, None, "aborted by SIGABRT (its stack traces are in the log above)"),
        (-11, None, "killed by SIGSEGV"),
        (-15, None, "killed by SIGTERM"),
        (-9, signal.SIGABRT, "killed by SIGKILL (out of memory?"),
        (-200, None, "killed by signal 200"),
    ],
)
def test_describe_exit(exitcode: int | None, sent: signal.Signals | None, words: str) -> None:
    assert describe_exit(exitcode, EXIT_BOOT_ERROR, sent=sent).startswith(words)
