"""The real YOLOX-nano over the real videos, through the worker's own media path, once per run.

Each video is opened and demuxed the way a source does (`open_container`), decoded and prepared
by the CPU backend's media path, inferred by `CpuBackend` and decoded into boxes by `Detector`,
every `step`-th frame, down to the tracker's `keep_score`; the tests then feed these detections
to the tracker and the stream events with their capture times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edged.backends.cpu import CpuBackend
from edged.config.model import StreamConfig, WorkerConfig
from edged.worker.detector import Detector
from edged.worker.sources import frame_rate, open_container

Found = tuple[str, int, float, tuple[float, float, float, float]]


@dataclass
class Clip:
    fps: float  # of the file
    step: int  # every step-th frame was detected
    size: tuple[int, int]
    frames: list[tuple[int, float, list[Found]]]  # (index, seconds, detections)
    images: dict[int, np.ndarray]  # the frames tests look at (BGR)


def _detect(model: Path, video: Path, step: int, keep: set[int], floor: float = 0.2) -> Clip:
    worker = WorkerConfig(name="cpu", model=str(model), threads=1)
    backend = CpuBackend(worker)
    backend.load()
    detector = Detector(worker)
    config = StreamConfig(name="clip", source=str(video), worker="cpu", decoder_threads=1)
    container = open_container(config)
    stream = container.streams.video[0]
    fps = frame_rate(stream)
    path = backend.media_path(stream, config)
    frames: list[tuple[int, float, list[Found]]] = []
    images: dict[int, np.ndarray] = {}
    index = 0
    size = (0, 0)
    try:
        for packet in container.demux(stream):
            for frame in path.decode(packet):
                if index % step == 0:
                    model_input = path.prepare(frame)
                    (output,) = backend.infer([model_input])
                    path.release(model_input)
                    size = (model_input.width, model_input.height)
                    found = list(detector.postprocess(
                        output, model_input.scale, size[0], size[1], floor
                    ))
                    frames.append((index, index / fps, found))
                    if index in keep:
                        images[index] = frame.to_ndarray(format="bgr24")
                index += 1
    finally:
        path.close()
        container.close()
        backend.close()
    assert frames, f"no frames decoded from {video}"
    return Clip(fps, step, size, frames, images)


@pytest.fixture(scope="session")
def pedestrians(assets: Path, model_path: Path) -> Clip:
    # 50 frames/s in the container: every 2nd frame is 25 detections a second
    return _detect(model_path, assets / "media" / "pedestrians-720p.avi", 2, {60, 120})


@pytest.fixture(scope="session")
def traffic(assets: Path, model_path: Path) -> Clip:
    # 30 frames/s: every 2nd frame is 15 detections a second
    return _detect(model_path, assets / "media" / "traffic-720p.mp4", 2, set())
