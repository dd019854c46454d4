"""Letterboxing a frame into a preallocated model-input tensor.

Runs in a worker process, once per frame the detector wants (in the stream's source thread, by the
CPU backend's media path). Two inputs: a decoder's YUV 4:2:0 planes (`fill_yuv420`, the cheap
path: the three planes are resized and only the small image is converted to BGR, see
/work/shared/docs/decode-costs.md) or an HxWx3 BGR image (`fill`). It allocates nothing per
frame: the float32 NCHW tensor is made once; the staging buffers are made again only when the
frame geometry changes. A frame that is not what a method expects raises ValueError; the tensor
keeps its last contents.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

PAD_VALUE = 114.0


class Letterbox:
    """Resize a frame by `r = min(W/w, H/h)`, place it top-left, pad the rest with 114.

    `tensor` is the model input, `[1, 3, H, W]` float32, BGR, 0..255; `scale` is the `r` of the
    last `fill`, which maps boxes back to the frame (`frame_xy = input_xy / r`).
    """

    def __init__(self, input_size: tuple[int, int], pad_value: float = PAD_VALUE) -> None:
        width, height = input_size
        if width <= 0 or height <= 0:
            raise ValueError(f"letterbox input size must be positive, got {input_size}")
        self.input_size = (width, height)
        self.pad_value = pad_value
        self.tensor: NDArray[np.float32] = np.full((1, 3, height, width), pad_value, np.float32)
        self.scale = 1.0
        self._frame_key: tuple[str, tuple[int, ...]] | None = None
        self._resized_size = (width, height)
        self._staging: NDArray[np.uint8] = np.empty((height, width, 3), np.uint8)
        self._planes = [np.empty((height, width), np.uint8) for _ in range(3)]

    def fill(self, frame: NDArray[np.uint8]) -> float:
        """Letterbox `frame` (HxWx3 uint8 BGR) into `tensor`; return the scale `r`."""
        if ("bgr", frame.shape) != self._frame_key:
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(
                    f"letterbox wants an HxWx3 uint8 BGR frame, got shape {frame.shape} "
                    f"dtype {frame.dtype}"
                )
            self._set_geometry(frame.shape[0], frame.shape[1], even=False)
            self._frame_key = ("bgr", frame.shape)
        nw, nh = self._resized_size
        if (nw, nh) == (frame.shape[1], frame.shape[0]):
            # Already the resized size: resizing would be an identity copy.
            cv2.split(frame, self._planes)
        else:
            # INTER_LINEAR is what the YOLO families are trained and exported with. dst and the
            # planes have exactly the size and type OpenCV would make, so it writes into them.
            cv2.resize(frame, (nw, nh), dst=self._staging, interpolation=cv2.INTER_LINEAR)
            cv2.split(self._staging, self._planes)
        self._to_tensor()
        return self.scale

    def fill_yuv420(
        self, y: NDArray[np.uint8], u: NDArray[np.uint8], v: NDArray[np.uint8]
    ) -> float:
        """Letterbox a YUV 4:2:0 frame given as its planes (rows may be padded views); return r.

        Each plane is resized on its own into one small I420 image and only that is converted to
        BGR: converting colour costs per pixel, and the small image has a tenth of the pixels.
        """
        if ("yuv420", y.shape) != self._frame_key:
            h, w = y.shape
            if u.shape != ((h + 1) // 2, (w + 1) // 2) or v.shape != u.shape:
                raise ValueError(f"not 4:2:0 planes: Y {y.shape}, U {u.shape}, V {v.shape}")
            self._set_geometry(h, w, even=True)
            self._frame_key = ("yuv420", y.shape)
        for src, dst in zip((y, u, v), self._i420_planes, strict=True):
            cv2.resize(src, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(self._i420, cv2.COLOR_YUV2BGR_I420, dst=self._staging)
        cv2.split(self._staging, self._planes)
        self._to_tensor()
        return self.scale

    def _to_tensor(self) -> None:
        nw, nh = self._resized_size
        # De-interleaving in uint8 and then converting contiguous planes is ~2.5x faster on a
        # 720p frame than one strided uint8 HWC -> float32 CHW copy.
        for plane, channel in zip(self._planes, self.tensor[0], strict=True):
            np.copyto(channel[:nh, :nw], plane, casting="unsafe")

    def _set_geometry(self, h: int, w: int, *, even: bool) -> None:
        if h == 0 or w == 0:
            raise ValueError(f"letterbox got an empty frame of {w}x{h}")
        width, height = self.input_size
        r = min(width / w, height / h)
        # round, not int(): w * (width / w) can land a hair under width in floating point.
        nw = min(width, max(1, round(w * r)))
        nh = min(height, max(1, round(h * r)))
        if even:
            # I420 needs even sides; the image is at most one pixel narrower or shorter than r
            # says (under 0.5 % at 416), which moves a box by less than a pixel of the model input.
            nw, nh = max(2, nw - nw % 2), max(2, nh - nh % 2)
        # Old image pixels outside the new region would otherwise leak into the padding.
        self.tensor.fill(self.pad_value)
        self._staging = np.empty((nh, nw, 3), np.uint8)
        self._planes = [np.empty((nh, nw), np.uint8) for _ in range(3)]
        self._resized_size = (nw, nh)
        self.scale = r
        if even:
            # The I420 staging image for `fill_yuv420`: the planes one after the other, chroma
            # at half size, viewed as one (nh * 3 / 2, nw) image for cvtColor.
            cw, ch = nw // 2, nh // 2
            flat = np.empty(nw * nh * 3 // 2, np.uint8)
            self._i420 = flat.reshape(nh * 3 // 2, nw)
            self._i420_planes = (
                flat[: nw * nh].reshape(nh, nw),
                flat[nw * nh : nw * nh + cw * ch].reshape(ch, cw),
                flat[nw * nh + cw * ch :].reshape(ch, cw),
            )
