"""The bench's reading of the workers' threads: CPU by the role their names carry."""

from __future__ import annotations

import os
import threading
import time

from edged.bench.run import cpu_by_role, thread_cpu
from edged.worker.scheduling import ThreadRole, name_thread


def test_thread_cpu_is_summed_by_the_role_in_the_thread_name() -> None:
    burned = threading.Event()
    release = threading.Event()
    spent: dict[str, float] = {}

    def inference_loop() -> None:
        name_thread(ThreadRole.INFERENCE, "0")
        start = time.thread_time()
        while time.thread_time() - start < 0.3:  # CPU work the kernel counts in 10 ms ticks
            sum(range(1000))
        spent["cpu"] = time.thread_time() - start
        burned.set()
        release.wait(10)  # still alive while it is read

    before = thread_cpu([os.getpid()])
    thread = threading.Thread(target=inference_loop)
    thread.start()
    try:
        assert burned.wait(30)
        after = thread_cpu([os.getpid()])
    finally:
        release.set()
        thread.join(10)
    # A new thread: all its CPU is in the window; ticks may lose up to 10 ms at each edge.
    roles = cpu_by_role(before, after)
    assert abs(roles["infer"] - spent["cpu"]) <= 0.03, (roles, spent)
    # This test's own thread has no role in its name.
    assert {role for role, _ in after.values()} == {"other", "infer"}, after
    assert thread_cpu([2**22 + 12345]) == {}  # no such process: nothing, no error


def test_a_thread_that_ended_between_readings_is_left_out() -> None:
    """Its CPU after the first reading is unknown; the threads alive at the second count."""
    first = {1: ("src", 5.0), 2: ("infer", 7.0)}
    last = {2: ("infer", 9.5), 3: ("src", 0.25)}  # 1 ended; 3 started in between
    assert cpu_by_role(first, last) == {"infer": 2.5, "src": 0.25}
