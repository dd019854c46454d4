"""`edged bench`'s tracking figure: measured through the worker's StreamEvents."""

from __future__ import annotations

from edged.bench.tracking import time_tracking


def test_tracking_cost_grows_about_linearly_with_the_boxes() -> None:
    # Frigate's tracker grows with the square of the boxes; ours must not: from 10 to 50 boxes
    # (5x) the cost per frame grows by well under 25x. Both measured here, in the same run.
    small = time_tracking(10, frames=150)
    large = time_tracking(50, frames=150)
    print(small, large)
    assert small.frames == large.frames == 135
    assert 0 < small.median_ms < large.median_ms < 12 * small.median_ms
