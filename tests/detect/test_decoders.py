"""Decoders on hand-built outputs whose boxes are worked out from the format definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edged.detect.decoders import make_decoder

# YOLOX at 416x416: 52x52 rows of stride 8, then 26x26 of stride 16, then 13x13 of stride 32.
N_416 = 52 * 52 + 26 * 26 + 13 * 13


def _yolox_row(stride: int, gx: int, gy: int) -> int:
    offsets = {8: 0, 16: 52 * 52, 32: 52 * 52 + 26 * 26}
    return offsets[stride] + gy * (416 // stride) + gx


def test_yolox_grid_cell_decodes_to_frame_pixels() -> None:
    out = np.zeros((1, N_416, 85), np.float32)
    # Stride-16 cell (3, 7): centre (3.25 * 16, 7.5 * 16) = (52, 120), size (2 * 16, 4 * 16).
    out[0, _yolox_row(16, 3, 7), :6] = [0.25, 0.5, math.log(2), math.log(4), 0.9, 0.0]
    out[0, _yolox_row(16, 3, 7), 5 + 11] = 0.8
    # Confident objectness but weak class: 0.9 * 0.2 = 0.18 is under the threshold.
    out[0, _yolox_row(8, 40, 40), 4] = 0.9
    out[0, _yolox_row(8, 40, 40), 5 + 2] = 0.2
    # Frame twice the input size (scale 0.5): centre (104, 240), size 64x128.
    det = make_decoder("yolox", (416, 416), 80)(out, 0.5, 832, 832, 0.3)
    assert det.boxes.tolist() == [pytest.approx([72, 176, 136, 304], abs=1e-3)]
    assert det.scores.tolist() == [pytest.approx(0.72)]
    assert det.class_ids.tolist() == [11]
    assert det.boxes.dtype == np.float32 and det.class_ids.dtype == np.int32


def test_yolox_stride_32_cell_on_a_non_square_input() -> None:
    # 640x384: strides give 80x48 + 40x24 + 20x12 rows; last cell of stride 32 is (19, 11).
    n = 80 * 48 + 40 * 24 + 20 * 12
    out = np.zeros((1, n, 7), np.float32)  # 2 classes
    out[0, n - 1] = [0.5, 0.5, 0.0, 0.0, 1.0, 0.1, 0.95]
    det = make_decoder("yolox", (640, 384), 2)(out, 1.0, 640, 384, 0.5)
    # centre (19.5 * 32, 11.5 * 32) = (624, 368), size 32x32, clipped to the 640x384 frame.
    assert det.boxes.tolist() == [pytest.approx([608, 352, 640, 384])]
    assert det.class_ids.tolist() == [1]


def test_yolov5_rows_are_input_pixels_scored_by_objectness_times_class() -> None:
    out = np.zeros((1, 4, 85), np.float32)
    out[0, 0, :5] = [100, 50, 40, 20, 0.8]
    out[0, 0, 5 + 0] = 0.9  # person, 0.72
    out[0, 1, :5] = [300, 300, 10, 10, 0.5]
    out[0, 1, 5 + 3] = 0.5  # 0.25: under 0.3
    det = make_decoder("yolov5", (416, 416), 80)(out, 2.0, 208, 208, 0.3)
    assert det.boxes.tolist() == [pytest.approx([40, 20, 60, 30])]
    assert det.scores.tolist() == [pytest.approx(0.72)]
    assert det.class_ids.tolist() == [0]


def test_yolov8_columns_have_no_objectness() -> None:
    out = np.zeros((1, 84, 3), np.float32)
    out[0, :4, 0] = [100, 50, 40, 20]
    out[0, 4 + 2, 0] = 0.6  # car
    out[0, 4 + 5, 0] = 0.4  # bus, the same box: the best class wins
    out[0, :4, 1] = [10, 10, 4, 4]
    out[0, 4 + 9, 1] = 0.29
    det = make_decoder("yolov8", (416, 416), 80)(out, 1.0, 416, 416, 0.3)
    assert det.boxes.tolist() == [pytest.approx([80, 40, 120, 60])]
    assert det.scores.tolist() == [pytest.approx(0.6)]
    assert det.class_ids.tolist() == [2]


def test_boxes_are_clipped_to_the_frame_and_padding_only_boxes_dropped() -> None:
    # 1280x720 frame at scale 0.325: image is 416x234 in the input, rows 234.. are padding.
    out = np.zeros((1, 2, 6), np.float32)
    out[0, 0] = [400, 100, 60, 60, 1.0, 1.0]  # crosses the right edge
    out[0, 1] = [200, 300, 40, 40, 1.0, 1.0]  # wholly in the padding below the image
    det = make_decoder("yolov5", (416, 416), 1)(out, 0.325, 1280, 720, 0.5)
    assert len(det) == 1
    x1, y1, x2, y2 = det.boxes[0].tolist()
    assert x1 == pytest.approx(370 / 0.325) and x2 == 1280
    assert (y1, y2) == pytest.approx((70 / 0.325, 130 / 0.325))


def test_overlapping_same_class_boxes_are_suppressed_other_classes_kept() -> None:
    out = np.zeros((1, 84, 3), np.float32)
    out[0, :4, :] = [[100, 101, 100], [100, 100, 100], [50, 50, 50], [50, 50, 50]]
    out[0, 4 + 0, 0], out[0, 4 + 0, 1], out[0, 4 + 1, 2] = 0.9, 0.8, 0.7
    det = make_decoder("yolov8", (416, 416), 80)(out, 1.0, 416, 416, 0.3)
    assert det.class_ids.tolist() == [0, 1]
    assert det.scores.tolist() == pytest.approx([0.9, 0.7])


def test_number_of_boxes_is_capped_best_first() -> None:
    out = np.zeros((1, 500, 6), np.float32)
    for i in range(500):  # disjoint 4x4 boxes on a 25x20 lattice
        out[0, i] = [8 + (i % 25) * 16, 8 + (i // 25) * 16, 4, 4, 1.0, 0.5 + i / 1000]
    det = make_decoder("yolov5", (416, 416), 1, max_detections=300)(out, 1.0, 416, 416, 0.1)
    assert len(det) == 300
    assert det.scores[0] == pytest.approx(0.999) and det.scores[-1] == pytest.approx(0.7)
    assert np.all(np.diff(det.scores) <= 0)


def test_nothing_over_threshold_gives_empty_detections() -> None:
    det = make_decoder("yolox", (416, 416), 80)(np.zeros((1, N_416, 85), np.float32), 1, 9, 9, 0.3)
    assert len(det) == 0 and det.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("fmt", "shape"),
    [
        ("yolox", (1, 3549, 86)),
        ("yolox", (1, 8400, 85)),
        ("yolov5", (1, 84, 8400)),
        ("yolov8", (1, 8400, 84)),
        ("yolov8", (8400, 84)),
    ],
)
def test_output_of_the_wrong_layout_is_refused_with_its_shape(
    fmt: str, shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match="model_format"):
        make_decoder(fmt, (416, 416), 80)(np.zeros(shape, np.float32), 1.0, 416, 416, 0.3)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="yolov7"):
        make_decoder("yolov7", (416, 416), 80)


def test_only_the_best_thousand_candidates_enter_nms() -> None:
    # 1600 disjoint 4x4 boxes on a 40x40 lattice, each with its own score.
    out = np.zeros((1, 1600, 6), np.float32)
    for i in range(1600):
        out[0, i] = [5 + (i % 40) * 10, 5 + (i // 40) * 10, 4, 4, 1.0, 0.2 + i / 2000]
    decode = make_decoder("yolov5", (416, 416), 1, max_detections=2000)
    det = decode(out, 1.0, 416, 416, 0.1)
    assert len(det) == 1000
    assert det.scores.min() == pytest.approx(0.2 + 600 / 2000)
