"""A decoded frame on the host, converted to BGR only where a snapshot needs it. Runs in workers.

A media path hands one of these out on request (`MediaPath.snapshot`) instead of a BGR copy of
the whole frame: the events of a stream usually want a crop around one object, and converting a
720p frame to BGR costs 0.6-1.8 core-ms here (into a new array, as each snapshot was), a
240x320 crop 2.5-6 times less (tests/backends/test_picture.py). The
picture keeps the decoder's own 4:2:0 planes (I420 from FFmpeg, NV12 from an NPU's decoder)
and converts the region it is asked for with OpenCV. A picture is read by the inference loop that
tracks its frame, after the source thread made it; it owns (or holds a reference to) its pixels,
so the decoder reusing its buffers cannot change it.
"""

from __future__ import annotations

from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

Region = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels, x2/y2 exclusive
Image = NDArray[np.uint8]


class Picture(Protocol):
    width: int
    height: int

    def bgr(self, region: Region | None = None) -> Image:
        """The region (the whole frame when None) as a new HxWx3 uint8 BGR array."""


def _clip(region: Region | None, width: int, height: int) -> Region:
    if region is None:
        return 0, 0, width, height
    x1, y1, x2, y2 = region
    x1, y1 = min(max(x1, 0), width), min(max(y1, 0), height)
    return x1, y1, max(min(x2, width), x1), max(min(y2, height), y1)


class BgrPicture:
    """A picture that is already BGR (a backend that only has that, tests)."""

    def __init__(self, image: Image) -> None:
        self._image = image
        self.height, self.width = image.shape[:2]

    def bgr(self, region: Region | None = None) -> Image:
        x1, y1, x2, y2 = _clip(region, self.width, self.height)
        return self._image[y1:y2, x1:x2].copy()


class _Yuv420:
    """Shared by the planar layouts: round the region out to even pixels (chroma covers 2x2
    pixels), convert that, cut the exact region out of it."""

    width: int
    height: int

    def bgr(self, region: Region | None = None) -> Image:
        x1, y1, x2, y2 = _clip(region, self.width, self.height)
        if x2 <= x1 or y2 <= y1:
            return np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        # (An odd-sized frame loses its last column or row: there is no chroma sample for it.)
        ex1, ey1 = x1 & ~1, y1 & ~1
        ex2, ey2 = min(x2 + (x2 & 1), self.width & ~1), min(y2 + (y2 & 1), self.height & ~1)
        if ex2 <= ex1 or ey2 <= ey1:
            return np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        converted = self._convert(ex1, ey1, ex2, ey2)
        return converted[y1 - ey1 : y2 - ey1, x1 - ex1 : x2 - ex1]

    def _convert(self, x1: int, y1: int, x2: int, y2: int) -> Image:
        raise NotImplementedError


class I420Picture(_Yuv420):
    """Three planes: Y at full size, U and V at half size each way (FFmpeg's yuv420p)."""

    def __init__(self, y: Image, u: Image, v: Image, keep: Any = None) -> None:
        self._y, self._u, self._v = y, u, v
        self._keep = keep  # whatever owns the planes' memory (a PyAV frame), kept alive
        self.height, self.width = y.shape

    def _convert(self, x1: int, y1: int, x2: int, y2: int) -> Image:
        h, w = y2 - y1, x2 - x1
        packed = np.empty((h * 3 // 2, w), np.uint8)
        packed[:h] = self._y[y1:y2, x1:x2]
        chroma = packed[h:].reshape(-1)
        quarter = (h // 2) * (w // 2)
        chroma[:quarter] = self._u[y1 // 2 : y2 // 2, x1 // 2 : x2 // 2].reshape(-1)
        chroma[quarter:] = self._v[y1 // 2 : y2 // 2, x1 // 2 : x2 // 2].reshape(-1)
        out = np.empty((h, w, 3), np.uint8)
        cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_I420, dst=out)
        return out


class Nv12Picture(_Yuv420):
    """Two planes: Y, then U and V interleaved at half height (an NPU decoder's NV12)."""

    def __init__(self, y: Image, uv: Image) -> None:
        self._y, self._uv = y, uv  # uv: (height / 2) rows of width bytes, U V U V ...
        self.height, self.width = y.shape

    def _convert(self, x1: int, y1: int, x2: int, y2: int) -> Image:
        h = y2 - y1
        packed = np.empty((h * 3 // 2, x2 - x1), np.uint8)
        packed[:h] = self._y[y1:y2, x1:x2]
        packed[h:] = self._uv[y1 // 2 : y2 // 2, x1:x2]
        out = np.empty((h, x2 - x1, 3), np.uint8)
        cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_NV12, dst=out)
        return out
