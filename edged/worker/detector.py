"""Post-processing after a backend: the model's raw output to labelled boxes.

Runs in a worker process, shared by its inference loops (the decoders are pure functions).
Preprocessing belongs to the backend's media path (edged/backends/base.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edged.config.labels import load_labels
from edged.config.model import WorkerConfig
from edged.detect.decoders import Decoder, make_decoder

Box = tuple[float, float, float, float]


class Detector:
    def __init__(self, worker: WorkerConfig) -> None:
        self._worker = worker
        self.labels = load_labels(worker.labels)
        self._decode: Decoder = make_decoder(
            worker.model_format, worker.input_size, len(self.labels)
        )

    def postprocess(
        self, output: np.ndarray, scale: float, width: int, height: int, min_score: float
    ) -> Iterator[tuple[str, int, float, Box]]:
        found = self._decode(output, scale, width, height, min_score)
        labels = self.labels
        for box, score, class_id in zip(
            found.boxes.tolist(), found.scores.tolist(), found.class_ids.tolist(), strict=True
        ):
            yield labels[class_id], class_id, score, (box[0], box[1], box[2], box[3])
