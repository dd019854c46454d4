"""Debounced counts: a new value is published only after it held for hold_s."""

from __future__ import annotations

from edged.track.counts import HeldCounts


def test_a_count_changes_only_after_holding() -> None:
    counts = HeldCounts(hold_s=2.0)
    assert counts.feed({"car": 1}, 0.0) is False
    assert counts.feed({"car": 1}, 1.9) is False
    assert counts.feed({"car": 1}, 2.0) is True
    assert counts.published == {"car": 1}


def test_flapping_never_publishes() -> None:
    counts = HeldCounts(hold_s=1.0)
    counts.feed({"car": 1}, 0.0)
    counts.feed({"car": 1}, 1.0)
    changes = sum(counts.feed({"car": 2 if i % 2 else 1}, 1.0 + i * 0.3) for i in range(1, 30))
    assert changes == 0 and counts.published == {"car": 1}


def test_zero_hold_follows_at_once() -> None:
    counts = HeldCounts(hold_s=0.0)
    assert counts.feed({"person": 3}, 0.0) is True
    assert counts.feed({}, 0.1) is True
    assert counts.published == {"person": 0}


def test_a_count_that_keeps_moving_is_published_every_hold() -> None:
    counts = HeldCounts(hold_s=2.0)
    values = list(range(1, 31))  # a filling car park: never the same value twice
    changes = sum(counts.feed({"car": v}, float(t)) for t, v in enumerate(values))
    assert 9 <= changes <= 15  # every 2-3 s of the 30 (a change must last 2 s), not never
    assert counts.published["car"] == 30
