"""NMS against hand-worked overlaps and a plain-Python reference."""

from __future__ import annotations

import numpy as np

from edged.detect.nms import nms


def _arrays(
    boxes: list[list[float]], scores: list[float], classes: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.array(boxes, np.float32), np.array(scores, np.float32), np.array(classes, np.int32)


def test_overlap_one_third_survives_default_threshold_but_not_a_lower_one() -> None:
    # Two 10x10 boxes shifted by 5: intersection 50, union 150, IoU 1/3.
    b, s, c = _arrays([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], [0, 0])
    assert list(nms(b, s, c, iou_threshold=0.45)) == [0, 1]
    assert list(nms(b, s, c, iou_threshold=0.3)) == [0]


def test_duplicate_of_same_class_is_dropped_and_other_class_kept() -> None:
    b, s, c = _arrays(
        [[10, 10, 50, 50], [11, 11, 51, 51], [10, 10, 50, 50]], [0.6, 0.9, 0.7], [3, 3, 7]
    )
    # Best first: the 0.9 box of class 3, then class 7's box, which no class-3 box may suppress.
    assert list(nms(b, s, c)) == [1, 2]


def test_suppressed_box_does_not_suppress_others() -> None:
    # A overlaps B by 0.6, B overlaps C by 0.6, A and C only by 0.25: greedy keeps A and C.
    b, s, c = _arrays(
        [[0, 0, 10, 10], [2.5, 0, 12.5, 10], [5, 0, 15, 10]], [0.9, 0.8, 0.7], [1] * 3
    )
    assert list(nms(b, s, c, iou_threshold=0.45)) == [0, 2]


def test_cap_keeps_the_best_scores() -> None:
    # 50 disjoint boxes, scores increasing with the index.
    boxes = [[i * 20.0, 0.0, i * 20.0 + 10.0, 10.0] for i in range(50)]
    b, s, c = _arrays(boxes, [i / 100 for i in range(50)], [0] * 50)
    assert list(nms(b, s, c, max_detections=5)) == [49, 48, 47, 46, 45]


def test_empty_input() -> None:
    keep = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
    assert keep.shape == (0,)


def _reference_nms(
    boxes: list[list[float]], scores: list[float], classes: list[int], thr: float
) -> list[int]:
    """Textbook greedy NMS, one class at a time, in plain Python."""

    def iou(a: list[float], b: list[float]) -> float:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    kept: list[int] = []
    for cls in set(classes):
        todo = sorted((i for i in range(len(boxes)) if classes[i] == cls), key=lambda i: -scores[i])
        while todo:
            best = todo.pop(0)
            kept.append(best)
            todo = [i for i in todo if iou(boxes[best], boxes[i]) <= thr]
    return sorted(kept, key=lambda i: -scores[i])


def test_matches_plain_python_reference_on_random_crowded_boxes() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = 300
        xy = rng.uniform(0, 600, (n, 2))
        wh = rng.uniform(5, 120, (n, 2))
        boxes = np.concatenate((xy, xy + wh), axis=1).astype(np.float32)
        scores = rng.permutation(n).astype(np.float32) / n  # distinct, so the order is unique
        classes = rng.integers(0, 4, n).astype(np.int32)
        expected = _reference_nms(boxes.tolist(), scores.tolist(), classes.tolist(), 0.45)
        assert list(nms(boxes, scores, classes, 0.45, max_detections=n)) == expected


def test_the_cap_counts_kept_boxes_not_candidates() -> None:
    # 10 candidates: pairs of near-duplicates (the second of each pair suppressed) first, then
    # disjoint boxes; a cap of 4 keeps the best 4 that survive, reaching past rank 4.
    boxes = [[i * 20.0, 0.0, i * 20.0 + 10.0, 10.0] for i in range(3) for _ in range(2)]
    boxes += [[100.0 + i * 20.0, 0.0, 110.0 + i * 20.0, 10.0] for i in range(4)]
    scores = [1.0 - i / 20 for i in range(10)]
    b, s, c = _arrays(boxes, scores, [0] * 10)
    assert list(nms(b, s, c, max_detections=4)) == [0, 2, 4, 6]
