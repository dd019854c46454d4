"""Run one video through the Ascend backend (on the emulator) and through the CPU reference,
frame by frame, and print the detections of both as JSON. Used by the tests in a fresh process:

    python -m tests.backends.ascend.paths MODEL.om MODEL.onnx VIDEO FRAMES
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import av
import numpy as np

from edged.backends.ascend import AscendBackend
from edged.config.model import StreamConfig, WorkerConfig
from edged.detect.letterbox import Letterbox
from edged.worker.detector import Detector

Found = list[tuple[str, float, list[float]]]


def found(detector: Detector, output: np.ndarray, scale: float, w: int, h: int) -> Found:
    return [(label, score, list(box))
            for label, _, score, box in detector.postprocess(output, scale, w, h, 0.3)]


def ascend(model: str, video: str, frames: int) -> tuple[list[Found], dict[str, Any]]:
    import acl

    worker = WorkerConfig(name="npu", model=model, backend="ascend")
    backend = AscendBackend(worker)
    backend.load()
    backend.warm_up()
    detector = Detector(worker)
    stream_config = StreamConfig(name="s", source=video, worker="npu", decoder_threads=1)
    out: list[Found] = []
    before = acl.emulator.stats()
    cpu_before = time.process_time()
    with av.open(video) as container:
        stream = container.streams.video[0]
        path = backend.media_path(stream, stream_config)
        for packet in container.demux(stream):
            for frame in path.decode(packet):
                if len(out) < frames:
                    model_input = path.prepare(frame)
                    (output,) = backend.infer([model_input])
                    path.release(model_input)
                    out.append(found(detector, output, model_input.scale, model_input.width,
                                     model_input.height))
            if len(out) >= frames:
                break
        snapshot = path.snapshot()
        path.close()
    cpu = time.process_time() - cpu_before
    after = acl.emulator.stats()
    backend.close()
    copied = {k: after["bytes_copied"].get(k, 0) - before["bytes_copied"].get(k, 0)
              for k in after["bytes_copied"]}
    figures = {
        "frames": len(out),
        "host_cpu_s": cpu - (after["device_cpu_s"] - before["device_cpu_s"]),
        "device_cpu_s": after["device_cpu_s"] - before["device_cpu_s"],
        "bytes_copied": copied,
        "snapshot_shape": list(snapshot.bgr().shape) if snapshot is not None else None,
    }
    return out, figures


def cpu(onnx: str, video: str, frames: int) -> list[Found]:
    import onnxruntime as ort

    worker = WorkerConfig(name="cpu", model=onnx)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    detector = Detector(worker)
    letterbox = Letterbox(worker.input_size)
    out: list[Found] = []
    with av.open(video) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="bgr24")
            scale = letterbox.fill(image)
            output = session.run(None, {name: letterbox.tensor})[0]
            out.append(found(detector, output, scale, frame.width, frame.height))
            if len(out) >= frames:
                break
    return out


if __name__ == "__main__":
    om, onnx, video, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    npu, figures = ascend(om, video, count)
    print(json.dumps({"ascend": npu, "cpu": cpu(onnx, video, count), "figures": figures}))
