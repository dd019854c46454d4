"""Worker threads ask the kernel for batch scheduling; the rest of the process keeps its own."""

from __future__ import annotations

import os
import threading

from edged.worker.scheduling import batch_scheduling


def test_only_the_calling_thread_becomes_batch() -> None:
    seen: dict[str, int] = {}

    def worker_thread() -> None:
        batch_scheduling()
        seen["thread"] = os.sched_getscheduler(threading.get_native_id())

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join(5)
    assert seen["thread"] == os.SCHED_BATCH
    assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER
