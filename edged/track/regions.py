"""Zones and counting lines of one stream: who is in which zone, who crossed which line.

Runs in a worker process, after the tracker, on the same inference loop (pure Python and numpy;
a few microseconds per track). An object's position is its box's bottom centre, where it stands.
State is per track and dies with the worker; zone membership and line crossings are reported
through the stream's events (`edged.track.events`), and cumulative line counts are kept by the
supervisor, so a worker restart loses no count.

Every time here is in seconds of capture time:
- a zone counts an object as entered after `enter_s` inside, as left after `leave_s` outside
  (an object seen on a zone's border for one frame neither enters nor leaves), and as loitering
  after `loiter_s` inside;
- a line counts a crossing when the path from the object's last position on one side to a
  position on the other side crosses the line segment (missed detections in between are
  bridged by the straight path), and the object stays on the new side for `settle_s`; an object
  jittering on the line counts nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from edged.config.model import LineConfig, Point, ZoneConfig


class Direction(enum.StrEnum):
    IN = "in"  # left to right, walking from the line's first point to its second
    OUT = "out"


def to_pixels(points: tuple[Point, ...], normalized: bool, size: tuple[int, int]) -> np.ndarray:
    pts = np.asarray(points, dtype=float)
    if normalized:
        pts = pts * np.asarray(size, dtype=float)
    return pts


def inside(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Even-odd rule for many points at once: (N,) bools."""
    if not len(points):
        return np.zeros(0, dtype=bool)
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.concatenate([x1[1:], x1[:1]]), np.concatenate([y1[1:], y1[:1]])
    spans = (y1 <= y) != (y2 <= y)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    hits = spans & (x < cross_x)
    result: np.ndarray = (hits.sum(axis=1) % 2) == 1
    return result


XY = tuple[float, float]


def side(a: XY, b: XY, p: XY) -> float:
    """> 0 right of a->b in image coordinates (y down), < 0 left."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def segments_cross(a: XY, b: XY, p: XY, q: XY) -> bool:
    """Does the path p->q cross the segment a->b?"""
    d1, d2 = side(a, b, p), side(a, b, q)
    d3, d4 = side(p, q, a), side(p, q, b)
    return (d1 > 0) != (d2 > 0) and (d3 > 0) != (d4 > 0)


@dataclass(slots=True)
class ZoneState:
    """One track in one zone."""

    inside: bool = False  # the reported state
    since: float = 0.0  # when the raw in/out last changed
    raw: bool = False
    entered_at: float = 0.0
    loitering: bool = False


@dataclass(slots=True)
class LineState:
    """One track against one line."""

    settled: float = 0.0  # sign of the side the object is counted on (0: not yet seen)
    last: tuple[float, float] | None = None  # last position on the settled side
    pending: float = 0.0  # sign of the side it moved to, waiting to settle
    pending_since: float = 0.0


@dataclass(slots=True)
class TrackRegions:
    zones: dict[str, ZoneState] = field(default_factory=dict)
    lines: dict[str, LineState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ZoneChange:
    zone: str
    entered: bool  # False: left
    loitering: bool = False  # True: this change is "started loitering" (entered stays True)


@dataclass(frozen=True, slots=True)
class Crossing:
    line: str
    direction: Direction


class Regions:
    """The zones and lines of one stream, in pixels of its current frame size."""

    def __init__(
        self, zones: tuple[ZoneConfig, ...], lines: tuple[LineConfig, ...], size: tuple[int, int]
    ) -> None:
        self.zones = zones
        self.lines = lines
        self.size = size
        self._polygons = [to_pixels(z.points, z.normalized, size) for z in zones]
        self._segments: list[tuple[XY, XY]] = []
        for line in lines:
            (ax, ay), (bx, by) = to_pixels(line.points, line.normalized, size).tolist()
            self._segments.append(((ax, ay), (bx, by)))

    def containment(self, anchors: list[tuple[float, float]]) -> list[list[bool]]:
        """For each zone, which of these positions are inside it (one vectorised test a zone)."""
        if not anchors:
            return [[] for _ in self.zones]
        points = np.asarray(anchors, dtype=float)
        return [inside(polygon, points).tolist() for polygon in self._polygons]

    def zone_changes(
        self, state: TrackRegions, label: str, inside_now: list[bool], t: float
    ) -> list[ZoneChange]:
        """Update one track's zones from `inside_now` (one bool per zone, from `containment`)."""
        changes: list[ZoneChange] = []
        for zone, now in zip(self.zones, inside_now, strict=True):
            if zone.objects and label not in zone.objects:
                continue
            st = state.zones.setdefault(zone.name, ZoneState(since=t))
            if now != st.raw:
                st.raw, st.since = now, t
            held = t - st.since
            if now and not st.inside and held >= zone.enter_s:
                st.inside, st.entered_at, st.loitering = True, st.since, False
                changes.append(ZoneChange(zone.name, entered=True))
            elif not now and st.inside and held >= zone.leave_s:
                st.inside, st.loitering = False, False
                changes.append(ZoneChange(zone.name, entered=False))
            loiter = zone.loiter_s > 0 and t - st.entered_at >= zone.loiter_s
            if st.inside and not st.loitering and loiter:
                st.loitering = True
                changes.append(ZoneChange(zone.name, entered=True, loitering=True))
        return changes

    def crossings(
        self, state: TrackRegions, label: str, anchor: tuple[float, float], t: float
    ) -> list[Crossing]:
        found: list[Crossing] = []
        for line, (a, b) in zip(self.lines, self._segments, strict=True):
            if line.objects and label not in line.objects:
                continue
            st = state.lines.setdefault(line.name, LineState())
            s = side(a, b, anchor)
            sign = 1.0 if s > 0 else -1.0 if s < 0 else 0.0
            if sign == 0.0:
                continue
            if st.settled == 0.0:
                st.settled, st.last = sign, anchor
                continue
            if sign == st.settled:
                st.last, st.pending = anchor, 0.0
                continue
            if st.pending != sign:
                # first position across: did the path get there through the segment?
                assert st.last is not None
                if not segments_cross(a, b, st.last, anchor):
                    # went round the end of the line: it is simply on the other side now
                    st.settled, st.last = sign, anchor
                    continue
                st.pending, st.pending_since = sign, t
            if t - st.pending_since >= line.settle_s:
                direction = Direction.IN if sign > 0 else Direction.OUT
                found.append(Crossing(line.name, direction))
                st.settled, st.last, st.pending = sign, anchor, 0.0
        return found

    def occupied(self, states: list[tuple[str, TrackRegions]]) -> dict[str, dict[str, int]]:
        """Per zone, per label: how many of these (label, state) tracks are inside."""
        counts: dict[str, dict[str, int]] = {z.name: {} for z in self.zones}
        for label, st in states:
            for name, zs in st.zones.items():
                if zs.inside and name in counts:
                    counts[name][label] = counts[name].get(label, 0) + 1
        return counts
