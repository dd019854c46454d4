"""A running worker: its stream sources, inference loops and metrics reporter.

Runs in a worker process; driven by the main thread, which handles the supervisor's messages.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque

import structlog

from edged.backends.base import Backend
from edged.config.auto import inference_threads
from edged.config.model import StreamConfig
from edged.protocol import (
    Metrics,
    StreamCounters,
    StreamReason,
    StreamState,
    StreamStatus,
    WorkerSpec,
)
from edged.track.events import StreamEvents
from edged.track.tracker import EndReason
from edged.urls import redact_url
from edged.worker.board import FrameBoard
from edged.worker.channel import ChannelClosed, WorkerChannel
from edged.worker.detector import Detector
from edged.worker.inference import InferenceLoop, Progress
from edged.worker.scheduling import ThreadRole, name_thread
from edged.worker.sources import StreamSource

log = structlog.get_logger(__name__)


class WorkerRuntime:
    def __init__(
        self, spec: WorkerSpec, backend: Backend, detector: Detector, channel: WorkerChannel
    ) -> None:
        self._spec = spec
        self._backend = backend
        self._channel = channel
        self._board = FrameBoard()
        self._sources: dict[str, StreamSource] = {}
        self._infer_ms: deque[float] = deque(maxlen=1024)
        # Per stream with tracking on; inference loops only read it (a dict lookup).
        self._events: dict[str, StreamEvents] = {}
        loops = inference_threads(spec.worker)  # a number already, unless built by hand
        # A loop that shows no progress for half the supervisor's deadline withholds the
        # heartbeat, so the supervisor sees the hang well inside its deadline.
        stall = max(spec.heartbeat_interval * 2, spec.worker.heartbeat_timeout / 2)
        progress = Progress(loops, channel, spec.heartbeat_interval, stall)
        self._loops = [
            InferenceLoop(
                i, self._board, backend, detector, channel, progress, self._infer_ms,
                self._events, spec.worker.batch,
            )
            for i in range(loops)
        ]
        self._stop = threading.Event()
        self._metrics = threading.Thread(target=self._report, name="metrics", daemon=True)

    def start(self) -> None:
        for loop in self._loops:
            loop.start()
        for stream in self._spec.streams:
            self.start_stream(stream)
        self._metrics.start()

    def start_stream(self, config: StreamConfig) -> None:
        if config.name in self._sources:
            self.stop_stream(config.name)
        source = StreamSource(config, self._board, self._backend, self._send_status)
        self._sources[config.name] = source
        if config.tracking.enabled:
            self._events[config.name] = StreamEvents(config)
        source.start()
        log.info("stream started", stream=config.name, source=redact_url(config.source))

    def update_stream(self, config: StreamConfig) -> None:
        source = self._sources.get(config.name)
        if source is None or source.config.source != config.source:
            self.start_stream(config)
            return
        source.config = config
        events = self._events.get(config.name)
        if events is not None and not config.tracking.enabled:
            self._end_events(config.name, EndReason.SHUTDOWN)
        elif events is not None:
            events.reconfigure(config)
        elif config.tracking.enabled:
            self._events[config.name] = StreamEvents(config)
        log.info("stream updated", stream=config.name)

    def stop_stream(self, name: str) -> None:
        source = self._sources.pop(name, None)
        if source is not None:
            source.stop()
            self._end_events(name, EndReason.SHUTDOWN)
            log.info("stream stopped", stream=name)

    def stop(self) -> None:
        self._stop.set()
        for source in self._sources.values():
            source.stop()
        self._board.close()
        for loop in self._loops:
            loop.stop()
        for loop in self._loops:
            loop.thread.join(2.0)
        for name in list(self._events):
            self._end_events(name, EndReason.SHUTDOWN)
        with contextlib.suppress(ChannelClosed):
            self._channel.flush(now=True)  # results held at saturation (channel.py)

    def _end_events(self, name: str, reason: EndReason, *, keep: bool = False) -> None:
        """Send `end` for every open event of a stream; forget its tracker unless `keep`."""
        events = self._events.get(name) if keep else self._events.pop(name, None)
        if events is None:
            return
        with contextlib.suppress(ChannelClosed):
            for message in events.end_all(reason, time.time()):
                self._channel.send(message)

    def _send_status(
        self, stream: str, status: StreamStatus, reason: StreamReason, detail: str
    ) -> None:
        if status in (StreamStatus.OFFLINE, StreamStatus.ENDED):
            # Its objects are gone from view: their events end now, not at some later frame.
            self._end_events(stream, EndReason.STREAM_OFFLINE, keep=True)
        with contextlib.suppress(ChannelClosed):
            self._channel.send(StreamState(stream, status, reason, detail))

    def _report(self) -> None:
        name_thread(ThreadRole.METRICS)
        while not self._stop.wait(self._spec.metrics_interval):
            sample = tuple(self._infer_ms)
            self._infer_ms.clear()
            counters = tuple(
                StreamCounters(
                    s.name,
                    s.frames_in,
                    s.frames_processed,
                    s.frames_dropped,
                    s.decode_errors,
                    s.reconnects,
                    s.disconnects,
                    s.frames_skipped,
                )
                for s in list(self._sources.values())
            )
            try:
                self._channel.send(Metrics(counters, sample))
            except ChannelClosed:
                return
