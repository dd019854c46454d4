"""How the worker's decode threads are scheduled by the kernel.

Runs in a worker process, called first thing by each decode thread. Failing changes nothing but
speed, so it never raises.
"""

from __future__ import annotations

import contextlib
import os
import threading


def batch_scheduling() -> None:
    """Mark the calling thread SCHED_BATCH (Linux): the same share of the cores, but its wake-ups
    do not preempt a running thread. A decoder that wakes because its slot came free waits for
    the running inference's time slice instead of cutting into it, so an inference is
    interrupted less; the inference loops keep normal scheduling, so a loop that wakes for a
    new frame still gets a core promptly. Measured (docs/performance.md), 4 streams at half
    load: with decoders and inference loops both SCHED_BATCH the median latency went from
    30.0-30.8 ms to 24.8-26.9 ms in back-to-back runs, but real-rate capacity lost detections
    (0.86 of the wanted ones at 9 streams); with the decoders alone, 26.6 ms (budget 27.8) and
    0.98 of the wanted detections at 9 streams. Elsewhere than Linux: ignored."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))
