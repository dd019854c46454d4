"""One stream's media path on the NPU: Annex-B packets -> VDEC -> VPC -> model input.

Runs in a worker process. The stream's source thread drives it (`decode`, `prepare`,
`snapshot`, `close`), bound to the worker's ACL context; `release` comes from an inference loop
and touches no ACL call. The host sees packets going in and model outputs coming out; pictures
stay in device memory, except the one frame a snapshot asks for, which is copied to the host and
converted there (a JPEG encoder on the device would need a second, rarely used DVPP path and a
different seam: the seam asks for a host frame, and a snapshot is one frame now and then).

Frames returned by `decode` stay valid until the next `decode`; the newest is kept for
`snapshot` until a newer one replaces it. A snapshot right after `prepare` shows the frame just
prepared (the worker pairs it with that frame's boxes).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edged.backends.ascend.model import InputBuffer, OmModel
from edged.backends.ascend.runtime import AclRuntime
from edged.backends.ascend.vdec import ChannelIds, DecodedFrame, VdecChannel
from edged.backends.ascend.vpc import Letterboxer
from edged.backends.base import ModelInput, UnsupportedCodec
from edged.backends.picture import Nv12Picture

if TYPE_CHECKING:
    import av

# acldvppStreamFormat: H.265 main 0, H.264 baseline 1 / main 2 / high 3 (pyacl.md 5.1).
H264_ENTYPE = {"Baseline": 1, "Constrained Baseline": 1, "Main": 2, "High": 3}
H265_MAIN = 0
ANNEX_B = (b"\x00\x00\x01", b"\x00\x00\x00\x01")


def entype_of(stream: av.video.stream.VideoStream) -> tuple[int, str | None]:
    """VDEC's stream format for this track and the bitstream filter that makes it Annex-B."""
    context = stream.codec_context
    extradata = context.extradata or b""
    length_prefixed = bool(extradata) and not extradata.startswith(ANNEX_B)
    # PyAV names H.265 "hevc" (Huawei's helpers only knew "h265" and refused it).
    if context.name == "h264":
        profile = context.profile or "Main"
        if profile not in H264_ENTYPE and "High" not in profile:
            raise UnsupportedCodec(f"H.264 profile {profile!r}: VDEC decodes baseline, main, high")
        return H264_ENTYPE.get(profile, 3), "h264_mp4toannexb" if length_prefixed else None
    if context.name == "hevc":
        return H265_MAIN, "hevc_mp4toannexb" if length_prefixed else None
    raise UnsupportedCodec(f"codec {context.name!r}: Ascend VDEC decodes H.264 and H.265 only")


class InputPool:
    """Model input buffers (with their datasets) shared by the worker's streams."""

    def __init__(self, model: OmModel) -> None:
        self._model = model
        self._free: queue.SimpleQueue[InputBuffer] = queue.SimpleQueue()
        self._lock = threading.Lock()

    def take(self) -> InputBuffer:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                return self._model.new_input()

    def give(self, buffer: InputBuffer) -> None:
        self._free.put(buffer)


class AscendMediaPath:
    def __init__(
        self,
        runtime: AclRuntime,
        stream: av.video.stream.VideoStream,
        inputs: InputPool,
        ids: ChannelIds,
        input_size: tuple[int, int],
    ) -> None:
        import av.bitstream

        entype, bsf = entype_of(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise UnsupportedCodec("the stream does not say its picture size")
        self._rt = runtime
        self._inputs = inputs
        self._filter = av.bitstream.BitStreamFilterContext(bsf, stream) if bsf else None
        extradata = stream.codec_context.extradata or b""
        self._parameter_sets = extradata if extradata.startswith(ANNEX_B) else b""
        self._vdec = VdecChannel(runtime, ids, entype, width, height)
        self._vpc = Letterboxer(runtime, input_size)
        self._handed: list[DecodedFrame] = []
        self._last: DecodedFrame | None = None
        self._prepared: DecodedFrame | None = None  # valid until the next decode
        self._closed = False
        self._lock = threading.Lock()
        self._snapshot_host: np.ndarray | None = None
        self._snapshot_pointer = 0
        runtime.enter()
        try:
            self._vdec.open()
            self._vpc.open()
        except BaseException:
            self.close()
            raise

    def decode(self, packet: av.Packet[Any]) -> Sequence[DecodedFrame]:
        with self._lock:
            self._check_open()
            return self._decode(packet)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the stream's media path is closed")
        self._rt.enter()

    def _decode(self, packet: av.Packet[Any]) -> list[DecodedFrame]:
        self._recycle_handed()
        self._prepared = None
        if packet.size == 0:
            self._vdec.flush()  # end of stream: decode what the decoder still holds
        else:
            for part in self._filter.filter(packet) if self._filter else (packet,):
                if part.size:
                    data = bytes(part)
                    if self._parameter_sets:
                        # An RTSP camera may carry SPS/PPS only in the SDP (extradata):
                        # VDEC sees nothing else, so they go in front of the first packet.
                        data = self._parameter_sets + data
                        self._parameter_sets = b""
                    self._vdec.send(data)
        frames: list[DecodedFrame] = []
        errors: list[int] = []
        for item in self._vdec.completed():
            if isinstance(item, int):
                errors.append(item)
            else:
                frames.append(item)
        if frames:
            if self._last is not None:
                self._vdec.recycle(self._last)
            self._last = frames[-1]
            self._handed = frames[:-1]
        if errors and not frames:
            raise ValueError(f"VDEC could not decode {len(errors)} frame(s): ret_code "
                             f"{errors[0]:#x}")
        return frames

    def _recycle_handed(self) -> None:
        for frame in self._handed:
            self._vdec.recycle(frame)
        self._handed = []

    def prepare(self, frame: DecodedFrame) -> ModelInput:
        with self._lock:
            self._check_open()
            return self._prepare(frame)

    def _prepare(self, frame: DecodedFrame) -> ModelInput:
        # A snapshot asked for right after this shows this frame, even when one decode call
        # returned several (VDEC calls back in bursts): its pixels match its boxes.
        self._prepared = frame
        target = self._inputs.take()
        try:
            scale = self._vpc.letterbox(frame, target)
        except BaseException:
            self._inputs.give(target)
            raise
        return ModelInput(target, scale, frame.width, frame.height, target)

    def release(self, model_input: ModelInput) -> None:
        if isinstance(model_input.handle, InputBuffer):
            self._inputs.give(model_input.handle)

    def snapshot(self) -> Nv12Picture | None:
        """The newest frame, copied from the device (one NV12 picture); only the region a
        snapshot reads is converted to BGR, later, by the inference loop that tracks it."""
        with self._lock:
            frame = self._prepared or self._last
            if frame is None or self._closed:
                return None
            self._rt.enter()
            return self._snapshot(frame)

    def _snapshot(self, frame: DecodedFrame) -> Nv12Picture:
        acl = self._rt.acl
        if self._snapshot_host is None or self._snapshot_host.size != frame.size:
            self._snapshot_host = np.empty(frame.size, np.uint8)
            self._snapshot_pointer = int(acl.util.numpy_to_ptr(self._snapshot_host))
        self._rt.check("acl.rt.memcpy", acl.rt.memcpy(
            self._snapshot_pointer, frame.size, frame.buffer.address, frame.size,
            self._rt.to_host(),
        ))
        ws, hs = frame.width_stride, frame.height_stride
        planes = self._snapshot_host.reshape(hs * 3 // 2, ws)
        # Copies of the planes (without the strides' padding): the picture is read later, on an
        # inference loop, and the next snapshot reuses the one registered host buffer.
        return Nv12Picture(
            planes[: frame.height, : frame.width].copy(),
            planes[hs : hs + frame.height // 2, : frame.width].copy(),
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """The decoder's channel (drained), its thread and buffers, then the VPC side."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._rt.enter()
            try:
                self._vdec.close()
            finally:
                self._handed = []
                self._last = self._prepared = None
                self._vpc.close()
