"""Best-frame snapshots: keep each object's best view, encode it as a JPEG when it is sent.

Runs in a worker process, where the frame is (a frame never crosses the pipe; only the JPEG
does). The best view is the one with the highest score times the square root of the box's area,
and a box cut by the frame's edge counts for half (the object is not all there). A view must be
10 % better than the kept one to replace it, so a steady object does not copy pixels every frame.
Only the crop (or, in "frame" mode, the frame) of a better view is copied; the JPEG is encoded
once per event message that carries it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edged.backends.picture import Picture

Box = tuple[float, float, float, float]

# Margin around the box in "crop" mode, as a fraction of its size on each side; a small object
# gets more of its surroundings, up to a crop of MIN_CROP pixels a side (where is it, what is
# around it: what a person looking at the snapshot wants to see).
CROP_MARGIN = 0.15
MIN_CROP = 160
BETTER = 1.1
EDGE_PX = 4.0
QUALITIES = (85, 70, 55, 40, 25)


def quality(score: float, box: Box, size: tuple[int, int]) -> float:
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    q = score * math.sqrt(area)
    width, height = size
    cut = box[0] <= EDGE_PX or box[1] <= EDGE_PX or box[2] >= width - EDGE_PX
    if cut or box[3] >= height - EDGE_PX:
        q *= 0.5
    return q


@dataclass(slots=True)
class View:
    quality: float
    box: Box  # in frame pixels
    pixels: np.ndarray  # the crop or the frame, BGR (its own array)
    offset: tuple[int, int]  # where `pixels` starts in the frame


def take_view(image: Picture, box: Box, q: float, mode: str) -> View:
    """The view of `box` in this frame: only its crop (or in "frame" mode the frame) is
    converted to BGR."""
    height, width = image.height, image.width
    if mode == "frame":
        return View(q, box, image.bgr(), (0, 0))
    bw, bh = box[2] - box[0], box[3] - box[1]
    mx = max(bw * CROP_MARGIN, (MIN_CROP - bw) / 2)
    my = max(bh * CROP_MARGIN, (MIN_CROP - bh) / 2)
    x1 = max(int(box[0] - mx), 0)
    y1 = max(int(box[1] - my), 0)
    x2 = min(math.ceil(box[2] + mx), width)
    y2 = min(math.ceil(box[3] + my), height)
    return View(q, box, image.bgr((x1, y1, x2, y2)), (x1, y1))


def encode(view: View, mode: str, max_side: int, max_bytes: int) -> bytes:
    """The view as a JPEG no larger than `max_bytes` (b"" if even the lowest quality is larger)."""
    pixels = view.pixels
    if mode == "frame":
        pixels = pixels.copy()
        x1, y1, x2, y2 = (round(v) for v in view.box)
        thick = max(2, round(max(pixels.shape[:2]) / 400))
        cv2.rectangle(pixels, (x1, y1), (x2, y2), (0, 255, 0), thick)
    height, width = pixels.shape[:2]
    scale = min(1.0, max_side / max(height, width, 1))
    if scale < 1.0:
        size = (max(round(width * scale), 1), max(round(height * scale), 1))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    for q in QUALITIES:
        ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok and len(data) <= max_bytes:
            return bytes(data.tobytes())
    return b""
