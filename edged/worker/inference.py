"""Inference loops: take prepared frames (model inputs), infer, decode boxes, send results up.

Runs in a worker process, one thread per configured inference thread. These loops are the work
the supervisor's heartbeat deadline watches: they send the heartbeats themselves, and only while
every loop shows progress, so a wedged inference stops the heartbeats and gets the worker
replaced. An exception in one frame is logged and counted, not fatal. With a worker `batch` above
1 a loop runs the frames other streams have waiting at that moment as one inference (it never
waits to fill a batch: latency first). Results go up the pipe as soon as they exist, except
while the worker is behind (`FrameBoard.behind`): then a frame's result and events are held and
written with the next ones (`WorkerChannel.send_held`, at most 60 ms).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import structlog

from edged.backends.base import Backend
from edged.protocol import Detection, Heartbeat, Result, Up, detections_json
from edged.track.events import StreamEvents
from edged.worker.board import FrameBoard, FramePacket
from edged.worker.channel import ChannelClosed, WorkerChannel
from edged.worker.detector import Detector
from edged.worker.scheduling import ThreadRole, name_thread

log = structlog.get_logger(__name__)


class Progress:
    """Per-loop progress marks; a heartbeat goes up only while all loops are moving."""

    def __init__(self, loops: int, channel: WorkerChannel, interval: float, stall: float) -> None:
        now = time.monotonic()
        self._last = [now] * loops
        self._channel = channel
        self._interval = interval
        self._stall = stall
        self._sent = 0.0
        self._count = 0
        self._lock = threading.Lock()

    def mark(self, loop: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._last[loop] = now
            self._count += 1
            if now - self._sent < self._interval or now - min(self._last) > self._stall:
                return
            self._sent = now
            count = self._count
        self._channel.send(Heartbeat(count))


class InferenceLoop:
    def __init__(
        self,
        index: int,
        board: FrameBoard,
        backend: Backend,
        detector: Detector,
        channel: WorkerChannel,
        progress: Progress,
        infer_ms: deque[float],
        events: dict[str, StreamEvents],
        batch: int = 1,
    ) -> None:
        self._index = index
        self._events = events  # the runtime's, by stream name (read only here)
        self._board = board
        self._backend = backend
        self._detector = detector
        self._channel = channel
        self._progress = progress
        self._infer_ms = infer_ms
        self._batch = batch  # frames one infer may take (the worker's `batch`)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"infer:{index}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        name_thread(ThreadRole.INFERENCE, str(self._index))
        while not self._stop.is_set():
            # Not longer than what the channel holds may wait (channel.py, `send_held`).
            packet = self._board.take(timeout=self._channel.due_in(0.25))
            if packet is not None:
                packets = [packet]
                # A batch takes what other streams have waiting now; it never waits for more.
                while len(packets) < self._batch:
                    more = self._board.take(timeout=0)
                    if more is None:
                        break
                    packets.append(more)
                try:
                    self._process(packets)
                except ChannelClosed:
                    return
                except Exception:
                    log.exception("frame failed", stream=packet.source.name, frame=packet.index)
            try:
                self._channel.flush()
                self._progress.mark(self._index)
            except ChannelClosed:
                return

    def _process(self, packets: list[FramePacket]) -> None:
        started = time.perf_counter()
        try:
            outputs = self._backend.infer([p.model_input for p in packets])
        finally:
            for packet in packets:
                packet.path.release(packet.model_input)
        infer_ms = (time.perf_counter() - started) * 1000.0
        for packet, output in zip(packets, outputs, strict=True):
            self._publish(packet, output, infer_ms)

    def _publish(self, packet: FramePacket, output: np.ndarray, infer_ms: float) -> None:
        source, model_input = packet.source, packet.model_input
        config = source.config
        width, height = model_input.width, model_input.height
        events = self._events.get(source.name)
        # The tracker's low stage wants the weak boxes too (down to `keep_score`); the
        # detections message keeps only those above `min_score`.
        floor = config.min_score
        if events is not None:
            floor = min(floor, config.tracking.keep_score)
        wanted = set(config.labels)
        found = [
            (label, class_id, score, box)
            for label, class_id, score, box in self._detector.postprocess(
                output, model_input.scale, width, height, floor
            )
            if not wanted or label in wanted
        ]
        detections = detections_json([
            Detection(label, class_id, round(score, 4), box)
            for label, class_id, score, box in found
            if score >= config.min_score
        ])
        source.count_processed()
        self._infer_ms.append(infer_ms)
        result = Result(
            source.name, packet.index, packet.capture_ts, width, height, round(infer_ms, 2),
            detections,
        )
        # Behind (frames wait): results are late anyway, and held ones cost the supervisor one
        # wake-up for several (channel.py). Keeping up: each goes at once.
        behind = self._board.behind()
        if not behind:
            self._channel.send(result)
        messages: list[Up] = [result] if behind else []
        if events is not None:
            size = (width, height)
            messages += events.on_frame(packet.index, packet.capture_ts, packet.image, size, found)
            # A better view is in sight: the source brings its next detected frame to the host
            # (the media path's snapshot, the one time a frame leaves the device).
            source.snapshot_wanted = events.wants_snapshot
        if behind:
            self._channel.send_held(messages)
        else:
            for message in messages:
                self._channel.send(message)
