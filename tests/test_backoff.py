"""The one exponential backoff, on an injected random source."""

from __future__ import annotations

import pytest

from edged.backoff import Backoff


def test_doubles_from_first_up_to_the_cap_and_resets() -> None:
    b = Backoff(first=0.5, cap=4.0, jitter=0.0)
    assert [b.delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.attempts == 6
    b.reset()
    assert b.delay() == 0.5


def test_a_different_start_keeps_the_doubling_count() -> None:
    b = Backoff(first=0.5, cap=60.0, jitter=0.0)
    assert [b.delay(first=5.0) for _ in range(3)] == [5.0, 10.0, 20.0]


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)])
def test_jitter_stays_within_its_bounds(draw: float, factor: float) -> None:
    b = Backoff(first=1.0, cap=60.0, jitter=0.2, rng=lambda: draw)
    assert b.delay() == pytest.approx(1.0 * factor, abs=1e-5)
    assert b.delay() == pytest.approx(2.0 * factor, abs=1e-5)
    assert b.spread(300.0) == pytest.approx(300.0 * factor, abs=1e-3)


def test_real_random_draws_spread_within_bounds() -> None:
    delays = set()
    for _ in range(200):
        delays.add(Backoff(first=1.0, cap=60.0, jitter=0.2).delay())
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert len(delays) > 100  # really random, not one fixed factor
