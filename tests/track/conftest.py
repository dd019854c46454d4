"""The real YOLOX-nano over the real videos, through the worker's own detector code, once per run.

Each video is decoded with OpenCV and every `step`-th frame goes through `CpuBackend` and
`Detector` exactly as an inference loop runs them, down to the tracker's `keep_score`; the
tests then feed these detections to the tracker and the stream events with their capture times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.backends.cpu import CpuBackend
from edged.config.model import WorkerConfig
from edged.worker.detector import Detector

Found = tuple[str, int, float, tuple[float, float, float, float]]


@dataclass
class Clip:
    fps: float  # of the file
    step: int  # every step-th frame was detected
    size: tuple[int, int]
    frames: list[tuple[int, float, list[Found]]]  # (index, seconds, detections)
    images: dict[int, np.ndarray]  # the frames tests look at (snapshots, hand checks)


def _detect(model: Path, video: Path, step: int, keep: set[int], floor: float = 0.2) -> Clip:
    worker = WorkerConfig(name="cpu", model=str(model))
    backend = CpuBackend(worker)
    backend.load()
    detector = Detector(worker)
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames: list[tuple[int, float, list[Found]]] = []
    images: dict[int, np.ndarray] = {}
    index = 0
    size = (0, 0)
    while True:
        ok = cap.grab()
        if not ok:
            break
        if index % step == 0:
            ok, image = cap.retrieve()
            assert ok
            size = (image.shape[1], image.shape[0])
            tensor, scale = detector.preprocess(image)
            output = backend.infer(tensor)
            found = list(detector.postprocess(output, scale, size[0], size[1], floor))
            frames.append((index, index / fps, found))
            if index in keep:
                images[index] = image
        index += 1
    cap.release()
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
