"""Callback delivery: jobs posted for a subscribed thread run only inside its `process_report`.

A job is a plain Python callable; it runs with no emulator lock held (pyacl.md 9a.9), so a
callback that blocks on a full queue blocks the caller's `process_report`, nothing else.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Job:
    run: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)


class Reports:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[int, queue.Queue[Job]] = {}
        self.subscriptions: Counter[int] = Counter()

    def _queue(self, tid: int) -> queue.Queue[Job]:
        with self.lock:
            q = self.queues.get(tid)
            if q is None:
                q = self.queues[tid] = queue.Queue()
            return q

    def subscribe(self, tid: int) -> None:
        with self.lock:
            self.subscriptions[tid] += 1

    def unsubscribe(self, tid: int) -> None:
        with self.lock:
            self.subscriptions[tid] -= 1
            if self.subscriptions[tid] <= 0:
                del self.subscriptions[tid]

    def subscribed(self, tid: int) -> bool:
        with self.lock:
            return self.subscriptions[tid] > 0

    def post(self, tid: int, run: Callable[[], None]) -> Job:
        job = Job(run)
        self._queue(tid).put(job)
        return job

    def take(self, tid: int, timeout: float | None) -> Job | None:
        try:
            return self._queue(tid).get(timeout=timeout)
        except queue.Empty:
            return None

    def pending(self, tid: int) -> int:
        return self._queue(tid).qsize()


REPORTS = Reports()
