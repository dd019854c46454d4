"""Hang decisions on an injected clock: READY deadline, heartbeat deadline, SIGABRT then SIGKILL."""

from __future__ import annotations

import pytest

from edged.supervisor.escalation import Action, HangWatch, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def watch(clock: Clock) -> HangWatch:
    return HangWatch(ready_timeout=20.0, heartbeat_timeout=4.0, kill_after=3.0, clock=clock)


def test_waits_until_the_ready_deadline_then_aborts_then_kills() -> None:
    clock = Clock()
    w = watch(clock)
    assert w.check() == Verdict(Action.WAIT, 20.0)
    clock.now += 19.9
    assert w.check().action is Action.WAIT
    clock.now += 0.1
    assert w.check() == Verdict(Action.ABORT, 3.0)
    assert w.hung and w.reason() == "not ready within 20 s"
    clock.now += 1.0
    assert w.check() == Verdict(Action.WAIT, pytest.approx(2.0))
    clock.now += 2.0
    assert w.check() == Verdict(Action.KILL, None)
    # Each action once: nothing more to decide while the kernel reaps it.
    clock.now += 10.0
    assert w.check() == Verdict(Action.WAIT, None)


def test_heartbeats_move_the_deadline() -> None:
    clock = Clock()
    w = watch(clock)
    clock.now += 5.0
    w.beat()  # READY
    for _ in range(10):
        clock.now += 3.9
        assert w.check() == Verdict(Action.WAIT, pytest.approx(0.1))
        w.beat()
    assert not w.hung
    clock.now += 4.0
    assert w.check().action is Action.ABORT
    assert w.reason() == "no heartbeat for 4 s"


def test_a_late_heartbeat_does_not_cancel_the_escalation() -> None:
    clock = Clock()
    w = watch(clock)
    w.beat()
    clock.now += 4.0
    assert w.check().action is Action.ABORT
    clock.now += 0.5
    w.beat()  # a SIGSTOPped worker resumed by SIGCONT, or one wedged in a loop that unwedged
    clock.now += 2.5
    assert w.check().action is Action.KILL


def test_the_deadline_is_checked_when_the_check_is_late() -> None:
    # The loop may wake late (a busy event loop): a missed deadline is still a missed deadline,
    # and an overdue kill is not postponed.
    clock = Clock()
    w = watch(clock)
    w.beat()
    clock.now += 100.0
    assert w.check().action is Action.ABORT
    clock.now += 100.0
    assert w.check().action is Action.KILL
