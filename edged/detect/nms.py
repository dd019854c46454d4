"""Class-aware greedy non-maximum suppression in numpy.

Runs in a worker process, after every model output is decoded. Pure arithmetic on arrays the
decoder made: it cannot fail on well-formed input, and a shape mismatch raises ValueError, which
the worker reports as a failed frame.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def nms(
    boxes: NDArray[np.floating],
    scores: NDArray[np.floating],
    class_ids: NDArray[np.integer],
    iou_threshold: float = 0.45,
    max_detections: int = 300,
) -> NDArray[np.intp]:
    """Indices of the boxes to keep, best score first.

    A box is dropped when it overlaps a better-scoring kept box of the same class by
    IoU > threshold. At most `max_detections` indices are returned.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not (len(boxes) == len(scores) == len(class_ids)):
        raise ValueError(
            f"nms wants boxes [K,4], scores [K], class_ids [K]; got {boxes.shape}, "
            f"{scores.shape}, {class_ids.shape}"
        )
    if len(boxes) == 0 or max_detections <= 0:
        return np.empty(0, np.intp)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float32, copy=False)
    cls = class_ids[order]
    # All pairwise overlaps at once: a few hundred candidates make a matrix of some 10^5
    # entries, far cheaper than one numpy round per kept box (~4x on a crowded 720p frame).
    x1, y1, x2, y2 = (b[:, i] for i in range(4))
    iw = np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])
    ih = np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    areas = np.clip(x2 - x1, 0.0, None) * np.clip(y2 - y1, 0.0, None)
    union = areas[:, None] + areas[None, :] - inter
    # inter > t * union is IoU > t without dividing, and is False for an empty union.
    suppresses = (inter > iou_threshold * union) & (cls[:, None] == cls[None, :])
    removed = np.zeros(len(b), np.bool_)
    keep: list[int] = []
    for i in range(len(b)):
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) == max_detections:
            break
        removed |= suppresses[i]
    return order[np.asarray(keep, np.intp)]
