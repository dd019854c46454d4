"""The cost of tracking and events per frame, at a given number of boxes.

Runs in the bench process (and in tests). A synthetic scene: `boxes` objects walk across a
1280x720 frame at different speeds with detector-like jitter, scores that dip below the sure
threshold, and one detection in ten missed; each frame goes through the worker's own
`StreamEvents` (tracker, two zones, a line, counts; snapshots off, since their cost is a JPEG
encode per event, not per frame). The figure is the CPU time per frame on this machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edged.config.model import LineConfig, StreamConfig, TrackingConfig, ZoneConfig

SIZE = (1280, 720)


@dataclass(frozen=True)
class TrackingCost:
    boxes: int
    frames: int
    median_ms: float
    p95_ms: float


def time_tracking(boxes: int, frames: int = 300, fps: float = 10.0, seed: int = 1) -> TrackingCost:
    from edged.track.events import StreamEvents

    config = StreamConfig(
        name="bench",
        source="bench",
        worker="bench",
        tracking=TrackingConfig(snapshot="off", update_interval_s=1.0),
        zones=(
            ZoneConfig(name="left", points=((0, 0), (0.5, 0), (0.5, 1), (0, 1)), normalized=True),
            ZoneConfig(name="right", points=((0.5, 0), (1, 0), (1, 1), (0.5, 1)), normalized=True),
        ),
        lines=(LineConfig(name="middle", points=((0.0, 0.5), (1.0, 0.5)), normalized=True),),
    )
    events = StreamEvents(config)
    rng = np.random.default_rng(seed)
    start = rng.uniform([0, 0], [SIZE[0] - 60, SIZE[1] - 120], size=(boxes, 2))
    velocity = rng.uniform(-80, 80, size=(boxes, 2))  # pixels a second
    sizes = rng.uniform([30, 60], [60, 120], size=(boxes, 2))
    costs: list[float] = []
    for i in range(frames):
        t = i / fps
        pos = start + velocity * t
        # walk back and forth inside the frame
        span = np.array([SIZE[0], SIZE[1]]) - sizes
        pos = np.abs((pos % (2 * span)) - span)
        pos = span - pos
        jitter = rng.normal(0, 2, size=(boxes, 4))
        xyxy = np.hstack([pos, pos + sizes]) + jitter
        scores = np.clip(rng.normal(0.7, 0.15, size=boxes), 0.05, 0.99)
        seen = rng.random(boxes) > 0.1
        found = [
            ("person", 0, float(s), (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
            for b, s, v in zip(xyxy, scores, seen, strict=True)
            if v
        ]
        began = time.process_time()
        events.on_frame(i, t, None, SIZE, found)
        costs.append((time.process_time() - began) * 1000.0)
    warm = np.array(costs[frames // 10 :])
    return TrackingCost(
        boxes, len(warm), round(float(np.median(warm)), 3), round(float(np.percentile(warm, 95)), 3)
    )
