"""Health figures: per stream, per worker and for the daemon, published every health_interval.

Runs in the supervisor's event loop. It only counts what workers report (small messages) and reads
process figures (RSS, CPU %) from /proc through psutil, which costs microseconds, never frames.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psutil

from edged import __version__
from edged.protocol import Metrics, Result, StreamCounters, StreamReason, StreamState
from edged.supervisor.handle import WorkerHandle

LATENCY_SAMPLES = 2048


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1))))
    return round(ordered[rank], 2)


@dataclass
class StreamHealth:
    worker: str
    status: str = "starting"
    reason: str = ""  # a StreamReason value
    detail: str = ""  # the reason in words
    # The newest counters from the worker and when they arrived (monotonic); rates are taken
    # between counters' arrival times, not snapshot times: workers report every few seconds,
    # which need not line up with health_interval.
    counters: StreamCounters | None = None
    counters_at: float = 0.0
    base: StreamCounters | None = None
    base_at: float = 0.0
    fps_in: float = 0.0
    fps_processed: float = 0.0
    # capture -> publish, milliseconds, the most recent samples
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))


@dataclass
class WorkerHealth:
    infer_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    process: psutil.Process | None = None
    # Workers report every few seconds; between two reports the last figure stands.
    infer_p50: float | None = None


class HealthTracker:
    def __init__(self) -> None:
        self.started = time.monotonic()
        # One Process object for our own figures: cpu_percent() measures since its last call on
        # the same object (a fresh object would always say 0.0).
        self._me = psutil.Process()
        self._me.cpu_percent(None)
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
        new = (message.status, message.reason.value, message.detail)
        if stream is None or (stream.status, stream.reason, stream.detail) == new:
            return False
        stream.status, stream.reason, stream.detail = new
        return True

    def on_metrics(self, worker: str, message: Metrics) -> None:
        self.workers.setdefault(worker, WorkerHealth()).infer_ms.extend(message.infer_ms)
        for counters in message.streams:
            stream = self.streams.get(counters.stream)
            if stream is not None:
                stream.counters, stream.counters_at = counters, time.monotonic()
                if stream.base is None:
                    stream.base, stream.base_at = counters, stream.counters_at

    def worker_gone(self, name: str) -> None:
        """Its streams are offline until the replacement reports them."""
        for stream in self.streams.values():
            if stream.worker == name and stream.status == "online":
                stream.status = "offline"
                stream.reason, stream.detail = StreamReason.WORKER_RESTARTING, "worker restarting"
            if stream.worker == name:
                # The replacement counts from zero: rates start again from its first report.
                stream.base = stream.counters = None
                stream.fps_in = stream.fps_processed = 0.0

    def snapshot(
        self, handles: dict[str, WorkerHandle], generation: int, mqtt: dict[str, Any]
    ) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "daemon": {
                "version": __version__,
                "pid": self._me.pid,
                "uptime_s": round(now - self.started, 1),
                "config_generation": generation,
                **self._process_figures(self._me),
            },
            "mqtt": mqtt,
            "streams": {name: self._stream(s, handles) for name, s in self.streams.items()},
            "workers": {name: self._worker(h) for name, h in handles.items()},
        }

    def _stream(self, stream: StreamHealth, handles: dict[str, WorkerHandle]) -> dict[str, Any]:
        c, base = stream.counters, stream.base
        if c is not None and base is not None and stream.counters_at > stream.base_at:
            # Frames since the last snapshot's newest report; no new report: the last rates.
            dt = stream.counters_at - stream.base_at
            stream.fps_in = max(0, c.frames_in - base.frames_in) / dt
            stream.fps_processed = max(0, c.frames_processed - base.frames_processed) / dt
            stream.base, stream.base_at = c, stream.counters_at
        handle = handles.get(stream.worker)
        status, reason, detail = stream.status, stream.reason, stream.detail
        if handle is not None and handle.state.value == "failed":
            status, reason = "failed", StreamReason.WORKER_FAILED
            detail = f"worker {stream.worker} failed: {handle.last_exit}"
        elif handle is not None and handle.state.value == "backoff":
            status, reason = "offline", StreamReason.WORKER_RESTARTING
            detail = f"worker {stream.worker} restarting after: {handle.last_exit}"
        latency = list(stream.latency_ms)
        stream.latency_ms.clear()
        return {
            "status": status,
            "reason": str(reason),
            "detail": detail,
            "worker": stream.worker,
            "fps_in": round(stream.fps_in, 2),
            "fps_processed": round(stream.fps_processed, 2),
            "frames_in": c.frames_in if c else 0,
            "frames_processed": c.frames_processed if c else 0,
            "frames_dropped": c.frames_dropped if c else 0,
            "decode_errors": c.decode_errors if c else 0,
            "reconnects": c.reconnects if c else 0,
            "disconnects": c.disconnects if c else 0,
            "latency_ms": {
                "p50": percentile(latency, 50),
                "p95": percentile(latency, 95),
                "p99": percentile(latency, 99),
            },
        }

    def _worker(self, handle: WorkerHandle) -> dict[str, Any]:
        health = self.workers.setdefault(handle.config.name, WorkerHealth())
        figures: dict[str, Any] = {"rss_bytes": None, "cpu_percent": None}
        # Between processes (backoff, failed, stopped) there is no pid to show.
        running = handle.state.value in ("starting", "ready", "stopping")
        if handle.pid is not None and running:
            if health.process is None or health.process.pid != handle.pid:
                with contextlib.suppress(psutil.Error):
                    health.process = psutil.Process(handle.pid)
                    health.process.cpu_percent(None)  # primes the counter
            if health.process is not None:
                figures = self._process_figures(health.process)
        if health.infer_ms:
            health.infer_p50 = percentile(list(health.infer_ms), 50)
            health.infer_ms.clear()
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
            **figures,
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
