"""How the worker's threads share the cores: their names as the kernel shows them, the kernel's
scheduling of the decode threads, and OpenCV kept to the thread that calls it.

Runs in a worker process: `name_thread` and `batch_scheduling` first thing in each thread,
`opencv_in_caller_thread` once at the worker's start (the bench's part measurements call it too,
so the limit is measured the way the worker runs). Failing changes nothing but speed, so neither
raises; a refusal (EPERM: a seccomp filter such as systemd's
SystemCallFilter=~@resources without `sched_setscheduler` allowed back) is logged once per
process at warning, because the latency and capacity figures of docs/performance.md assume it.
"""

from __future__ import annotations

import enum
import errno
import os
import threading

import cv2
import structlog

log = structlog.get_logger(__name__)

_warned = threading.Event()

# The kernel keeps a thread's name in 15 bytes (TASK_COMM_LEN 16 with the terminating NUL).
COMM_LEN = 15


class ThreadRole(enum.Enum):
    """What a worker thread does, the first part of its kernel-visible name (`role:detail`).
    Threads a library starts inherit the name of the thread that started them, so their CPU
    counts with its role; FFmpeg names its own (`av:h264:df0`), and they decode for a source."""

    SOURCE = "src"  # a stream's demux, decode and letterbox
    INFERENCE = "infer"  # an inference loop: inference, boxes, tracking, events
    METRICS = "metrics"


# The prefix FFmpeg gives the threads it starts (frame and slice threads of a decoder).
FFMPEG_THREAD_PREFIX = "av"


def name_thread(role: ThreadRole, detail: str = "") -> None:
    """Give the calling thread a kernel-visible name (`top -H`, `ps -L`, py-spy), such as
    `src:door` or `infer:0`, cut to 15 bytes. `edged bench` reads the names to split a worker's
    CPU between its sources and its inference loops. Elsewhere than Linux, or when refused:
    nothing changes."""
    name = f"{role.value}:{detail}" if detail else role.value
    comm = name.encode("utf-8", "replace")[:COMM_LEN]
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "wb") as f:
            f.write(comm)
    except OSError:
        pass


def batch_scheduling() -> bool:
    """Mark the calling thread SCHED_BATCH (Linux): the same share of the cores, but its wake-ups
    do not preempt a running thread. A decoder that wakes because its slot came free waits for
    the running inference's time slice instead of cutting into it, so an inference is
    interrupted less; the inference loops keep normal scheduling, so a loop that wakes for a
    new frame still gets a core promptly. Measured (docs/performance.md), 4 streams at half
    load: with decoders and inference loops both SCHED_BATCH the median latency went from
    30.0-30.8 ms to 24.8-26.9 ms in back-to-back runs, but real-rate capacity lost detections
    (0.86 of the wanted ones at 9 streams); with the decoders alone, 26.6 ms (budget 27.8) and
    0.98 of the wanted detections at 9 streams. Elsewhere than Linux: ignored.

    Returns True when the thread now runs SCHED_BATCH.
    """
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None:
        return False
    try:
        setter(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        if not _warned.is_set():
            _warned.set()
            hint = (
                " (a seccomp filter: allow sched_setscheduler, as systemd/edged.service does)"
                if exc.errno == errno.EPERM
                else ""
            )
            log.warning(
                "decode threads keep normal scheduling: SCHED_BATCH refused" + hint,
                error=os.strerror(exc.errno) if exc.errno else str(exc),
            )
        return False
    return True


def opencv_in_caller_thread() -> None:
    """Make OpenCV run every call in the calling thread, without its own thread pool.

    A worker's parallelism is explicit: a thread per stream for decode + letterbox, one
    inference loop per core. OpenCV's default pool (a thread per core, process-wide) splits each
    small letterbox resize across threads that spin while waiting for work, on cores the
    inference loops already fill. Measured here (docs/performance.md), the letterbox of a 720p
    frame to 416x416: 0.48-0.56 core-ms with the pool (0.30 ms wall) against 0.28 in the caller
    alone (0.28 ms wall): the pool doubled the CPU and saved no time. Process-wide; the worker
    calls it once before any stream starts.
    """
    cv2.setNumThreads(0)
