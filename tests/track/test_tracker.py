"""The tracker on synthetic boxes: identities, the two score stages, times in seconds."""

from __future__ import annotations

import numpy as np
import pytest

from edged.config.model import TrackingConfig
from edged.track.tracker import EndReason, Tracker, iou_matrix

SIZE = (1280, 720)


def _feed(tracker: Tracker, t: float, *dets: tuple[float, float, float, str]) -> object:
    """Detections as (x, y, score, label): 40x80 boxes with their top-left corner at x, y."""
    boxes = np.array([[x, y, x + 40, y + 80] for x, y, _, _ in dets], dtype=float).reshape(-1, 4)
    scores = np.array([s for _, _, s, _ in dets], dtype=float)
    return tracker.update(boxes, scores, [lb for *_, lb in dets], t, SIZE)


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    assert np.allclose(iou_matrix(a, b), [[1, 1 / 3, 0], [1, 1 / 3, 0]])


def test_two_people_crossing_keep_their_ids() -> None:
    tracker = Tracker(TrackingConfig())
    ids: dict[str, set[int]] = {"left": set(), "right": set()}
    for i in range(60):  # 2 s at 30 frames/s; they pass each other in the middle
        t = i / 30
        _feed(tracker, t, (100 + 10 * i, 300, 0.9, "person"), (700 - 10 * i, 320, 0.9, "person"))
        for tr in tracker.tracks:
            if tr.confirmed:
                ids["left" if tr.id == 1 else "right"].add(tr.id)
    assert ids == {"left": {1}, "right": {2}}


@pytest.mark.parametrize("fps", [5, 30])
def test_confirm_and_lost_are_seconds_at_any_rate(fps: int) -> None:
    config = TrackingConfig(confirm_s=0.4, lost_s=1.0)
    tracker = Tracker(config)
    confirmed_at = None
    t = 0.0
    for i in range(2 * fps):
        t = i / fps
        _feed(tracker, t, (500 + 50 * t, 300, 0.9, "car"))
        if confirmed_at is None and tracker.tracks[0].confirmed:
            confirmed_at = t
    assert confirmed_at is not None and 0.4 <= confirmed_at < 0.4 + 1 / fps + 1e-9
    last_seen = t
    ended_at = None
    while ended_at is None:
        t += 1 / fps
        frame = _feed(tracker, t)
        if frame.ended:  # type: ignore[attr-defined]
            ended_at = t
            assert frame.ended[0][1] is EndReason.LOST  # type: ignore[attr-defined]
    assert 1.0 < ended_at - last_seen <= 1.0 + 1 / fps + 1e-9


def test_weak_detections_keep_a_track_but_do_not_start_one() -> None:
    tracker = Tracker(TrackingConfig(track_score=0.6, keep_score=0.2, lost_s=0.5))
    for i in range(10):
        _feed(tracker, i / 10, (300 + 5 * i, 300, 0.9, "person"))
    track_id = tracker.tracks[0].id
    for i in range(10, 40):  # 3 s of blurred frames: 0.3, below track_score
        frame = _feed(tracker, i / 10, (300 + 5 * i, 300, 0.3, "person"))
        assert not frame.ended  # type: ignore[attr-defined]
    assert [tr.id for tr in tracker.tracks] == [track_id]
    fresh = Tracker(TrackingConfig(track_score=0.6, keep_score=0.2))
    for i in range(10):
        _feed(fresh, i / 10, (300, 300, 0.3, "person"))
    assert fresh.tracks == []


def test_missed_frames_are_bridged_by_the_motion_model() -> None:
    tracker = Tracker(TrackingConfig(lost_s=1.0))
    for i in range(15):  # 0.5 s at 30/s, moving 300 px/s
        _feed(tracker, i / 30, (100 + 10 * i, 300, 0.9, "car"))
    for i in range(15, 30):  # 0.5 s unseen (occluded)
        _feed(tracker, i / 30)
    _feed(tracker, 30 / 30, (100 + 10 * 30, 300, 0.9, "car"))
    assert [tr.id for tr in tracker.tracks] == [1]


def test_a_track_that_leaves_by_the_edge_ends_as_left() -> None:
    tracker = Tracker(TrackingConfig(lost_s=0.5))
    for i in range(20):
        _feed(tracker, i / 10, (1240, 300, 0.9, "car"))  # right edge at 1280
    ended = []
    for i in range(20, 30):
        ended += _feed(tracker, i / 10).ended  # type: ignore[attr-defined]
    assert [r for _, r in ended] == [EndReason.LEFT]


def test_a_still_object_becomes_stationary_and_survives_long_gaps() -> None:
    config = TrackingConfig(stationary_s=2.0, lost_s=0.5, stationary_lost_s=10.0)
    tracker = Tracker(config)
    for i in range(30):
        _feed(tracker, i / 10, (600 + (i % 2), 300, 0.8, "car"))  # detector jitter only
    assert tracker.tracks[0].stationary
    t = 3.0
    for _ in range(8):  # 8 s with no detection at all
        t += 1.0
        assert not _feed(tracker, t).ended  # type: ignore[attr-defined]
    _feed(tracker, t + 0.1, (601, 301, 0.8, "car"))
    assert [tr.id for tr in tracker.tracks] == [1]


def test_label_is_the_surest_over_the_track() -> None:
    tracker = Tracker(TrackingConfig())
    for i in range(10):
        label = "truck" if i == 4 else "car"
        _feed(tracker, i / 10, (300 + 3 * i, 300, 0.8, label))
    assert [(tr.id, tr.label) for tr in tracker.tracks] == [(1, "car")]
