"""The real YOLOX-nano on COCO images and a 720p video frame, decoded in all three layouts.

Expected labels and places were checked by eye on the images (boxes drawn over them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.config.labels import COCO
from edged.detect.decoders import Detections
from tests.detect.layouts import Detect, load_image

FORMATS = ["yolox", "yolov5", "yolov8"]


def _names(det: Detections) -> list[str]:
    return [COCO[int(c)] for c in det.class_ids]


def _best(det: Detections, label: str) -> int:
    """Index of the highest-scoring detection with that label (they are sorted best first)."""
    return _names(det).index(label)


def _contains(box: np.ndarray, x: float, y: float) -> bool:
    return bool(box[0] <= x <= box[2] and box[1] <= y <= box[3])


@pytest.mark.parametrize("fmt", FORMATS)
def test_bear_fills_the_picture(detect: Callable[[str], Detect], assets: Path, fmt: str) -> None:
    frame = load_image(assets, "000000000285")  # close-up of a brown bear's head, 586x640
    det = detect(fmt)(frame, 0.3)
    assert _names(det) == ["bear"]
    x1, y1, x2, y2 = det.boxes[0]
    h, w = frame.shape[:2]
    assert (x2 - x1) * (y2 - y1) > 0.6 * w * h
    assert _contains(det.boxes[0], 200, 380)  # its nose


@pytest.mark.parametrize("fmt", FORMATS)
def test_stop_sign_on_its_pole(detect: Callable[[str], Detect], assets: Path, fmt: str) -> None:
    frame = load_image(assets, "000000000724")  # street scene, a stop sign up on a pole
    det = detect(fmt)(frame, 0.5)
    assert _names(det) == ["stop sign"]
    box = det.boxes[0]
    assert _contains(box, 187, 150)  # the "STOP" lettering
    assert box[3] < frame.shape[0] / 2  # in the upper half, above the road


@pytest.mark.parametrize("fmt", FORMATS)
def test_pile_of_teddy_bears(detect: Callable[[str], Detect], assets: Path, fmt: str) -> None:
    det = detect(fmt)(load_image(assets, "000000000776"), 0.5)
    assert set(_names(det)) == {"teddy bear"} and len(det) >= 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_skier_and_skis(detect: Callable[[str], Detect], assets: Path, fmt: str) -> None:
    det = detect(fmt)(load_image(assets, "000000000785"), 0.5)
    person, skis = det.boxes[_best(det, "person")], det.boxes[_best(det, "skis")]
    assert _contains(person, 380, 200)  # her red jacket
    assert (skis[1] + skis[3]) / 2 > person[3] - 40  # the skis are at her feet


@pytest.mark.parametrize("fmt", FORMATS)
def test_group_of_tennis_kids(detect: Callable[[str], Detect], assets: Path, fmt: str) -> None:
    det = detect(fmt)(load_image(assets, "000000001000"), 0.5)
    assert _names(det).count("person") >= 8


@pytest.mark.parametrize("fmt", FORMATS)
def test_desk_with_computers(detect: Callable[[str], Detect], assets: Path, fmt: str) -> None:
    det = detect(fmt)(load_image(assets, "000000001503"), 0.5)
    assert {"laptop", "tvmonitor", "keyboard"} <= set(_names(det))
    assert det.boxes[_best(det, "laptop")][0] < 20  # the laptop is at the left edge


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_box_lies_inside_its_frame(
    detect: Callable[[str], Detect], assets: Path, fmt: str
) -> None:
    for path in sorted((assets / "media" / "coco").glob("*.jpg")):
        frame = load_image(assets, path.stem)
        det = detect(fmt)(frame, 0.1)
        h, w = frame.shape[:2]
        assert len(det) > 0, path.name
        assert np.all(det.boxes >= 0) and np.all(det.boxes[:, [0, 2]] <= w), path.name
        assert np.all(det.boxes[:, [1, 3]] <= h), path.name
        assert np.all(det.boxes[:, 2] > det.boxes[:, 0]) and np.all(
            det.boxes[:, 3] > det.boxes[:, 1]
        )


@pytest.mark.parametrize("fmt", ["yolov5", "yolov8"])
def test_other_layouts_agree_with_yolox_on_every_image(
    detect: Callable[[str], Detect], assets: Path, fmt: str
) -> None:
    for path in sorted((assets / "media" / "coco").glob("*.jpg")):
        frame = load_image(assets, path.stem)
        ref, got = detect("yolox")(frame, 0.25), detect(fmt)(frame, 0.25)
        assert got.class_ids.tolist() == ref.class_ids.tolist(), path.name
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5, err_msg=path.name)
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=0.05, err_msg=path.name)


def test_crowd_in_a_720p_video_frame(detect: Callable[[str], Detect], assets: Path) -> None:
    cap = cv2.VideoCapture(str(assets / "media" / "pedestrians-720p.avi"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (720, 1280, 3)
    det = detect("yolox")(frame, 0.3)
    people = det.boxes[det.class_ids == 0]
    assert len(people) >= 20  # an overhead view of a busy station hall
    # Seen from above, each person is a small box: nobody spans a tenth of the frame's width.
    assert np.all(people[:, 2] - people[:, 0] < 128)
