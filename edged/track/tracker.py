"""A ByteTrack-style multi-object tracker with a Kalman motion model, one per stream.

Runs in a worker process, on the inference loop that processed the frame, right after its
boxes are decoded (pure numpy + scipy's assignment). A crash here is caught and logged by the
loop like any per-frame error; the tracker's state lives only in this process, so a worker
restart starts every stream's tracker empty (the supervisor ends the events it had open).

Association per frame, as in ByteTrack (Zhang et al. 2022):
1. detections scoring at least `track_score` are matched to every live track (also those missed
   for a while) by the overlap with the track's predicted box (Hungarian assignment);
2. detections between `keep_score` and `track_score` are matched to the tracks still unmatched
   that were seen in the previous frame: a blurred or occluded object keeps its track;
3. unmatched sure detections start tentative tracks, confirmed once matched for `confirm_s`.
Every threshold is in seconds of capture time, so the tracker behaves the same at any rate.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from edged.config.model import TrackingConfig
from edged.track.kalman import BoxFilter

# The low stage matches weak detections only where they overlap well (ByteTrack's value).
LOW_STAGE_IOU = 0.5
# Matching across labels is allowed (a detector flips between car and truck) but costs this much
# overlap, so a same-label detection wins.
LABEL_CHANGE_COST = 0.3
# Stationary: the centre stayed within this fraction of the box's size.
STILL_FRACTION = 0.25
# A box within this many pixels of the frame's edge touches it.
EDGE_PX = 4.0


class EndReason(enum.StrEnum):
    LEFT = "left"
    LOST = "lost"
    STREAM_OFFLINE = "stream_offline"
    SHUTDOWN = "shutdown"
    RESTART = "restart"


@dataclass(slots=True)
class Track:
    id: int
    label: str
    first_seen: float
    last_seen: float
    box: tuple[float, float, float, float]  # last observed, xyxy
    score: float  # last observed
    best_score: float
    hits: int = 1
    confirmed: bool = False
    seen_now: bool = True  # matched in the latest frame
    stationary: bool = False
    still_since: float = 0.0
    still_at: tuple[float, float] = (0.0, 0.0)
    # score mass per label: the track's label is the one detected most surely over its life
    label_mass: dict[str, float] = field(default_factory=dict)

    @property
    def anchor(self) -> tuple[float, float]:
        """Where the object stands: its box's bottom centre."""
        return ((self.box[0] + self.box[2]) / 2, self.box[3])


@dataclass(slots=True)
class Frame:
    """What one frame did to the tracks."""

    tracks: list[Track]  # live, confirmed or not, in creation order
    ended: list[tuple[Track, EndReason]]  # confirmed tracks that ended in this frame


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of xyxy boxes, (len(a), len(b))."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: np.ndarray = inter / np.maximum(union, 1e-9)
    return out


def _assign(cost: np.ndarray, limit: float) -> list[tuple[int, int]]:
    if not cost.size:
        return []
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] <= limit]


class Tracker:
    """Tracks of one stream. Not thread-safe: the caller serialises frames (in capture order)."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self._filter = BoxFilter()
        self._tracks: list[Track] = []
        self._ids = itertools.count(1)
        self._last_t: float | None = None

    @property
    def tracks(self) -> list[Track]:
        return list(self._tracks)

    def update(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: Sequence[str],
        t: float,
        size: tuple[int, int],
    ) -> Frame:
        """Feed one frame's detections (xyxy boxes, scores, labels) captured at `t` seconds."""
        cfg = self.config
        dt = 0.0 if self._last_t is None else max(t - self._last_t, 0.0)
        self._last_t = t
        frozen = np.array([tr.stationary for tr in self._tracks], dtype=bool)
        self._filter.predict(dt, frozen)
        predicted = self._filter.boxes()
        was_seen = [tr.seen_now for tr in self._tracks]
        for tr in self._tracks:
            tr.seen_now = False

        keep = scores >= cfg.keep_score
        boxes, scores = boxes[keep], scores[keep]
        labels = [lb for lb, k in zip(labels, keep.tolist(), strict=True) if k]
        high = np.flatnonzero(scores >= cfg.track_score)
        low = np.flatnonzero(scores < cfg.track_score)
        track_labels = np.array([tr.label for tr in self._tracks], dtype=object)
        det_labels = np.array(labels, dtype=object)

        matches: list[tuple[int, int]] = []
        # 1. sure detections against every live track
        all_tracks = np.arange(len(self._tracks))
        cost = self._cost(predicted, boxes, all_tracks, high, track_labels, det_labels)
        for r, c in _assign(cost, 1.0 - cfg.match_iou):
            matches.append((int(all_tracks[r]), int(high[c])))
        matched_tracks = {m[0] for m in matches}
        matched_high = {m[1] for m in matches}
        # 2. weak detections against the tracks seen last frame and still unmatched
        recent = np.array(
            [i for i in range(len(self._tracks)) if i not in matched_tracks and was_seen[i]],
            dtype=int,
        )
        cost = self._cost(predicted, boxes, recent, low, track_labels, det_labels)
        for r, c in _assign(cost, 1.0 - LOW_STAGE_IOU):
            matches.append((int(recent[r]), int(low[c])))

        # Python floats once for the whole frame: indexing numpy element by element costs more.
        box_rows: list[list[float]] = boxes.tolist()
        score_list: list[float] = scores.tolist()
        for ti, di in matches:
            self._observe(self._tracks[ti], box_rows[di], score_list[di], labels[di], t)
        if matches:
            rows = np.array([m[0] for m in matches])
            self._filter.update(rows, boxes[[m[1] for m in matches]])

        # The tracks _expire looks at were not matched, so their prediction is their state.
        ended = self._expire(t, size, predicted)
        # 3. sure detections nobody claimed start tentative tracks
        fresh = [int(i) for i in high if int(i) not in matched_high]
        if fresh:
            self._filter.add(boxes[fresh])
            for di in fresh:
                box = box_rows[di]
                tr = Track(
                    id=next(self._ids),
                    label=labels[di],
                    first_seen=t,
                    last_seen=t,
                    box=(box[0], box[1], box[2], box[3]),
                    score=score_list[di],
                    best_score=score_list[di],
                    still_since=t,
                )
                tr.still_at = _centre(tr.box)
                tr.label_mass[tr.label] = tr.score
                self._tracks.append(tr)
        return Frame(list(self._tracks), ended)

    def end_all(self) -> list[Track]:
        """Forget every track (the stream went offline or stops); return the confirmed ones."""
        gone = [tr for tr in self._tracks if tr.confirmed]
        self._tracks = []
        self._filter = BoxFilter()
        self._last_t = None
        return gone

    # --- internals -------------------------------------------------------------------------

    def _cost(
        self,
        predicted: np.ndarray,
        boxes: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        track_labels: np.ndarray,
        det_labels: np.ndarray,
    ) -> np.ndarray:
        if not len(rows) or not len(cols):
            return np.zeros((len(rows), len(cols)))
        cost = 1.0 - iou_matrix(predicted[rows], boxes[cols])
        differ = track_labels[rows][:, None] != det_labels[cols][None, :]
        cost[differ] += LABEL_CHANGE_COST
        return cost

    def _observe(self, tr: Track, box: list[float], score: float, label: str, t: float) -> None:
        cfg = self.config
        tr.box = (box[0], box[1], box[2], box[3])
        tr.score = score
        tr.best_score = max(tr.best_score, score)
        tr.hits += 1
        tr.last_seen = t
        tr.seen_now = True
        mass = tr.label_mass[label] = tr.label_mass.get(label, 0.0) + score
        if label != tr.label and mass > tr.label_mass[tr.label]:
            tr.label = label
        if not tr.confirmed and tr.hits >= 2 and t - tr.first_seen >= cfg.confirm_s:
            tr.confirmed = True
        centre = _centre(tr.box)
        size = max(tr.box[2] - tr.box[0], tr.box[3] - tr.box[1])
        moved = math.hypot(centre[0] - tr.still_at[0], centre[1] - tr.still_at[1])
        if moved > STILL_FRACTION * size:
            tr.still_at, tr.still_since, tr.stationary = centre, t, False
        elif t - tr.still_since >= cfg.stationary_s:
            tr.stationary = True

    def _expire(
        self, t: float, size: tuple[int, int], predicted: np.ndarray
    ) -> list[tuple[Track, EndReason]]:
        cfg = self.config
        keep = np.ones(len(self._tracks), dtype=bool)
        ended: list[tuple[Track, EndReason]] = []
        for i, tr in enumerate(self._tracks):
            missed = t - tr.last_seen
            if tr.seen_now:
                continue
            if not tr.confirmed:
                # a tentative track gets one chance per confirmation window
                if missed > cfg.confirm_s:
                    keep[i] = False
                continue
            limit = cfg.stationary_lost_s if tr.stationary else cfg.lost_s
            if missed > limit:
                keep[i] = False
                # Left: last seen touching the edge, or its motion has carried it out since.
                gone = _at_edge(tr.box, size) or _outside(predicted[i], size)
                ended.append((tr, EndReason.LEFT if gone else EndReason.LOST))
        if not keep.all():
            self._tracks = [tr for tr, k in zip(self._tracks, keep.tolist(), strict=True) if k]
            self._filter.keep(keep)
        return ended


def _centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _outside(box: np.ndarray, size: tuple[int, int]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return bool(cx < 0 or cy < 0 or cx > size[0] or cy > size[1])


def _at_edge(box: tuple[float, float, float, float], size: tuple[int, int]) -> bool:
    width, height = size
    return (
        box[0] <= EDGE_PX
        or box[1] <= EDGE_PX
        or box[2] >= width - EDGE_PX
        or box[3] >= height - EDGE_PX
    )
