"""Letterboxing on the device: VPC crop-and-paste from a VDEC picture into a model input.

Runs in a worker process, in the stream's source thread (bound to the worker's context). The
picture is scaled by r = min(W/w, H/h) into the top-left of the model input, as the CPU path's
letterbox does, so the same box decoders map boxes back with r. VPC writes only the paste
rectangle (pyacl.md 9a.12): the pad (grey 114, the YOLO training value) is written into a model
input once, when it first serves a given geometry, never per frame. ROIs follow the 310's parity
rules (left/top even, right/bottom odd); descriptors and ROI configs are made once and reused.
"""

from __future__ import annotations

from edged.backends.ascend.model import InputBuffer
from edged.backends.ascend.runtime import AclRuntime
from edged.backends.ascend.vdec import NV12, DecodedFrame, align

# NV12 of grey 114: Y 114 and U = V = 128 turn back into B = G = R = 114 through BT.601 AIPP.
PAD_Y, PAD_UV = 114, 128


def paste_size(width: int, height: int, input_w: int, input_h: int) -> tuple[int, int, float]:
    """The letterboxed picture's size (even, as YUV420SP needs) and the scale r."""
    r = min(input_w / width, input_h / height)
    paste_w = min(input_w, max(2, round(width * r) // 2 * 2))
    paste_h = min(input_h, max(2, round(height * r) // 2 * 2))
    return paste_w, paste_h, r


class Letterboxer:
    def __init__(self, runtime: AclRuntime, input_size: tuple[int, int]) -> None:
        self._rt = runtime
        self._acl = runtime.acl
        self.input_w, self.input_h = input_size
        self._stream = 0
        self._channel = 0
        self._in_descs: dict[int, int] = {}
        self._out_descs: dict[int, int] = {}
        self._rois: dict[tuple[int, int, int, int], int] = {}

    def open(self) -> None:
        acl, rt = self._acl, self._rt
        self._stream = rt.value("acl.rt.create_stream", acl.rt.create_stream())
        self._channel = rt.handle("dvpp_create_channel_desc", acl.media.dvpp_create_channel_desc())
        rt.check("acl.media.dvpp_create_channel", acl.media.dvpp_create_channel(self._channel))

    def letterbox(self, frame: DecodedFrame, target: InputBuffer) -> float:
        """Scale `frame` into `target`'s first image; return r. The pad is left as it was."""
        acl, rt = self._acl, self._rt
        paste_w, paste_h, r = paste_size(frame.width, frame.height, self.input_w, self.input_h)
        geometry = (frame.width, frame.height, paste_w, paste_h)
        if target.padded_for != geometry:
            self._fill_pad(target)
            target.padded_for = geometry
        crop = self._roi(0, (frame.width & ~1) - 1, 0, (frame.height & ~1) - 1)
        paste = self._roi(0, paste_w - 1, 0, paste_h - 1)
        rt.check(
            "acl.media.dvpp_vpc_crop_and_paste_async",
            acl.media.dvpp_vpc_crop_and_paste_async(
                self._channel, self._input_desc(frame), self._output_desc(target), crop, paste,
                self._stream,
            ),
        )
        rt.check("acl.rt.synchronize_stream", acl.rt.synchronize_stream(self._stream))
        return r

    def _fill_pad(self, target: InputBuffer) -> None:
        acl, rt = self._acl, self._rt
        luma = self.input_w * self.input_h
        image = luma * 3 // 2
        rt.check("acl.rt.memset", acl.rt.memset(target.address, image, PAD_Y, luma))
        rt.check("acl.rt.memset", acl.rt.memset(target.address + luma, image - luma, PAD_UV,
                                                image - luma))

    def _roi(self, left: int, right: int, top: int, bottom: int) -> int:
        key = (left, right, top, bottom)
        roi = self._rois.get(key)
        if roi is None:
            roi = self._rt.handle("dvpp_create_roi_config",
                                  self._acl.media.dvpp_create_roi_config(*key))
            self._rois[key] = roi
        return int(roi)

    def _input_desc(self, frame: DecodedFrame) -> int:
        desc = self._in_descs.get(frame.buffer.address)
        if desc is None:
            desc = self._picture(frame.buffer.address, frame.size, frame.width, frame.height,
                                 frame.width_stride, frame.height_stride)
            self._in_descs[frame.buffer.address] = desc
        return desc

    def _output_desc(self, target: InputBuffer) -> int:
        desc = self._out_descs.get(target.address)
        if desc is None:
            w, h = self.input_w, self.input_h
            desc = self._picture(target.address, align(w, 16) * align(h, 2) * 3 // 2, w, h,
                                 align(w, 16), align(h, 2))
            self._out_descs[target.address] = desc
        return desc

    def _picture(self, address: int, size: int, width: int, height: int, width_stride: int,
                 height_stride: int) -> int:
        acl, rt = self._acl, self._rt
        media = acl.media
        desc = rt.handle("dvpp_create_pic_desc", media.dvpp_create_pic_desc())
        for name, value in (
            ("data", address), ("size", size), ("format", NV12), ("width", width),
            ("height", height), ("width_stride", width_stride), ("height_stride", height_stride),
        ):
            rt.check(f"dvpp_set_pic_desc_{name}",
                     getattr(media, f"dvpp_set_pic_desc_{name}")(desc, value))
        return int(desc)

    def close(self) -> None:
        acl, rt = self._acl, self._rt
        for desc in (*self._in_descs.values(), *self._out_descs.values()):
            rt.check("dvpp_destroy_pic_desc", acl.media.dvpp_destroy_pic_desc(desc))
        for roi in self._rois.values():
            rt.check("dvpp_destroy_roi_config", acl.media.dvpp_destroy_roi_config(roi))
        self._in_descs.clear()
        self._out_descs.clear()
        self._rois.clear()
        if self._channel:
            rt.check("acl.media.dvpp_destroy_channel",
                     acl.media.dvpp_destroy_channel(self._channel))
            rt.check("dvpp_destroy_channel_desc",
                     acl.media.dvpp_destroy_channel_desc(self._channel))
            self._channel = 0
        if self._stream:
            rt.check("acl.rt.destroy_stream", acl.rt.destroy_stream(self._stream))
            self._stream = 0
