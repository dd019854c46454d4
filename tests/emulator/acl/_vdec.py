"""One emulated VDEC channel: a PyAV decoder on its own thread standing in for the hardware.

Frames sent are decoded in order; each decoded picture is written (NV12/NV21, with the SoC's
strides) into the output buffer of the oldest frame still waiting, and that frame's callback is
posted to the channel's callback thread, to run inside its `process_report`. Exactly one callback
per `vdec_send_frame` (9a.8): a packet that fails to decode, or a frame still buffered when the
channel is flushed, gets a callback with a non-zero `ret_code`. Buffers and descriptors of a
frame stay locked until its callback returned (rule 24).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from acl import _core, _memory
from acl._core import AclFail, Resource, violation
from acl._reports import REPORTS

ERR_NO_PICTURE = 0x20000
ERR_BITSTREAM = 0x10008
ERR_OUTPUT_SIZE = 0x10003
NV12, NV21 = 1, 2
CODECS = {0: "hevc", 1: "h264", 2: "h264", 3: "h264"}


def vdec_strides(width: int, height: int) -> tuple[int, int]:
    """VDEC output strides on this SoC (pyacl.md 4.2)."""
    if _core.settings().soc == "Ascend310B1":
        return max(width, 10), max(height, 6)
    return (32 if width < 16 else (width + 15) // 16 * 16), (height + 1) // 2 * 2


@dataclass(eq=False)
class Frame:
    stream_desc: Resource
    pic_desc: Resource
    user_data: Any
    packet: _memory.Span
    size: int
    locked: list[_memory.Block]
    skipped: bool = False


class Channel:
    def __init__(self, desc: Resource) -> None:
        data = desc.data
        import av

        self.desc = desc
        self.thread_id: int = data["thread_id"]
        self.callback: Callable[[int, int, Any], None] = data["callback"]
        self.out_format: int = data.get("out_pic_format", NV12)
        self.codec_name = CODECS[data.get("entype", 1)]
        self._av = av
        self.codec = self._new_codec()
        self.inbox: queue.Queue[Frame | threading.Event | None] = queue.Queue()
        self.waiting: deque[Frame] = deque()
        self.outstanding = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="acl-emu-vdec", daemon=True)
        self.thread.start()

    def _new_codec(self) -> Any:
        codec = self._av.CodecContext.create(self.codec_name, "r")
        codec.thread_count = 1  # the hardware emits a picture per frame, in order
        return codec

    # ---------------------------------------------------------- caller side

    def send(self, frame: Frame) -> None:
        for block in frame.locked:
            block.locks += 1
        frame.stream_desc.data["inflight"] = frame.stream_desc.data.get("inflight", 0) + 1
        frame.pic_desc.data["inflight"] = frame.pic_desc.data.get("inflight", 0) + 1
        with self.cond:
            self.outstanding += 1
        self.inbox.put(frame)

    def drain(self, timeout: float) -> bool:
        """Decode everything sent and wait until every callback returned (9a.7)."""
        flushed = threading.Event()
        self.inbox.put(flushed)
        with self.cond:
            return self.cond.wait_for(lambda: self.outstanding == 0, timeout)

    def close(self) -> None:
        self.inbox.put(None)
        self.thread.join(5)
        with self.cond:
            self.outstanding = 0

    # ---------------------------------------------------------- device side

    def _run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            try:
                if isinstance(item, threading.Event):
                    self._flush()
                    item.set()
                else:
                    self._decode(item)
            except Exception as exc:  # the stand-in device must keep calling back
                with contextlib.suppress(AclFail):
                    violation("23", _core.INVALID_PARAM, f"VDEC could not decode: {exc!r}",
                              tolerated=True)
                if isinstance(item, Frame) and item not in self.waiting:
                    self._deliver(item, ERR_BITSTREAM)
                else:
                    item.set()

    def _decode(self, frame: Frame) -> None:
        with _core.device_time():
            # Read the packet now, as the hardware does: a buffer rewritten before this point
            # (rule 24, realistic mode) decodes as whatever it holds now.
            data = bytes(frame.packet.view(frame.size)) if frame.packet.block else b""
            try:
                pictures = self.codec.decode(self._av.Packet(data))
            except self._av.error.FFmpegError:
                self._deliver(frame, ERR_BITSTREAM)
                return
        self.waiting.append(frame)
        for picture in pictures:
            self._emit(self.waiting.popleft(), picture)

    def _flush(self) -> None:
        with _core.device_time():
            try:
                pictures = self.codec.decode(None)
            except self._av.error.FFmpegError:
                pictures = []
        for picture in pictures:
            if self.waiting:
                self._emit(self.waiting.popleft(), picture)
        while self.waiting:
            self._deliver(self.waiting.popleft(), ERR_NO_PICTURE)
        self.codec = self._new_codec()

    def _emit(self, frame: Frame, picture: Any) -> None:
        if frame.skipped:
            self._deliver(frame, 0)
            return
        try:
            with _core.device_time():
                code = self._write(frame.pic_desc, picture)
        except Exception as exc:  # e.g. a picture larger than the buffer's geometry
            with contextlib.suppress(AclFail):
                violation("23", _core.INVALID_PARAM, f"VDEC could not write the picture: "
                          f"{exc!r}", tolerated=True)
            code = ERR_OUTPUT_SIZE
        self._deliver(frame, code)

    def _write(self, desc: Resource, picture: Any) -> int:
        fields = desc.data
        width, height = picture.width, picture.height
        geometry = [fields.get(k, 0) for k in ("width", "height", "width_stride", "height_stride")]
        if any(geometry) and not all(geometry):
            with contextlib.suppress(AclFail):
                violation("23", _core.INVALID_PARAM, "VDEC output desc sets some of width, "
                          "height, width_stride, height_stride: set all four or none",
                          tolerated=True)
        if all(geometry):
            ws, hs = geometry[2], geometry[3]
        else:
            ws, hs = vdec_strides(width, height)
        needed = ws * hs * 3 // 2
        block = _memory.MEMORY.find(fields.get("data", 0))
        room = min(fields.get("size", 0), block[0].size - block[1]) if block else 0
        if room < needed or block is None or block[0].buf is None:
            with contextlib.suppress(AclFail):
                violation("9a.14", _core.INVALID_PARAM, f"VDEC output buffer holds {room} bytes;"
                          f" a {width}x{height} picture needs {ws}x{hs}x3/2 = {needed} (strides"
                          " aligned to 16 x 2)", tolerated=True)
            return ERR_OUTPUT_SIZE
        nv12 = picture.to_ndarray(format="nv12")
        out = block[0].buf[block[1] : block[1] + needed]
        y = out[: ws * hs].reshape(hs, ws)
        uv = out[ws * hs :].reshape(hs // 2, ws)
        y[:height, :width] = nv12[:height]
        chroma = nv12[height : height + height // 2]
        if self.out_format == NV21:
            chroma = chroma.reshape(height // 2, width // 2, 2)[..., ::-1].reshape(chroma.shape)
        uv[: height // 2, :width] = chroma
        fields.update(width=width, height=height, width_stride=ws, height_stride=hs,
                      format=self.out_format)
        return 0

    def _deliver(self, frame: Frame, code: int) -> None:
        frame.pic_desc.data["ret_code"] = code
        callback = self.callback
        # rule 27: 0 for a descriptor that is not there (a skipped frame has no picture).
        picture = 0 if frame.skipped else frame.pic_desc.handle

        def run() -> None:
            # The hardware is done with the frame once its callback starts: the callback is
            # where the samples free and destroy (rule 24 covers send_frame until here).
            self._unlock(frame)
            try:
                # rule 27: both descriptors and the original user_data.
                callback(frame.stream_desc.handle, picture, frame.user_data)
            finally:
                with self.cond:
                    self.outstanding -= 1
                    self.cond.notify_all()

        REPORTS.post(self.thread_id, run)

    def _unlock(self, frame: Frame) -> None:
        for block in frame.locked:
            block.locks -= 1
        frame.stream_desc.data["inflight"] -= 1
        frame.pic_desc.data["inflight"] -= 1


def annexb(data: np.ndarray[Any, Any]) -> bool:
    head = bytes(data[:4])
    return head.startswith(b"\x00\x00\x01") or head == b"\x00\x00\x00\x01"
