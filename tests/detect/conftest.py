"""Fixtures: the real YOLOX-nano in its own layout and re-exported as YOLOv5 and YOLOv8."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edged.detect.decoders import Detections, make_decoder
from edged.detect.letterbox import Letterbox
from tests.detect.layouts import INPUT, Detect, relayout


@pytest.fixture(scope="session")
def sessions(model_path: Path) -> dict[str, ort.InferenceSession]:
    cpu = ["CPUExecutionProvider"]
    return {
        "yolox": ort.InferenceSession(str(model_path), providers=cpu),
        "yolov5": ort.InferenceSession(relayout(model_path, "yolov5"), providers=cpu),
        "yolov8": ort.InferenceSession(relayout(model_path, "yolov8"), providers=cpu),
    }


@pytest.fixture(scope="session")
def detect(sessions: dict[str, ort.InferenceSession]) -> Callable[[str], Detect]:
    """`detect(fmt)(frame, min_score)`: letterbox, run the model in that layout, decode."""

    def for_format(fmt: str) -> Detect:
        session, decoder, letterbox = sessions[fmt], make_decoder(fmt, INPUT, 80), Letterbox(INPUT)

        def run(frame: np.ndarray, min_score: float) -> Detections:
            scale = letterbox.fill(frame)
            (output,) = session.run(None, {"images": letterbox.tensor})
            return decoder(output, scale, frame.shape[1], frame.shape[0], min_score)

        return run

    return for_format
