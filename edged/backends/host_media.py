"""The host media path: decode with PyAV (FFmpeg) and letterbox on the CPU. Runs in a worker.

The CPU backend's `MediaPath` (edged/backends/base.py). Driven by one stream's source thread:
PyAV releases the GIL while FFmpeg decodes, so streams decode in parallel with each other and
with inference. Wanted frames are letterboxed the cheap way (docs/architecture.md, "The media
path"): the decoder's Y, U and V planes are resized and only the small image is converted to BGR,
never the whole frame. Model inputs rotate through a small pool of letterbox buffers (one being
filled, one waiting in the stream's slot, one per inference loop), so nothing is allocated per
frame. A decode error raises av.error.FFmpegError to the source thread, which counts it.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Sequence
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from edged.backends.base import ModelInput, UnsupportedCodec
from edged.backends.picture import BgrPicture, I420Picture, Picture
from edged.detect.letterbox import Letterbox

# Frame formats whose planes are Y, U, V at 4:2:0 (yuvj420p: full-range, the MJPEG of webcams;
# its colours come out slightly flat through the limited-range conversion, boxes do not care).
_YUV420 = frozenset({"yuv420p", "yuvj420p"})


def plane_array(plane: av.video.plane.VideoPlane) -> NDArray[np.uint8]:
    """A plane as a 2-D uint8 view without copying (its rows may be padded: a strided view)."""
    rows: NDArray[np.uint8] = np.frombuffer(memoryview(plane), np.uint8)
    return rows.reshape(plane.height, plane.line_size)[:, : plane.width]


def configure_decoder(stream: av.video.stream.VideoStream, decoder_threads: int) -> None:
    """Threads for one stream's decoder: 0 lets FFmpeg choose (one per core), as OpenCV did."""
    context = stream.codec_context
    context.thread_count = decoder_threads
    context.thread_type = "AUTO"


class HostPreprocess:
    """Decoded frames into model inputs on the host, through a pool of letterbox buffers."""

    def __init__(self, input_size: tuple[int, int]) -> None:
        self._input_size = input_size
        self._pool: queue.SimpleQueue[Letterbox] = queue.SimpleQueue()

    def prepare(self, frame: av.VideoFrame) -> ModelInput:
        try:
            letterbox = self._pool.get_nowait()
        except queue.Empty:
            letterbox = Letterbox(self._input_size)
        try:
            if frame.format.name in _YUV420:
                planes = frame.planes
                scale = letterbox.fill_yuv420(
                    plane_array(planes[0]), plane_array(planes[1]), plane_array(planes[2])
                )
            else:
                # Rare formats (a raw webcam's yuyv422, 4:2:2/4:4:4 streams): swscale to BGR.
                bgr: NDArray[np.uint8] = frame.to_ndarray(format="bgr24")  # type: ignore[assignment]
                scale = letterbox.fill(bgr)
        except BaseException:
            self._pool.put(letterbox)
            raise
        return ModelInput(letterbox.tensor, scale, frame.width, frame.height, letterbox)

    def release(self, model_input: ModelInput) -> None:
        if isinstance(model_input.handle, Letterbox):
            self._pool.put(model_input.handle)


class HostMediaPath:
    """PyAV decode + host letterbox for one opened stream (see the module docstring)."""

    def __init__(
        self, stream: av.video.stream.VideoStream, input_size: tuple[int, int], decoder_threads: int
    ) -> None:
        if stream.codec_context is None or not _has_decoder(stream.codec_context.name):
            name = stream.codec_context.name if stream.codec_context is not None else "unknown"
            raise UnsupportedCodec(f"no decoder for video codec {name!r} in this FFmpeg build")
        configure_decoder(stream, decoder_threads)
        self._codec = stream.codec_context
        self._preprocess = HostPreprocess(input_size)
        self._last: av.VideoFrame | None = None

    def decode(self, packet: av.Packet[Any]) -> Sequence[av.VideoFrame]:
        frames = self._codec.decode(packet)
        if frames:
            self._last = frames[-1]
        return frames

    def prepare(self, frame: av.VideoFrame) -> ModelInput:
        return self._preprocess.prepare(frame)

    def release(self, model_input: ModelInput) -> None:
        self._preprocess.release(model_input)

    def snapshot(self) -> Picture | None:
        """The last decoded frame's planes, kept (no copy, no conversion): the decoder takes new
        buffers while the frame holds its own, and only the region a snapshot needs becomes BGR."""
        last = self._last
        if last is None:
            return None
        if last.format.name in _YUV420:
            planes = last.planes
            return I420Picture(
                plane_array(planes[0]), plane_array(planes[1]), plane_array(planes[2]), last
            )
        bgr: NDArray[np.uint8] = last.to_ndarray(format="bgr24")  # type: ignore[assignment]
        return BgrPicture(bgr)

    def close(self) -> None:
        self._last = None
        # Drain the decoder (GIL released) so none of FFmpeg's frame threads is still busy with
        # a packet when the context is freed: freeing holds the GIL and waits for those threads,
        # and one that logs a warning meanwhile waits for the GIL (a deadlock, seen in tests).
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            self._codec.decode(None)


def _has_decoder(name: str) -> bool:
    try:
        av.Codec(name, "r")
    except (ValueError, av.error.FFmpegError):
        return False
    return True
