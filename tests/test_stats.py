"""One percentile definition: numpy's default (linear), for health and the bench alike."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edged.stats import percentile, percentiles


def test_matches_numpy_linear_percentile_on_random_samples() -> None:
    rng = random.Random(7)
    for size in (1, 2, 3, 10, 101, 1000):
        values = [rng.uniform(0, 100) for _ in range(size)]
        for q in (0, 1, 50, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_small_cases_by_hand() -> None:
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5  # between the two middle samples
    assert percentiles([10.0, 20.0, 30.0]) == {"p50": 20.0, "p95": 29.0, "p99": 29.8}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_rejects_a_quantile_outside_0_100() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        percentile([1.0], 101)
