"""Zones (dwell times, loitering, filters) and lines (direction, settling, bridging)."""

from __future__ import annotations

import numpy as np

from edged.config.model import LineConfig, ZoneConfig
from edged.track.regions import Direction, Regions, TrackRegions, inside

SIZE = (1000, 1000)
SQUARE = ZoneConfig(name="sq", points=((0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)),
                    normalized=True, enter_s=0.5, leave_s=1.0, loiter_s=3.0,
                    objects=("person",))
LINE = LineConfig(name="gate", points=((0.0, 500.0), (1000.0, 500.0)), settle_s=0.3)


def test_inside_polygon_even_odd() -> None:
    poly = np.array([[0, 0], [10, 0], [10, 10], [5, 5], [0, 10]], dtype=float)
    pts = np.array([[2, 2], [5, 8], [9, 8], [11, 5]], dtype=float)  # (5, 8): in the notch
    assert inside(poly, pts).tolist() == [True, False, True, False]


def _walk(regions: Regions, label: str, path: list[tuple[float, float, float]]) -> list[object]:
    state = TrackRegions()
    out: list[object] = []
    for t, x, y in path:
        now = [c[0] for c in regions.containment([(x, y)])]
        out += [(t, c) for c in regions.zone_changes(state, label, now, t)]
        out += [(t, c) for c in regions.crossings(state, label, (x, y), t)]
    return out


def test_zone_enter_after_dwell_leave_after_dwell_and_loitering() -> None:
    regions = Regions((SQUARE,), (), SIZE)
    path = [(i / 10, 100.0, 400.0) for i in range(5)]  # outside (x=100 < 200)
    path += [(0.5 + i / 10, 400.0, 400.0) for i in range(45)]  # inside 4.5 s
    path += [(5.0, 100.0, 400.0)] + [(5.0 + i / 10, 100.0, 400.0) for i in range(1, 15)]
    changes = _walk(regions, "person", path)
    got = [(round(t, 1), c.entered, c.loitering) for t, c in changes]  # type: ignore[attr-defined]
    assert got == [(1.0, True, False), (3.5, True, True), (6.0, False, False)]


def test_a_blip_across_the_zone_border_does_not_enter() -> None:
    regions = Regions((SQUARE,), (), SIZE)
    path = [(i / 10, 400.0 if i == 3 else 100.0, 400.0) for i in range(20)]
    assert _walk(regions, "person", path) == []


def test_zone_objects_filter() -> None:
    regions = Regions((SQUARE,), (), SIZE)
    assert _walk(regions, "car", [(i / 10, 400.0, 400.0) for i in range(20)]) == []


def test_line_counts_direction_once_after_settling() -> None:
    regions = Regions((), (LINE,), SIZE)
    down = [(i / 10, 300.0, 400.0 + 20 * i) for i in range(15)]  # crosses y=500 at t=0.5
    changes = _walk(regions, "car", down)
    assert [(round(t, 1), c.direction) for t, c in changes] == [(0.9, Direction.IN)]  # type: ignore[attr-defined]
    up = [(i / 10, 300.0, 700.0 - 20 * i) for i in range(20)]
    assert [c.direction for _, c in _walk(regions, "car", up)] == [Direction.OUT]  # type: ignore[attr-defined]


def test_jitter_on_the_line_counts_nothing() -> None:
    regions = Regions((), (LINE,), SIZE)
    path = [(i / 10, 300.0, 495.0 if i % 2 else 505.0) for i in range(30)]
    assert _walk(regions, "car", path) == []


def test_missed_detections_are_bridged_and_going_round_the_end_is_not_a_crossing() -> None:
    short = LineConfig(name="gate", points=((400.0, 500.0), (600.0, 500.0)), settle_s=0.0)
    regions = Regions((), (short,), SIZE)
    # seen at y=300, then not until y=800: the path crossed the segment
    assert len(_walk(regions, "car", [(0.0, 500.0, 300.0), (2.0, 500.0, 800.0)])) == 1
    # beside the segment's end: on the other side of its line, but never across the segment
    assert _walk(regions, "car", [(0.0, 900.0, 300.0), (2.0, 900.0, 800.0)]) == []
