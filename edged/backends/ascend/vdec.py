"""One stream's hardware decoder: a VDEC channel, its callback thread and its device buffers.

Runs in a worker process. `send` is called by the stream's source thread (a channel is fed from
one thread); the callback runs in the channel's own `acl.util.start_thread` thread, which binds
the worker's context first and then loops on `process_report` (107012 and 507012 mean "nothing
yet"). A frame's input and output buffers and descriptors are never touched between
`vdec_send_frame` and its callback (the hardware still reads and writes them); buffers and
descriptors are made once and reused, never per frame. `vdec_destroy_channel` drains: every frame
sent is decoded and called back before it returns (how Huawei's helpers end a stream); only then
is the callback thread stopped. A crash of the worker process frees everything with it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from edged.backends.ascend.runtime import AclRuntime

NV12 = 1
# Picture buffers of one stream (decoding, decoded and not yet collected, the snapshot's).
MAX_OUTPUTS = 48
INPUT_CHUNK = 256 * 1024
# Frames sent and not yet called back, at most; a decoder this far behind is waited for.
MAX_IN_FLIGHT = 8
DECODER_TIMEOUT_S = 10.0


def align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


@dataclass(eq=False)
class DeviceBuffer:
    """DVPP memory with the one descriptor that describes it (stream or picture)."""

    address: int
    capacity: int
    desc: int


@dataclass(eq=False)
class DecodedFrame:
    """A picture VDEC wrote, NV12 in device memory."""

    buffer: DeviceBuffer
    width: int
    height: int
    width_stride: int
    height_stride: int

    @property
    def size(self) -> int:
        return self.width_stride * self.height_stride * 3 // 2


class ChannelIds:
    """VDEC channel ids are per process and limited (0..31 on a 310): freed ids are reused."""

    def __init__(self, soc: str) -> None:
        self._free = list(range(32 if soc == "Ascend310" else 256))
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            if not self._free:
                raise ValueError("every VDEC channel of this device is in use")
            return self._free.pop(0)

    def give(self, channel_id: int) -> None:
        with self._lock:
            self._free.append(channel_id)
            self._free.sort()


class VdecChannel:
    def __init__(
        self, runtime: AclRuntime, ids: ChannelIds, entype: int, width: int, height: int
    ) -> None:
        self._rt = runtime
        self._acl = runtime.acl
        self._ids = ids
        self._entype = entype
        self.width, self.height = width, height
        self.width_stride, self.height_stride = align(width, 16), align(height, 2)
        self._out_size = self.width_stride * self.height_stride * 3 // 2
        self._channel_id = -1
        self._desc = 0
        self._frame_config = 0
        self._thread_id = 0
        self._running = False
        self._inputs: list[DeviceBuffer] = []
        self._free_inputs: deque[DeviceBuffer] = deque()
        self._outputs: list[DeviceBuffer] = []
        self._free_outputs: deque[DeviceBuffer] = deque()
        self._done: deque[DecodedFrame | int] = deque()
        self._returned = threading.Condition()
        self.in_flight = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        acl, rt = self._acl, self._rt
        self._running = True
        self._thread_id = rt.value("acl.util.start_thread",
                                   acl.util.start_thread(self._report_loop, []))
        self._open_channel()

    def _open_channel(self) -> None:
        acl, rt = self._acl, self._rt
        self._channel_id = self._ids.take()
        desc = self._desc = rt.handle("acl.media.vdec_create_channel_desc",
                                      acl.media.vdec_create_channel_desc())
        media = acl.media
        rt.check("vdec_set_channel_desc_channel_id",
                 media.vdec_set_channel_desc_channel_id(desc, self._channel_id))
        rt.check("vdec_set_channel_desc_thread_id",
                 media.vdec_set_channel_desc_thread_id(desc, self._thread_id))
        rt.check("vdec_set_channel_desc_callback",
                 media.vdec_set_channel_desc_callback(desc, self._callback))
        rt.check("vdec_set_channel_desc_entype", media.vdec_set_channel_desc_entype(desc,
                                                                                   self._entype))
        rt.check("vdec_set_channel_desc_out_pic_format",
                 media.vdec_set_channel_desc_out_pic_format(desc, NV12))
        rt.check("acl.media.vdec_create_channel", media.vdec_create_channel(desc))
        self._frame_config = rt.handle("acl.media.vdec_create_frame_config",
                                       media.vdec_create_frame_config())

    def _close_channel(self) -> None:
        """Destroy the channel (it drains: every callback has run when it returns)."""
        acl, rt = self._acl, self._rt
        if self._desc:
            try:
                rt.check("acl.media.vdec_destroy_channel",
                         acl.media.vdec_destroy_channel(self._desc))
            finally:
                rt.check("acl.media.vdec_destroy_channel_desc",
                         acl.media.vdec_destroy_channel_desc(self._desc))
                self._desc = 0
                self._ids.give(self._channel_id)
        if self._frame_config:
            rt.check("acl.media.vdec_destroy_frame_config",
                     acl.media.vdec_destroy_frame_config(self._frame_config))
            self._frame_config = 0

    def flush(self) -> None:
        """End of stream: decode what was sent (destroying the channel drains it), start anew."""
        self._close_channel()
        self._open_channel()

    def close(self) -> None:
        """Channel, then callback thread, then descriptors and memory: the documented order."""
        acl, rt = self._acl, self._rt
        try:
            self._close_channel()
        finally:
            if self._thread_id:
                self._running = False
                rt.check("acl.util.stop_thread", acl.util.stop_thread(self._thread_id))
                self._thread_id = 0
            for buffer in self._inputs:
                rt.check("dvpp_destroy_stream_desc",
                         acl.media.dvpp_destroy_stream_desc(buffer.desc))
                rt.check("acl.media.dvpp_free", acl.media.dvpp_free(buffer.address))
            for buffer in self._outputs:
                rt.check("dvpp_destroy_pic_desc", acl.media.dvpp_destroy_pic_desc(buffer.desc))
                rt.check("acl.media.dvpp_free", acl.media.dvpp_free(buffer.address))
            self._inputs.clear()
            self._outputs.clear()

    # ------------------------------------------------------------------ feeding

    def send(self, packet: bytes) -> None:
        """Copy one Annex-B frame to the device and queue it for decoding (source thread)."""
        acl, rt = self._acl, self._rt
        source = self._input(len(packet))
        target = self._output()
        rt.check("acl.rt.memcpy", acl.rt.memcpy(
            source.address, source.capacity, acl.util.bytes_to_ptr(packet), len(packet),
            rt.to_device(),
        ))
        rt.check("dvpp_set_stream_desc_size",
                 acl.media.dvpp_set_stream_desc_size(source.desc, len(packet)))
        with self._returned:
            # Back-pressure: a file read as fast as it decodes must not run ahead of the decoder.
            if not self._returned.wait_for(lambda: self.in_flight < MAX_IN_FLIGHT,
                                           DECODER_TIMEOUT_S):
                self._free_inputs.append(source)
                self._free_outputs.append(target)
                raise ValueError(f"VDEC has had {self.in_flight} frames in flight for "
                                 f"{DECODER_TIMEOUT_S:g} s: the decoder is not calling back")
            self.in_flight += 1
        ret = acl.media.vdec_send_frame(self._desc, source.desc, target.desc, self._frame_config,
                                        (source, target))
        if ret != 0:
            with self._returned:
                self.in_flight -= 1
            self._free_inputs.append(source)
            self._free_outputs.append(target)
            rt.check("acl.media.vdec_send_frame", ret)

    def completed(self) -> list[DecodedFrame | int]:
        """Frames (or failed frames' codes) called back since the last call, in decode order."""
        done: list[DecodedFrame | int] = []
        while self._done:
            done.append(self._done.popleft())
        return done

    def recycle(self, frame: DecodedFrame) -> None:
        with self._returned:
            self._free_outputs.append(frame.buffer)
            self._returned.notify_all()

    def _input(self, size: int) -> DeviceBuffer:
        for _ in range(len(self._free_inputs)):
            buffer = self._free_inputs.popleft()
            if buffer.capacity >= size:
                return buffer
            self._free_inputs.append(buffer)
        acl, rt = self._acl, self._rt
        capacity = align(max(size, INPUT_CHUNK), INPUT_CHUNK)
        address = rt.value("acl.media.dvpp_malloc", acl.media.dvpp_malloc(capacity))
        desc = rt.handle("dvpp_create_stream_desc", acl.media.dvpp_create_stream_desc())
        buffer = DeviceBuffer(address, capacity, desc)
        self._inputs.append(buffer)
        rt.check("dvpp_set_stream_desc_data", acl.media.dvpp_set_stream_desc_data(desc, address))
        return buffer

    def _output(self) -> DeviceBuffer:
        # A buffer comes back when its frame was handed on and the next decode() recycled it;
        # the decoder's lag (and a slow host) decides how many are out at once, so the pool
        # grows to that and then stays. A pool at its cap means frames are not coming back.
        with self._returned:
            if self._free_outputs:
                return self._free_outputs.popleft()
            if len(self._outputs) >= MAX_OUTPUTS:
                raise ValueError(
                    f"all {MAX_OUTPUTS} VDEC picture buffers are in use ({self.in_flight} frames "
                    "still decoding): the decoder is not calling back"
                )
        return self._new_output()

    def _new_output(self) -> DeviceBuffer:
        acl, rt = self._acl, self._rt
        media = acl.media
        address = rt.value("acl.media.dvpp_malloc", media.dvpp_malloc(self._out_size))
        desc = rt.handle("dvpp_create_pic_desc", media.dvpp_create_pic_desc())
        buffer = DeviceBuffer(address, self._out_size, desc)
        self._outputs.append(buffer)
        # All four of width, height and strides, or VDEC picks its own (pyacl.md 5.3).
        for name, value in (
            ("data", address), ("size", self._out_size), ("format", NV12),
            ("width", self.width), ("height", self.height),
            ("width_stride", self.width_stride), ("height_stride", self.height_stride),
        ):
            rt.check(f"dvpp_set_pic_desc_{name}",
                     getattr(media, f"dvpp_set_pic_desc_{name}")(desc, value))
        return buffer

    # ------------------------------------------------------------------ callback thread

    def _report_loop(self, _args: Any) -> None:
        self._rt.enter()
        while self._running:
            self._acl.rt.process_report(100)  # 107012 / 507012: nothing to report yet

    def _callback(self, stream_desc: int, pic_desc: int, user_data: Any) -> None:
        source, target = user_data
        code = self._acl.media.dvpp_get_pic_desc_ret_code(pic_desc) if pic_desc else -1
        self._free_inputs.append(source)
        if code == 0:
            self._done.append(
                DecodedFrame(target, self.width, self.height, self.width_stride,
                             self.height_stride)
            )
        else:
            self._done.append(code)
        with self._returned:
            if code != 0:
                self._free_outputs.append(target)
            self.in_flight -= 1
            self._returned.notify_all()
