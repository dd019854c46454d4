"""A stream's objects as events: tracker → zones and lines → new / update / end, counts.

Runs in a worker process, on whichever inference loop processed the stream's frame, under the
stream's lock (frames are taken in capture order; one that arrives after a newer one was
tracked is not tracked). Everything here lives only in this process: when the worker dies, the
supervisor ends the events it had seen open with reason `restart` (edged.supervisor.ledger).

- `new` when a track is confirmed (tracker: `track_score` to start, `keep_score` to keep,
  `confirm_s`);
- `update` when something worth acting on changed: a zone entered or left, loitering, a line
  crossed, a better snapshot, the object became stationary; at most one per
  `update_interval_s` (changes in between are gathered into the next one);
- `end` with a reason: left, lost, stream_offline, shutdown (restart is the supervisor's).
Every `new` this object sends is followed by exactly one `end` while the worker lives.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from edged.backends.picture import Picture
from edged.config.model import StreamConfig
from edged.protocol import (
    Counts,
    Crossing,
    EventKind,
    LineCrossed,
    ObjectEvent,
    Up,
)
from edged.track import snapshots
from edged.track.counts import HeldCounts
from edged.track.regions import Regions, TrackRegions
from edged.track.tracker import EndReason, Track, Tracker

Box = tuple[float, float, float, float]
# Most host frames a stream asks its media path for, for snapshots: one per this many seconds
# (a frame to BGR costs a few milliseconds on the CPU, a device-to-host copy on an NPU).
SNAPSHOT_GAP_S = 0.2
Found = tuple[str, int, float, Box]  # label, class id, score, box (the detector's output)


@dataclass(slots=True)
class _Object:
    """What the events of one track remember (also before it is confirmed)."""

    regions: TrackRegions = field(default_factory=TrackRegions)
    event_id: str = ""  # set at `new`
    lines: list[LineCrossed] = field(default_factory=list)
    changes: set[str] = field(default_factory=set)
    last_sent: float = 0.0
    stationary_sent: bool = False
    best_box: Box = (0.0, 0.0, 0.0, 0.0)
    best_score: float = 0.0
    view: snapshots.View | None = None
    view_sent: bool = True


class StreamEvents:
    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._tracker = Tracker(config.tracking)
        self._objects: dict[int, _Object] = {}
        self._counts = HeldCounts(config.tracking.count_hold_s)
        self._zone_counts: dict[str, dict[str, int]] = {}
        self._regions: Regions | None = None
        self._last_frame = -1
        self._size = (0, 0)
        # Snapshots: whether the next frame should come with its pixels (a better view of some
        # object is in sight), at most one host frame per SNAPSHOT_GAP_S.
        self.wants_snapshot = False
        self._want_view = False
        self._pixels_at = -SNAPSHOT_GAP_S
        # The next frame sends its counts even if unchanged: the supervisor shows them as
        # unknown until a (new) tracker says what they are.
        self._announce = True

    @property
    def wants_pixels(self) -> bool:
        return self.config.tracking.snapshot != "off"

    def reconfigure(self, config: StreamConfig) -> None:
        """New thresholds, zones or lines for a running stream; open events stay open."""
        with self._lock:
            self.config = config
            self._tracker.config = config.tracking
            self._counts.hold_s = config.tracking.count_hold_s
            self._regions = None  # rebuilt at the next frame, in its size

    def on_frame(
        self,
        index: int,
        ts: float,
        image: Picture | None,
        size: tuple[int, int],
        found: Iterable[Found],
    ) -> list[Up]:
        """Track one frame's detections; return the messages to send up, in order."""
        with self._lock:
            if index <= self._last_frame:
                return []
            self._last_frame = index
            return self._frame(ts, image, size, list(found))

    def end_all(self, reason: EndReason, ts: float) -> list[Up]:
        """End every open event (the stream went offline, stops, or the worker shuts down)."""
        with self._lock:
            out: list[Up] = []
            for tr in self._tracker.end_all():
                obj = self._objects.get(tr.id)
                if obj is not None and obj.event_id:
                    out.append(self._event(EventKind.END, tr, obj, ts, reason))
            self._objects.clear()
            self._last_frame = -1
            self._counts.reset()
            self._zone_counts = {}
            self._announce = True
            return out

    # --- one frame ---------------------------------------------------------------------------

    def _frame(
        self, ts: float, image: Picture | None, size: tuple[int, int], found: list[Found]
    ) -> list[Up]:
        cfg = self.config
        if self._regions is None or self._size != size:
            self._regions = Regions(cfg.zones, cfg.lines, size)
            self._size = size
        boxes = np.array([f[3] for f in found], dtype=float).reshape(-1, 4)
        scores = np.array([f[2] for f in found], dtype=float)
        frame = self._tracker.update(boxes, scores, [f[0] for f in found], ts, size)
        out: list[Up] = []
        self._want_view = False
        if image is not None:
            self._pixels_at = ts
        for tr, reason in frame.ended:
            obj = self._objects.pop(tr.id, None)
            if obj is not None and obj.event_id:
                out.append(self._event(EventKind.END, tr, obj, ts, reason))
        live = {tr.id for tr in frame.tracks}
        for gone in [i for i in self._objects if i not in live]:
            del self._objects[gone]  # tentative tracks that never confirmed
        assert self._regions is not None
        seen = [tr for tr in frame.tracks if tr.seen_now]
        containment = self._regions.containment([tr.anchor for tr in seen])
        for k, tr in enumerate(seen):
            obj = self._object(tr.id)
            self._observe(tr, obj, ts, image, size, [c[k] for c in containment], out)
        for tr in frame.tracks:
            obj = self._object(tr.id)
            if not tr.confirmed:
                continue
            if tr.stationary and not obj.stationary_sent:
                obj.stationary_sent = True
                obj.changes.add("stationary")
            if not obj.event_id:
                obj.event_id = uuid.uuid4().hex
                obj.last_sent = ts
                obj.changes.clear()
                out.append(self._event(EventKind.NEW, tr, obj, ts))
            elif obj.changes and ts - obj.last_sent >= cfg.tracking.update_interval_s:
                obj.last_sent = ts
                out.append(self._event(EventKind.UPDATE, tr, obj, ts))
                obj.changes.clear()
        out.extend(self._count(frame.tracks, ts))
        self.wants_snapshot = self._want_view and ts - self._pixels_at >= SNAPSHOT_GAP_S
        return out

    def _object(self, track_id: int) -> _Object:
        """The track's object, made on first sight."""
        # get() first: an _Object made only to be thrown away costs more than the lookup.
        return self._objects.get(track_id) or self._objects.setdefault(track_id, _Object())

    def _observe(
        self,
        tr: Track,
        obj: _Object,
        ts: float,
        image: Picture | None,
        size: tuple[int, int],
        in_zones: list[bool],
        out: list[Up],
    ) -> None:
        regions = self._regions
        assert regions is not None
        if tr.score >= obj.best_score:
            obj.best_score, obj.best_box = tr.score, tr.box
        if regions.zones:
            for change in regions.zone_changes(obj.regions, tr.label, in_zones, ts):
                obj.changes.add("loitering" if change.loitering else "zone")
        if regions.lines:
            for crossing in regions.crossings(obj.regions, tr.label, tr.anchor, ts):
                obj.lines.append(LineCrossed(crossing.line, crossing.direction.value, ts))
                obj.changes.add("line")
                out.append(Crossing(
                    self.config.name, crossing.line, tr.label, crossing.direction.value, ts
                ))
        mode = self.config.tracking.snapshot
        if mode != "off":
            q = snapshots.quality(tr.score, tr.box, size)
            if obj.view is None or q > obj.view.quality * snapshots.BETTER:
                if image is None:
                    self._want_view = True  # ask for the next frame's pixels
                else:
                    obj.view = snapshots.take_view(image, tr.box, q, mode)
                    obj.view_sent = False
                    if obj.event_id:
                        obj.changes.add("snapshot")

    def _count(self, tracks: list[Track], ts: float) -> list[Up]:
        assert self._regions is not None
        raw: dict[str, int] = {}
        states: list[tuple[str, TrackRegions]] = []
        for tr in tracks:
            obj = self._objects.get(tr.id)
            if tr.confirmed and obj is not None:
                raw[tr.label] = raw.get(tr.label, 0) + 1
                states.append((tr.label, obj.regions))
        changed = self._counts.feed(raw, ts)
        zones = self._regions.occupied(states)
        if zones != self._zone_counts:
            self._zone_counts = zones
            changed = True
        if not changed and not self._announce:
            return []
        self._announce = False
        return [Counts(self.config.name, dict(self._counts.published), zones)]

    # --- messages ----------------------------------------------------------------------------

    def _event(
        self,
        kind: EventKind,
        tr: Track,
        obj: _Object,
        ts: float,
        reason: EndReason | None = None,
    ) -> ObjectEvent:
        t = self.config.tracking
        snapshot = b""
        if obj.view is not None and not obj.view_sent:
            snapshot = snapshots.encode(obj.view, t.snapshot, t.snapshot_size,
                                        t.snapshot_max_bytes)
            obj.view_sent = True
        regions = obj.regions.zones
        return ObjectEvent(
            kind=kind,
            event_id=obj.event_id,
            stream=self.config.name,
            label=tr.label,
            track_id=tr.id,
            start_ts=tr.first_seen,
            ts=ts,
            score=round(tr.score, 4),
            best_score=round(obj.best_score, 4),
            box=_rounded(tr.box),
            best_box=_rounded(obj.best_box),
            width=self._size[0],
            height=self._size[1],
            zones=tuple(sorted(n for n, z in regions.items() if z.inside)),
            loitering=tuple(sorted(n for n, z in regions.items() if z.loitering)),
            lines=tuple(obj.lines),
            stationary=tr.stationary,
            changes=tuple(sorted(obj.changes)),
            end_ts=_end_ts(kind, tr, ts, reason),
            end_reason=reason.value if reason is not None else "",
            snapshot=snapshot,
        )


def _end_ts(kind: EventKind, tr: Track, ts: float, reason: EndReason | None) -> float:
    if kind is not EventKind.END:
        return 0.0
    # A lost or departed object ended when it was last seen, not when the tracker gave up.
    return tr.last_seen if reason in (EndReason.LEFT, EndReason.LOST) else ts


def _rounded(box: Box) -> Box:
    return (round(box[0], 1), round(box[1], 1), round(box[2], 1), round(box[3], 1))
