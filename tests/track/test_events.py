"""A stream's events on synthetic detections: new / update / end, counts, snapshots."""

from __future__ import annotations

import cv2
import numpy as np

from edged.backends.picture import BgrPicture
from edged.config.model import LineConfig, StreamConfig, TrackingConfig, ZoneConfig
from edged.protocol import Counts, Crossing, EventKind, ObjectEvent
from edged.track.events import StreamEvents
from edged.track.tracker import EndReason

SIZE = (640, 480)


def _stream(**tracking: object) -> StreamConfig:
    return StreamConfig(
        name="door",
        source="door.mp4",
        worker="cpu",
        tracking=TrackingConfig(**tracking),  # type: ignore[arg-type]
        zones=(ZoneConfig(name="hall", points=((0, 0), (320, 0), (320, 480), (0, 480)),
                          enter_s=0.2, leave_s=0.2),),
        # walking up the picture from its first point, a crossing to the right is `in`
        lines=(LineConfig(name="mid", points=((320, 480), (320, 0)), settle_s=0.2),),
    )


def _walk(events: StreamEvents, seconds: float, fps: float = 10.0,
          image: BgrPicture | None = None) -> list[object]:
    """One person walking left to right across the frame at 200 px/s."""
    out: list[object] = []
    for i in range(int(seconds * fps)):
        t = i / fps
        x = 40 + 200 * t
        found = [("person", 0, 0.9, (x, 200.0, x + 60, 360.0))] if x + 60 < SIZE[0] else []
        out += events.on_frame(i, t, image, SIZE, found)
    return out


def test_one_walker_is_one_new_updates_and_one_end() -> None:
    events = StreamEvents(_stream(update_interval_s=0.0, lost_s=0.5, snapshot="off"))
    out = _walk(events, 4.0)
    evs = [m for m in out if isinstance(m, ObjectEvent)]
    assert next(e.kind for e in evs) is EventKind.NEW
    assert [e.kind for e in evs].count(EventKind.END) == 1 and evs[-1].kind is EventKind.END
    assert len({e.event_id for e in evs}) == 1
    assert evs[-1].end_reason == EndReason.LEFT  # last seen at the right edge
    assert "hall" in evs[0].zones and evs[-1].zones == ()
    assert [(c.line, c.direction) for c in evs[-1].lines] == [("mid", "in")]
    assert any("line" in e.changes for e in evs if e.kind is EventKind.UPDATE)
    crossings = [m for m in out if isinstance(m, Crossing)]
    assert [(c.line, c.label, c.direction) for c in crossings] == [("mid", "person", "in")]
    for i in range(40, 80):  # 4 s more of an empty frame: the count falls after count_hold_s
        out += events.on_frame(i, i / 10, None, SIZE, [])
    counts = [m.labels.get("person", 0) for m in out if isinstance(m, Counts)]
    assert 1 in counts and counts[-1] == 0
    assert [m.zones["hall"].get("person", 0) for m in out if isinstance(m, Counts)][-1] == 0


def test_updates_are_limited_to_one_per_interval() -> None:
    events = StreamEvents(_stream(update_interval_s=10.0, snapshot="off"))
    evs = [m for m in _walk(events, 2.9) if isinstance(m, ObjectEvent)]
    assert [e.kind for e in evs] == [EventKind.NEW]


def test_end_all_ends_each_open_event_once() -> None:
    events = StreamEvents(_stream(snapshot="off"))
    _walk(events, 1.0)
    ended = events.end_all(EndReason.STREAM_OFFLINE, 99.0)
    assert [(e.kind, e.end_reason) for e in ended] == [  # type: ignore[union-attr]
        (EventKind.END, "stream_offline")
    ]
    assert events.end_all(EndReason.SHUTDOWN, 100.0) == []


def test_snapshot_is_a_jpeg_of_the_object() -> None:
    image = np.full((SIZE[1], SIZE[0], 3), 255, np.uint8)
    events = StreamEvents(_stream(snapshot="crop"))
    out: list[ObjectEvent] = []
    for i in range(10):
        t = i / 10
        image[:] = 255
        x = 40 + 20 * i
        image[200:360, x : x + 60] = (0, 0, 200)  # the "person": a red block where its box is
        found = [("person", 0, 0.9, (float(x), 200.0, x + 60.0, 360.0))]
        frame = BgrPicture(image)
        out += [m for m in events.on_frame(i, t, frame, SIZE, found) if isinstance(m, ObjectEvent)]
    snap = out[0].snapshot
    assert out[0].kind is EventKind.NEW and snap[:2] == b"\xff\xd8"
    crop = cv2.imdecode(np.frombuffer(snap, np.uint8), cv2.IMREAD_COLOR)
    h, w = crop.shape[:2]
    # the block fills the middle of the crop (15 % margin on each side)
    centre = crop[h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5].reshape(-1, 3).mean(axis=0)
    assert centre[2] > 150 and centre[0] < 60 and centre[1] < 60
    # 15 % margin (at least a 160-pixel crop: a small object keeps its surroundings), cut only
    # by the frame's edge (the block starts 40 pixels from the left)
    assert 140 <= w <= 170 and 200 <= h <= 215, (w, h)
