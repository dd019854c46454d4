"""The one percentile definition edged reports (health's latency and inference figures, the bench).

Pure functions, used by both the supervisor (health) and `edged bench`. Linear interpolation
between the two nearest ranks (the default of numpy's `percentile` and of most dashboards), so a
health message and a bench report give the same figure for the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None without values."""
    if not values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = q / 100.0 * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def percentiles(values: Sequence[float], digits: int = 2) -> dict[str, float | None]:
    """p50, p95 and p99 of `values`, rounded to `digits` (None each without values)."""
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for q in (50, 95, 99):
        p = percentile(ordered, q)
        out[f"p{q}"] = None if p is None else round(p, digits)
    return out
