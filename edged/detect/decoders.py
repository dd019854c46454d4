"""Decoders from raw YOLOX / YOLOv5 / YOLOv8 outputs to detections in frame pixels.

Runs in a worker process, once per frame, right after inference. Vectorised numpy: rows under the
score threshold are dropped first, so only the few candidates left are decoded and suppressed.
An output whose shape does not fit the configured format, input size or class count raises
ValueError naming both; the worker reports it (a wrong `model_format` in the config shows up on
the first frame, not as silent garbage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edged.detect.nms import nms

FloatArray = NDArray[np.float32]

# Bounds NMS work (a KxK overlap matrix, ~6 ms at K = 1000) when a very low score threshold
# lets thousands of rows through.
PRE_NMS_TOP_K = 1000
YOLOX_STRIDES = (8, 16, 32)


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """Boxes x1y1x2y2 in frame pixels (float32 [K,4]), scores (float32 [K]), class ids (int32 [K]),
    best score first."""

    boxes: FloatArray
    scores: FloatArray
    class_ids: NDArray[np.int32]

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
        )


# (raw model output, scale r, frame width, frame height, min score) -> detections
Decoder = Callable[[np.ndarray, float, int, int, float], Detections]


class _Base:
    def __init__(self, num_classes: int, iou_threshold: float, max_detections: int) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections

    def _finish(
        self,
        cxcywh: FloatArray,
        scores: FloatArray,
        class_ids: NDArray[np.intp],
        *,
        scale: float,
        frame_w: int,
        frame_h: int,
    ) -> Detections:
        """Candidates in input pixels -> clipped frame boxes, suppressed and capped."""
        if len(scores) > PRE_NMS_TOP_K:
            top = np.argpartition(-scores, PRE_NMS_TOP_K)[:PRE_NMS_TOP_K]
            cxcywh, scores, class_ids = cxcywh[top], scores[top], class_ids[top]
        half = cxcywh[:, 2:4] * 0.5
        boxes = np.concatenate((cxcywh[:, :2] - half, cxcywh[:, :2] + half), axis=1)
        boxes *= np.float32(1.0 / scale)
        np.clip(boxes[:, 0::2], 0.0, frame_w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0.0, frame_h, out=boxes[:, 1::2])
        # A box wholly in the padding or off-frame clips to zero area: nothing a user can see.
        visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, class_ids = boxes[visible], scores[visible], class_ids[visible]
        keep = nms(boxes, scores, class_ids, self.iou_threshold, self.max_detections)
        return Detections(
            boxes[keep].astype(np.float32, copy=False),
            scores[keep].astype(np.float32, copy=False),
            class_ids[keep].astype(np.int32),
        )

    @staticmethod
    def _check(output: np.ndarray, fits: bool, expected: str) -> None:
        if not fits:
            raise ValueError(
                f"expected a model output of shape {expected}, got {output.shape}: "
                "check model_format, the input size and the number of classes"
            )


class YoloxDecoder(_Base):
    """YOLOX `[1, N, 5+C]`, grid-relative: centre `(x + grid) * stride`, size `exp(w) * stride`."""

    def __init__(
        self,
        input_size: tuple[int, int],
        num_classes: int,
        iou_threshold: float = 0.45,
        max_detections: int = 300,
    ) -> None:
        super().__init__(num_classes, iou_threshold, max_detections)
        self.grids, self.strides = yolox_grids(input_size)

    def __call__(
        self, output: np.ndarray, scale: float, frame_w: int, frame_h: int, min_score: float
    ) -> Detections:
        expected = (1, len(self.grids), 5 + self.num_classes)
        self._check(output, output.shape == expected, f"{list(expected)} (yolox)")
        rows = output[0]
        # score = obj * cls <= obj, so the objectness column alone rules out most rows cheaply.
        idx = np.flatnonzero(rows[:, 4] >= min_score)
        cand = rows[idx]
        cls_scores = cand[:, 5:]
        class_ids = cls_scores.argmax(axis=1)
        scores = cand[:, 4] * cls_scores[np.arange(len(cand)), class_ids]
        ok = scores >= min_score
        idx, cand, class_ids, scores = idx[ok], cand[ok], class_ids[ok], scores[ok]
        stride = self.strides[idx]
        cxcywh = np.empty((len(cand), 4), np.float32)
        cxcywh[:, :2] = (cand[:, :2] + self.grids[idx]) * stride
        cxcywh[:, 2:] = np.exp(cand[:, 2:4]) * stride
        return self._finish(
            cxcywh, scores, class_ids, scale=scale, frame_w=frame_w, frame_h=frame_h
        )


def yolox_grids(input_size: tuple[int, int]) -> tuple[FloatArray, FloatArray]:
    """Grid offsets ([N,2] x,y) and strides ([N,1]) for an input (width, height), stride 8 first."""
    width, height = input_size
    grids, strides = [], []
    for stride in YOLOX_STRIDES:
        gw, gh = width // stride, height // stride
        gy, gx = np.mgrid[0:gh, 0:gw]
        grids.append(np.stack((gx.ravel(), gy.ravel()), axis=1))
        strides.append(np.full((gw * gh, 1), stride))
    return (
        np.concatenate(grids).astype(np.float32),
        np.concatenate(strides).astype(np.float32),
    )


class Yolov5Decoder(_Base):
    """YOLOv5 `[1, N, 5+C]`: cx, cy, w, h in input pixels, objectness, class scores."""

    def __call__(
        self, output: np.ndarray, scale: float, frame_w: int, frame_h: int, min_score: float
    ) -> Detections:
        c = 5 + self.num_classes
        fits = output.ndim == 3 and output.shape[0] == 1 and output.shape[2] == c
        self._check(output, fits, f"[1, N, {c}] (yolov5)")
        rows = output[0]
        cand = rows[rows[:, 4] >= min_score]
        cls_scores = cand[:, 5:]
        class_ids = cls_scores.argmax(axis=1)
        scores = cand[:, 4] * cls_scores[np.arange(len(cand)), class_ids]
        ok = scores >= min_score
        return self._finish(
            cand[ok, :4].astype(np.float32),
            scores[ok],
            class_ids[ok],
            scale=scale,
            frame_w=frame_w,
            frame_h=frame_h,
        )


class Yolov8Decoder(_Base):
    """YOLOv8 `[1, 4+C, N]` (channels first): cx, cy, w, h in input pixels, class scores."""

    def __call__(
        self, output: np.ndarray, scale: float, frame_w: int, frame_h: int, min_score: float
    ) -> Detections:
        c = 4 + self.num_classes
        fits = output.ndim == 3 and output.shape[0] == 1 and output.shape[1] == c
        self._check(output, fits, f"[1, {c}, N] (yolov8)")
        cols = output[0]
        # Reductions along axis 0 walk the [C, N] block row by row, so no transpose copy is made.
        cls_scores = cols[4:]
        best = cls_scores.max(axis=0)
        idx = np.flatnonzero(best >= min_score)
        class_ids = cls_scores[:, idx].argmax(axis=0)
        cxcywh = np.ascontiguousarray(cols[:4, idx].T, dtype=np.float32)
        return self._finish(
            cxcywh, best[idx], class_ids, scale=scale, frame_w=frame_w, frame_h=frame_h
        )


def make_decoder(
    model_format: str,
    input_size: tuple[int, int],
    num_classes: int,
    *,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
) -> Decoder:
    """The decoder for `model_format` ("yolox" | "yolov5" | "yolov8"); input_size is (w, h)."""
    if model_format == "yolox":
        return YoloxDecoder(input_size, num_classes, iou_threshold, max_detections)
    if model_format == "yolov5":
        return Yolov5Decoder(num_classes, iou_threshold, max_detections)
    if model_format == "yolov8":
        return Yolov8Decoder(num_classes, iou_threshold, max_detections)
    raise ValueError(f"unknown model_format {model_format!r}: expected yolox, yolov5 or yolov8")
