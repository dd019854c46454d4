"""The CPU backend: PyAV decode and host letterbox, ONNX Runtime on the CPU. Runs in a worker.

Each inference loop calls `infer` from its own thread; ONNX Runtime sessions are thread-safe and
release the GIL while they run. One intra-op thread per call: on a small box parallelism comes
from running several frames at once (one loop per core), which costs less than splitting one
frame's work across threads.

No telemetry: ONNX Runtime (1.32 on Linux) opens a 1DS telemetry store at import, writing
`~/.cache/Microsoft/DeveloperTools/.onnxruntime/` (a device id and an SQLite database; for the
service, HOME is its state directory) and queueing uploads. `ORT_DISABLE_TELEMETRY=1`, read at
import, stops that; `disable_telemetry_events()` is the documented switch for the events, but
comes after the import's write. An operator may still opt in by setting the variable to 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import av
import numpy as np

from edged.backends.base import BackendError, ModelInput
from edged.backends.host_media import HostMediaPath
from edged.config.auto import decoder_threads
from edged.config.model import StreamConfig, WorkerConfig
from edged.detect.letterbox import PAD_VALUE


class CpuBackend:
    name = "cpu"

    def __init__(self, worker: WorkerConfig) -> None:
        self._worker = worker
        self._session: Any = None
        self._input = ""
        self.providers: tuple[str, ...] = ()

    def load(self) -> None:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort

        if os.environ["ORT_DISABLE_TELEMETRY"] != "0":
            ort.disable_telemetry_events()

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                self._worker.model, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise BackendError(f"cannot load model {self._worker.model}: {exc}") from exc
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise BackendError(f"model has {len(inputs)} inputs; expected one image input")
        shape = inputs[0].shape
        width, height = self._worker.input_size
        if len(shape) != 4 or shape[2:] != [height, width]:
            raise BackendError(
                f"model input shape is {shape}; config input_size [{width}, {height}] "
                f"expects [1, 3, {height}, {width}]"
            )
        self._session = session
        self._input = inputs[0].name
        self.providers = tuple(session.get_providers())

    def warm_up(self) -> None:
        width, height = self._worker.input_size
        blank = np.full((1, 3, height, width), PAD_VALUE, np.float32)
        self.infer([ModelInput(blank, 1.0, width, height)])

    def media_path(
        self, stream: av.video.stream.VideoStream, config: StreamConfig
    ) -> HostMediaPath:
        return HostMediaPath(stream, self._worker.input_size, decoder_threads(config))

    def infer(self, inputs: Sequence[ModelInput]) -> list[np.ndarray]:
        # One run per input: the shipped model has a fixed batch of 1.
        session, name = self._session, self._input
        return [session.run(None, {name: item.data})[0] for item in inputs]

    def close(self) -> None:
        self._session = None
