"""The interface every inference backend implements, and the media path seam. Runs in workers.

Per stream a worker runs `packets -> decode -> frame -> preprocess -> model input -> outputs`.
The worker demuxes (PyAV, on the host) and owns pacing, `detect_fps` and the frame slots; the
backend owns every step that runs on its device. It does so through a `MediaPath` it creates for
each opened stream:

* the CPU backend decodes the packets with PyAV and letterboxes on the host (`HostMediaPath`);
* an accelerator takes the compressed packets (Annex-B H.264/H.265 for a hardware decoder: run
  them through PyAV's `h264_mp4toannexb` / `hevc_mp4toannexb` bitstream filter where the
  container stores them length-prefixed), decodes and resizes on the device and hands back
  model inputs that never reach host memory.

`infer` takes a batch of model inputs and returns the model's raw outputs, which the shared
YOLOX/v5/v8 decoders (`edged.detect.decoders`) turn into boxes on the host. A snapshot is the one
time a frame is brought to the host, on request.

A media path is driven by its stream's source thread only (`decode`, `prepare`, `snapshot`,
`close`); `release` is called from the inference loop that used a model input. An exception
from `decode` is a decode error of that stream (counted, the stream goes on or reopens); from
`MediaPath` creation, `UnsupportedCodec` says the backend cannot decode the stream at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    import av

    from edged.backends.picture import Picture
    from edged.config.model import StreamConfig


class BackendError(Exception):
    """The runtime, device or model cannot be used: the worker exits with EXIT_BOOT_ERROR."""


class UnsupportedCodec(Exception):
    """The backend cannot decode this stream's video codec (the stream is reported, not retried
    in a hot loop: the source backs off as for any failure)."""


@dataclass(slots=True)
class ModelInput:
    """One frame made ready for the model, wherever the backend keeps it."""

    # What `infer` feeds the model: the CPU backend's [1, 3, H, W] float32 host tensor, an
    # accelerator's device buffer. Valid until it is given back with `MediaPath.release`.
    data: Any
    # The letterbox scale r (frame_xy = input_xy / r) and the frame's size: box decoding maps
    # boxes back to the frame with them.
    scale: float
    width: int
    height: int
    # The media path's own bookkeeping (which buffer to reuse); nobody else reads it.
    handle: Any = None


FrameT = TypeVar("FrameT")


class MediaPath(Protocol[FrameT]):
    """One opened stream's packets -> frames -> model inputs, on the backend's device."""

    def decode(self, packet: av.Packet[Any]) -> Sequence[FrameT]:
        """Feed one demuxed packet of the video track; return the frames it completed (often 0
        or 1). An empty packet (PyAV's at end of stream) flushes the decoder."""

    def prepare(self, frame: FrameT) -> ModelInput:
        """Preprocess one decoded frame into a model input (only frames the detector wants)."""

    def release(self, model_input: ModelInput) -> None:
        """The model input is no longer used; its buffer may be reused. Any thread."""

    def snapshot(self) -> Picture | None:
        """The last decoded frame on the host (converted to BGR only where it is read,
        edged/backends/picture.py), or None before the first."""

    def close(self) -> None:
        """Free the decoder and buffers; model inputs still out may still be released."""


class Backend(Protocol):
    name: str
    providers: tuple[str, ...]

    def load(self) -> None:
        """Create the runtime and load the model, in this process. Raises BackendError."""

    def warm_up(self) -> None:
        """Run one inference on a blank input (first runs allocate the runtime's memory)."""

    def media_path(
        self, stream: av.video.stream.VideoStream, config: StreamConfig
    ) -> MediaPath[Any]:
        """A media path for one opened stream. Raises UnsupportedCodec."""

    def infer(self, inputs: Sequence[ModelInput]) -> list[np.ndarray]:
        """Run the model on a batch of model inputs; one raw output per input, in order.
        Safe to call from several threads."""

    def close(self) -> None:
        """Release the runtime (and device context)."""
