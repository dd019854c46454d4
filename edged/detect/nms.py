"""Class-aware greedy non-maximum suppression in numpy.

Runs in a worker process, after every model output is decoded. Pure arithmetic on arrays the
decoder made: it cannot fail on well-formed input, and a shape mismatch raises ValueError, which
the worker reports as a failed frame.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def box_iou(box: NDArray[np.float64], others: NDArray[np.float64]) -> NDArray[np.float64]:
    """IoU of one x1y1x2y2 box against `others` ([K, 4]); an empty union gives IoU 0."""
    xx1 = np.maximum(box[0], others[:, 0])
    yy1 = np.maximum(box[1], others[:, 1])
    xx2 = np.minimum(box[2], others[:, 2])
    yy2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(xx2 - xx1, 0.0, None) * np.clip(yy2 - yy1, 0.0, None)
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    areas = np.clip(others[:, 2] - others[:, 0], 0.0, None) * np.clip(
        others[:, 3] - others[:, 1], 0.0, None
    )
    union = area + areas - inter
    iou: NDArray[np.float64] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0.0)
    return iou


def nms(
    boxes: NDArray[np.floating],
    scores: NDArray[np.floating],
    class_ids: NDArray[np.integer],
    iou_threshold: float = 0.45,
    max_detections: int = 300,
) -> NDArray[np.intp]:
    """Indices of the boxes to keep, best score first.

    A box is dropped when it overlaps a better-scoring box of the same class by IoU > threshold.
    At most `max_detections` indices are returned.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not (len(boxes) == len(scores) == len(class_ids)):
        raise ValueError(
            f"nms wants boxes [K,4], scores [K], class_ids [K]; got {boxes.shape}, "
            f"{scores.shape}, {class_ids.shape}"
        )
    if len(boxes) == 0 or max_detections <= 0:
        return np.empty(0, np.intp)
    # Shifting each class to its own far-away square makes boxes of different classes never
    # overlap, so one greedy pass does every class at once. float64 keeps the shifted
    # coordinates exact to well under a pixel.
    b = boxes.astype(np.float64)
    span = float(b.max() - min(b.min(), 0.0)) + 1.0
    shifted = b + (class_ids.astype(np.float64) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[box_iou(shifted[best], shifted[rest]) <= iou_threshold]
    return np.asarray(keep, np.intp)
