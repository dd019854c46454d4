"""Health figures: per stream, per worker and for the daemon, published every health_interval.

Runs in the supervisor's event loop. It only counts what workers report (small messages) and reads
process figures (RSS, CPU %) from /proc through psutil, which costs microseconds, never frames.
Reads and rollovers are separate: `rollover()` closes the current interval (rates, percentiles,
CPU % since the last rollover) and is called once per health message; `snapshot()` only reads, so
two calls give the same answer.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from edged import __version__
from edged.protocol import (
    Metrics,
    Result,
    StreamCounters,
    StreamReason,
    StreamState,
    StreamStatus,
    WorkerState,
)
from edged.stats import percentiles
from edged.supervisor.handle import WorkerHandle

LATENCY_SAMPLES = 2048
# A worker in these states has a process whose figures can be read.
RUNNING = (WorkerState.STARTING, WorkerState.READY, WorkerState.STOPPING)


@dataclass
class StreamHealth:
    worker: str
    status: StreamStatus = StreamStatus.STARTING
    reason: StreamReason = StreamReason.NONE
    detail: str = ""  # the reason in words
    # The newest counters from the worker and when they arrived (monotonic); rates are taken
    # between counters' arrival times, not rollover times: workers report every few seconds,
    # which need not line up with health_interval.
    counters: StreamCounters | None = None
    counters_at: float = 0.0
    base: StreamCounters | None = None
    base_at: float = 0.0
    fps_in: float = 0.0
    fps_processed: float = 0.0
    # capture -> publish, milliseconds, the samples of the current interval
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    # p50/p95/p99 of the last closed interval
    latency: dict[str, float | None] = field(default_factory=lambda: percentiles([]))


@dataclass
class WorkerHealth:
    infer_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    process: psutil.Process | None = None
    # Figures of the last closed interval; between two worker reports the last figure stands.
    infer_p50: float | None = None
    figures: dict[str, Any] = field(
        default_factory=lambda: {"rss_bytes": None, "cpu_percent": None}
    )


class HealthTracker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        # One Process object for our own figures: cpu_percent() measures since its last call on
        # the same object (a fresh object would always say 0.0).
        self._me = psutil.Process()
        self._me.cpu_percent(None)
        self._my_figures: dict[str, Any] = {"rss_bytes": None, "cpu_percent": None}
        self.streams: dict[str, StreamHealth] = {}
        self.workers: dict[str, WorkerHealth] = {}

    def track_stream(self, name: str, worker: str) -> None:
        if name not in self.streams or self.streams[name].worker != worker:
            self.streams[name] = StreamHealth(worker)

    def forget_stream(self, name: str) -> None:
        self.streams.pop(name, None)

    def on_result(self, result: Result, published_at: float) -> None:
        stream = self.streams.get(result.stream)
        if stream is not None:
            stream.latency_ms.append((published_at - result.capture_ts) * 1000.0)

    def on_stream_state(self, message: StreamState) -> bool:
        """Record a stream's status; True when it changed (worth a retained status message)."""
        stream = self.streams.get(message.stream)
        new = (message.status, message.reason, message.detail)
        if stream is None or (stream.status, stream.reason, stream.detail) == new:
            return False
        stream.status, stream.reason, stream.detail = new
        return True

    def on_metrics(self, worker: str, message: Metrics) -> None:
        self.workers.setdefault(worker, WorkerHealth()).infer_ms.extend(message.infer_ms)
        for counters in message.streams:
            stream = self.streams.get(counters.stream)
            if stream is not None:
                stream.counters, stream.counters_at = counters, self._clock()
                if stream.base is None:
                    stream.base, stream.base_at = counters, stream.counters_at

    def worker_gone(self, name: str) -> None:
        """Its streams are offline until the replacement reports them."""
        for stream in self.streams.values():
            if stream.worker == name and stream.status is StreamStatus.ONLINE:
                stream.status = StreamStatus.OFFLINE
                stream.reason, stream.detail = StreamReason.WORKER_RESTARTING, "worker restarting"
            if stream.worker == name:
                # The replacement counts from zero: rates start again from its first report.
                stream.base = stream.counters = None
                stream.fps_in = stream.fps_processed = 0.0

    def online(self) -> int:
        return sum(s.status is StreamStatus.ONLINE for s in self.streams.values())

    # --- the interval: closed by rollover(), read by snapshot() -------------------------------

    def rollover(self, handles: Mapping[str, WorkerHandle]) -> None:
        """Close the current interval: rates, percentiles and CPU % since the last rollover."""
        self._my_figures = self._process_figures(self._me)
        for stream in self.streams.values():
            c, base = stream.counters, stream.base
            if c is not None and base is not None and stream.counters_at > stream.base_at:
                # Frames since the last rollover's newest report; no new report: the last rates.
                dt = stream.counters_at - stream.base_at
                stream.fps_in = max(0, c.frames_in - base.frames_in) / dt
                stream.fps_processed = max(0, c.frames_processed - base.frames_processed) / dt
                stream.base, stream.base_at = c, stream.counters_at
            stream.latency = percentiles(stream.latency_ms)
            stream.latency_ms.clear()
        for name, handle in handles.items():
            health = self.workers.setdefault(name, WorkerHealth())
            health.figures = {"rss_bytes": None, "cpu_percent": None}
            if handle.pid is not None and handle.state in RUNNING:
                if health.process is None or health.process.pid != handle.pid:
                    with contextlib.suppress(psutil.Error):
                        health.process = psutil.Process(handle.pid)
                        health.process.cpu_percent(None)  # primes the counter
                if health.process is not None:
                    health.figures = self._process_figures(health.process)
            if health.infer_ms:
                health.infer_p50 = percentiles(health.infer_ms)["p50"]
                health.infer_ms.clear()

    def snapshot(
        self, handles: Mapping[str, WorkerHandle], generation: int, mqtt: dict[str, Any]
    ) -> dict[str, Any]:
        """The health message's payload: reads only (the figures of the last rollover)."""
        return {
            "daemon": {
                "version": __version__,
                "pid": self._me.pid,
                "uptime_s": round(self._clock() - self.started, 1),
                "config_generation": generation,
                **self._my_figures,
            },
            "mqtt": mqtt,
            "streams": {name: self._stream(s, handles) for name, s in self.streams.items()},
            "workers": {name: self._worker(name, h) for name, h in handles.items()},
        }

    @staticmethod
    def stream_status(
        stream: StreamHealth, handle: WorkerHandle | None
    ) -> tuple[StreamStatus, StreamReason, str]:
        """A stream's status, reason and detail, its worker's state taken into account."""
        if handle is not None and handle.state is WorkerState.FAILED:
            detail = f"worker {stream.worker} failed: {handle.last_exit}"
            return StreamStatus.FAILED, StreamReason.WORKER_FAILED, detail
        if handle is not None and handle.state is WorkerState.BACKOFF:
            detail = f"worker {stream.worker} restarting after: {handle.last_exit}"
            return StreamStatus.OFFLINE, StreamReason.WORKER_RESTARTING, detail
        return stream.status, stream.reason, stream.detail

    def _stream(self, stream: StreamHealth, handles: Mapping[str, WorkerHandle]) -> dict[str, Any]:
        c = stream.counters
        status, reason, detail = self.stream_status(stream, handles.get(stream.worker))
        return {
            "status": status.value,
            "reason": reason.value,
            "detail": detail,
            "worker": stream.worker,
            "fps_in": round(stream.fps_in, 2),
            "fps_processed": round(stream.fps_processed, 2),
            "frames_in": c.frames_in if c else 0,
            "frames_processed": c.frames_processed if c else 0,
            "frames_dropped": c.frames_dropped if c else 0,
            "frames_skipped": c.frames_skipped if c else 0,
            "decode_errors": c.decode_errors if c else 0,
            "reconnects": c.reconnects if c else 0,
            "disconnects": c.disconnects if c else 0,
            "latency_ms": dict(stream.latency),
        }

    def _worker(self, name: str, handle: WorkerHandle) -> dict[str, Any]:
        health = self.workers.get(name) or WorkerHealth()
        # Between processes (backoff, failed, stopped) there is no pid to show.
        running = handle.state in RUNNING
        age = handle.heartbeat_age()
        return {
            "state": handle.state.value,
            "pid": handle.pid if running else None,
            "backend": handle.config.backend,
            "model": handle.config.model,
            # inference loops, as resolved from "auto" on this machine (edged.config.auto)
            "threads": handle.config.threads,
            "restarts": handle.restarts,
            "last_exit": handle.last_exit,
            "heartbeat_age_s": None if age is None else round(age, 2),
            "infer_ms_p50": health.infer_p50,
            **(health.figures if running else {"rss_bytes": None, "cpu_percent": None}),
        }

    @staticmethod
    def _process_figures(process: psutil.Process) -> dict[str, Any]:
        try:
            with process.oneshot():
                return {
                    "rss_bytes": process.memory_info().rss,
                    "cpu_percent": round(process.cpu_percent(None), 1),
                }
        except psutil.Error:
            return {"rss_bytes": None, "cpu_percent": None}
