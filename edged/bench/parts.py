"""The cost of each part of the work, measured one part at a time, and the limit they imply.

Runs in the bench process (a short-lived command), before the daemon run, while the bench is the
only thing of ours using the CPU. Every part goes through the same code the worker runs: demuxing
through `edged.worker.sources.open_container` and decoding through the CPU backend's media path
(every frame, as a source decodes), letterbox through its `HostPreprocess` (the Y/U/V planes
resized, colour converted on the small image), inference through the configured backend and box
decoding through `Detector`. Costs are CPU time of the whole process (FFmpeg's and ONNX Runtime's
own threads included) per frame. A crash here (a file that does not decode, a model that does not
load) ends the bench with the reason; nothing is left running.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import av
import cv2
import numpy as np

from edged.backends import make_backend
from edged.backends.host_media import HostMediaPath, HostPreprocess
from edged.config import auto
from edged.config.model import StreamConfig, WorkerConfig
from edged.detect.letterbox import Letterbox
from edged.worker.detector import Detector
from edged.worker.sources import frame_rate, open_container

# A decoder's first frames include opening the file and filling its reference frames.
DECODE_SKIP = 5


@dataclass(frozen=True)
class DecodeCost:
    video: str
    fps: float  # the file's frame rate, as the source paces it with realtime = true
    cpu_ms: float  # per frame, all threads of the process
    wall_ms: float
    frames: int


@dataclass(frozen=True)
class InferCost:
    pre_cpu_ms: float  # letterbox into the model input
    infer_cpu_ms: float  # one inference, all ONNX Runtime threads
    infer_wall_ms: float  # one inference as the worker runs it (its intra-op threads)
    post_cpu_ms: float  # box decoding + NMS: not part of the limit, it is pipeline overhead
    frames: int

    @property
    def cpu_ms(self) -> float:
        return self.pre_cpu_ms + self.infer_cpu_ms


def cores() -> int:
    """CPU cores this process may run on: the daemon's own rule (`edged.config.auto.cores`)."""
    return auto.cores()


def measure_decode(
    video: str, frames: int, decoder_threads: int = 0
) -> tuple[DecodeCost, list[av.VideoFrame]]:
    """Decode `frames` frames (looping the file as the source does); also return a few frames."""
    config = StreamConfig(
        name="bench", source=video, worker="bench", decoder_threads=decoder_threads
    )
    samples: list[av.VideoFrame] = []
    last: av.VideoFrame | None = None
    decoded = 0
    cpu = wall = 0.0
    fps = 25.0
    while decoded < frames + DECODE_SKIP:
        container = open_container(config)
        try:
            stream = container.streams.video[0]
            fps = frame_rate(stream)
            path = HostMediaPath(stream, (416, 416), decoder_threads)
            packets = container.demux(stream)
            before = decoded
            while decoded < frames + DECODE_SKIP:
                c0, w0 = time.process_time(), time.perf_counter()
                packet = next(packets, None)
                if packet is None:
                    break
                got = path.decode(packet)
                if decoded >= DECODE_SKIP:
                    cpu += time.process_time() - c0
                    wall += time.perf_counter() - w0
                for frame in got:
                    decoded += 1
                    last = frame
                    if decoded % 37 == 0 and len(samples) < 8:
                        samples.append(frame)
            path.close()
            if decoded == before:
                raise RuntimeError(f"no frames in {video}")
        finally:
            container.close()
    if not samples and last is not None:
        samples.append(last)
    return DecodeCost(video, fps, cpu * 1000 / frames, wall * 1000 / frames, frames), samples


@dataclass(frozen=True)
class ReferenceCost:
    """A decoder edged does not own, measured in the same run as edged's parts: if edged's own
    decode gets slower, the limit (computed from edged's parts) drops with it and the ratio hides
    the loss; against this reference it shows (docs/performance.md)."""

    video: str
    name: str  # what was measured
    cpu_ms: float  # frame to model input, per frame, all threads of the process
    frames: int


REFERENCE_NAME = "OpenCV read + letterbox from BGR (1 thread)"


def measure_reference(video: str, frames: int) -> ReferenceCost:
    """From the file to the model input the way edged did before PyAV: `cv2.VideoCapture.read()`
    with one FFmpeg thread (decode + full-frame BGR), then the letterbox of that BGR frame
    (decode-costs.md has its figures on this kind of machine). Compared with edged's decode +
    letterbox, the same span of work."""
    letterbox = Letterbox((416, 416))
    params = [cv2.CAP_PROP_N_THREADS, 1]
    cap = cv2.VideoCapture(video, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {video}")
    buffer: np.ndarray | None = None
    decoded = 0
    cpu = 0.0
    try:
        while decoded < frames + DECODE_SKIP:
            c0 = time.process_time()
            ok, image = cap.read(buffer)
            if not ok:
                if decoded == 0:
                    raise RuntimeError(f"OpenCV decodes no frames from {video}")
                cap.release()
                cap = cv2.VideoCapture(video, cv2.CAP_FFMPEG, params)
                continue
            buffer = np.asarray(image, np.uint8)
            letterbox.fill(buffer)
            if decoded >= DECODE_SKIP:
                cpu += time.process_time() - c0
            decoded += 1
    finally:
        cap.release()
    return ReferenceCost(video, REFERENCE_NAME, cpu * 1000 / frames, frames)


def measure_infer(worker: WorkerConfig, images: list[av.VideoFrame], frames: int) -> InferCost:
    """Letterbox + infer + decode boxes on decoded frames, each part timed on its own."""
    backend = make_backend(worker)
    backend.load()
    detector = Detector(worker)
    preprocess = HostPreprocess(worker.input_size)
    try:
        for image in images[:2]:  # first runs allocate ONNX Runtime's arena
            model_input = preprocess.prepare(image)
            backend.infer([model_input])
            preprocess.release(model_input)
        pre = infer = infer_wall = post = 0.0
        for i in range(frames):
            image = images[i % len(images)]
            c0 = time.process_time()
            model_input = preprocess.prepare(image)
            c1 = time.process_time()
            w1 = time.perf_counter()
            (output,) = backend.infer([model_input])
            w2 = time.perf_counter()
            c2 = time.process_time()
            found = detector.postprocess(
                output, model_input.scale, model_input.width, model_input.height, 0.4
            )
            list(found)
            c3 = time.process_time()
            preprocess.release(model_input)
            pre += c1 - c0
            infer += c2 - c1
            infer_wall += w2 - w1
            post += c3 - c2
    finally:
        backend.close()
    per = 1000.0 / frames
    return InferCost(pre * per, infer * per, infer_wall * per, post * per, frames)


@dataclass(frozen=True)
class ChainCost:
    """The parts chained, as any daemon on this machine must run them (`measure_chain`).

    The limit adds up parts measured one at a time, each with the caches to itself; chained,
    every decode follows an inference that evicted the decoder's data and every inference a
    decode that evicted the model's. This is the frames/s the parts reach that way with nothing
    of edged's around them: the most a daemon built from them could reach here.
    """

    threads: int
    videos: tuple[str, ...]  # thread i plays videos[i % len(videos)]
    fps: float
    cpu_ms: float  # per frame, all threads of the process (boxes + NMS included)
    frames: int


def measure_chain(
    worker: WorkerConfig, videos: list[str], threads: int, seconds: float
) -> ChainCost:
    """Decode, letterbox, infer and decode boxes in one thread per core, each on its own video.

    Each thread runs the parts in turn through the worker's own code (demux, the CPU backend's
    media path with one FFmpeg thread, one inference session for all, `Detector`), looping its
    file, with no board, tracking, pipe or MQTT. Frames are counted over `seconds` after every
    thread has done a few (the first runs allocate ONNX Runtime's arena). A thread that fails
    (a file that does not decode) ends the measurement with its error.
    """
    backend = make_backend(worker)
    backend.load()
    detector = Detector(worker)
    stop = threading.Event()
    counts = [0] * threads  # each thread writes only its own slot
    errors: list[BaseException] = []

    def chain(index: int) -> None:
        video = videos[index % len(videos)]
        config = StreamConfig(name=f"chain{index}", source=video, worker="bench", decoder_threads=1)
        try:
            while not stop.is_set():
                container = open_container(config)
                stream = container.streams.video[0]
                path = HostMediaPath(stream, worker.input_size, 1)
                try:
                    for packet in container.demux(stream):
                        for frame in path.decode(packet):
                            model_input = path.prepare(frame)
                            (output,) = backend.infer([model_input])
                            path.release(model_input)
                            scale, width, height = (
                                model_input.scale, model_input.width, model_input.height
                            )
                            list(detector.postprocess(output, scale, width, height, 0.4))
                            counts[index] += 1
                        if stop.is_set():
                            break
                finally:
                    path.close()
                    container.close()
        except BaseException as exc:  # reported by the measuring thread
            errors.append(exc)

    workers = [threading.Thread(target=chain, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    try:
        deadline = time.monotonic() + 30.0
        while min(counts) < 5 and not errors and time.monotonic() < deadline:
            stop.wait(0.05)
        first = sum(counts), time.process_time(), time.perf_counter()
        deadline = time.monotonic() + seconds
        while not errors and time.monotonic() < deadline:
            stop.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        last = sum(counts), time.process_time(), time.perf_counter()
    finally:
        stop.set()
        for thread in workers:
            thread.join()
        backend.close()
    if errors:
        raise RuntimeError(f"the chained parts failed: {errors[0]}") from errors[0]
    frames = last[0] - first[0]
    if frames <= 0:
        raise RuntimeError(f"the chained parts processed no frame in {seconds:g} s")
    return ChainCost(
        threads,
        tuple(videos),
        frames / (last[2] - first[2]),
        (last[1] - first[1]) * 1000.0 / frames,
        frames,
    )


@dataclass(frozen=True)
class Limit:
    cores: int
    decode_ms: float  # mean over the streams' videos
    work_ms: float  # decode + letterbox + inference, core-ms per frame
    fps: float  # cores * 1000 / work_ms


def saturation_limit(n_cores: int, decodes: list[DecodeCost], infer: InferCost) -> Limit:
    """Frames/s the cores could do with no overhead at all, every frame decoded and detected."""
    decode_ms = sum(d.cpu_ms for d in decodes) / len(decodes)
    work = decode_ms + infer.cpu_ms
    return Limit(n_cores, decode_ms, work, n_cores * 1000.0 / work)


def realtime_limit(
    n_cores: int, decodes: list[DecodeCost], infer: InferCost, detect_fps: float
) -> float:
    """Streams the cores could carry at their native rate, detecting `detect_fps` a second.

    A stream costs fps x decode + detect_fps x (letterbox + inference) core-ms a second; streams
    cycle through the videos, so the mean over one cycle is the cost of an average stream.
    """
    per_stream = sum(d.fps * d.cpu_ms + detect_fps * infer.cpu_ms for d in decodes) / len(decodes)
    return n_cores * 1000.0 / per_stream
