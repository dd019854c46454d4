"""Pre- and post-processing around a backend: letterbox in, labelled boxes out.

Runs in a worker process. Each inference loop holds its own clone, because the letterbox
buffers it writes into are reused frame after frame.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edged.config.labels import load_labels
from edged.config.model import WorkerConfig
from edged.detect.decoders import Decoder, make_decoder
from edged.detect.letterbox import Letterbox

Box = tuple[float, float, float, float]


class Detector:
    def __init__(self, worker: WorkerConfig) -> None:
        self._worker = worker
        self.labels = load_labels(worker.labels)
        self._decode: Decoder = make_decoder(
            worker.model_format, worker.input_size, len(self.labels)
        )
        self._letterbox = Letterbox(worker.input_size)

    def clone(self) -> Detector:
        return Detector(self._worker)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        scale = self._letterbox.fill(image)
        return self._letterbox.tensor, scale

    def postprocess(
        self, output: np.ndarray, scale: float, width: int, height: int, min_score: float
    ) -> Iterator[tuple[str, int, float, Box]]:
        found = self._decode(output, scale, width, height, min_score)
        labels = self.labels
        for box, score, class_id in zip(
            found.boxes.tolist(), found.scores.tolist(), found.class_ids.tolist(), strict=True
        ):
            yield labels[class_id], class_id, score, (box[0], box[1], box[2], box[3])
