"""Letterbox: scale, placement, padding, channel order, buffer reuse, mapping boxes back."""

from __future__ import annotations

import numpy as np
import pytest

from edged.detect.decoders import make_decoder
from edged.detect.letterbox import Letterbox


def _solid(h: int, w: int, bgr: tuple[int, int, int]) -> np.ndarray:
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = bgr
    return frame


def test_wide_frame_fills_the_width_and_pads_below() -> None:
    lb = Letterbox((416, 416))
    r = lb.fill(_solid(100, 200, (10, 20, 30)))
    assert r == pytest.approx(416 / 200)
    t = lb.tensor
    assert t.shape == (1, 3, 416, 416) and t.dtype == np.float32
    # 100 * 2.08 = 208 rows of image at the top, BGR kept in channel order, the rest 114.
    assert np.all(t[0, 0, :208] == 10) and np.all(t[0, 1, :208] == 20)
    assert np.all(t[0, 2, :208] == 30)
    assert np.all(t[0, :, 208:] == 114)


def test_tall_frame_fills_the_height_and_pads_right() -> None:
    lb = Letterbox((416, 416))
    r = lb.fill(_solid(300, 100, (200, 0, 255)))
    assert r == pytest.approx(416 / 300)
    nw = round(100 * 416 / 300)  # 139 columns of image
    assert np.all(lb.tensor[0, 0, :, :nw] == 200) and np.all(lb.tensor[0, 2, :, :nw] == 255)
    assert np.all(lb.tensor[0, :, :, nw:] == 114)


def test_non_square_input_from_720p() -> None:
    lb = Letterbox((640, 384))
    assert lb.fill(_solid(720, 1280, (1, 2, 3))) == pytest.approx(0.5)
    assert lb.tensor.shape == (1, 3, 384, 640)
    assert np.all(lb.tensor[0, 1, :360] == 2) and np.all(lb.tensor[0, :, 360:] == 114)


def test_geometry_change_leaves_no_stale_pixels_in_the_padding() -> None:
    lb = Letterbox((416, 416))
    lb.fill(_solid(416, 416, (255, 255, 255)))  # covers the whole input
    lb.fill(_solid(100, 400, (0, 0, 0)))  # 104 rows of image, padding below
    assert np.all(lb.tensor[0, :, :104] == 0)
    assert np.all(lb.tensor[0, :, 104:] == 114)


def test_same_geometry_reuses_the_tensor_and_updates_it() -> None:
    lb = Letterbox((416, 416))
    tensor = lb.tensor
    address = tensor.__array_interface__["data"][0]
    lb.fill(_solid(720, 1280, (5, 5, 5)))
    lb.fill(_solid(720, 1280, (99, 98, 97)))
    assert lb.tensor is tensor and lb.tensor.__array_interface__["data"][0] == address
    assert np.all(lb.tensor[0, 0, :234] == 99) and np.all(lb.tensor[0, 2, :234] == 97)
    assert np.all(lb.tensor[0, :, 234:] == 114)


def test_frame_that_is_a_view_into_a_bigger_image() -> None:
    big = _solid(720, 1280, (0, 0, 0))
    big[100:300, 200:600] = (40, 50, 60)
    lb = Letterbox((416, 416))
    assert lb.fill(big[100:300, 200:600]) == pytest.approx(416 / 400)
    assert np.all(lb.tensor[0, 0, :208] == 40) and np.all(lb.tensor[0, :, 208:] == 114)


def test_rejects_frames_that_are_not_bgr_uint8() -> None:
    lb = Letterbox((416, 416))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        lb.fill(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        lb.fill(np.zeros((100, 100, 3), np.float32))


def test_object_box_survives_letterbox_and_maps_back_to_frame_pixels() -> None:
    # A white rectangle on a black 720p frame, found again in the model input, then decoded
    # as a YOLOv5 box in input pixels: it must land back on the rectangle in frame pixels.
    frame = _solid(720, 1280, (0, 0, 0))
    x1, y1, x2, y2 = 320, 180, 640, 540
    frame[y1:y2, x1:x2] = 255
    lb = Letterbox((416, 416))
    r = lb.fill(frame)
    bright = np.argwhere(lb.tensor[0, 1] > 127)
    (iy1, ix1), (iy2, ix2) = bright.min(axis=0), bright.max(axis=0) + 1
    assert (ix1, iy1, ix2, iy2) == pytest.approx((x1 * r, y1 * r, x2 * r, y2 * r), abs=1.0)

    out = np.zeros((1, 1, 85), np.float32)
    out[0, 0, :5] = [(ix1 + ix2) / 2, (iy1 + iy2) / 2, ix2 - ix1, iy2 - iy1, 1.0]
    out[0, 0, 5] = 0.9
    det = make_decoder("yolov5", (416, 416), 80)(out, r, 1280, 720, 0.5)
    assert det.boxes.tolist()[0] == pytest.approx([x1, y1, x2, y2], abs=1 / r)
