"""The worker handle's state machine, on virtual time with fake processes (real pipe framing).

Every deadline here is exact: the loop's clock jumps to the next timer when nothing else is
ready, so "restarted 0.5 s after the crash" is asserted to the millisecond without waiting for
it. The real-process side (spawn, signals, sentinels) is covered by test_supervision.py.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import pytest

from edged.config.model import StreamConfig, WorkerConfig
from edged.protocol import (
    Error,
    Heartbeat,
    Ready,
    Result,
    SetLogLevel,
    Shutdown,
    StartStream,
    StopStream,
    Up,
    UpdateStream,
    WorkerState,
)
from edged.supervisor.handle import PIPE_CLOSED_GRACE_S, WorkerEvents, WorkerHandle
from edged.supervisor.restart import RestartPolicy
from tests.support.virtual import FakeWorker, FakeWorkers, run_virtual, until

S = WorkerState
CAM = StreamConfig(name="cam", source="/videos/cam.mp4", worker="w")
# No jitter: every delay is exact.
POLICY = RestartPolicy(
    initial_delay=0.5,
    max_delay=30.0,
    jitter=0.0,
    budget=3,
    window=3600.0,
    failed_retry=300.0,
    boot_error_delay=5.0,
)


class Recorder:
    """The handle's events: states (with their virtual time) and messages."""

    def __init__(self) -> None:
        self.states: list[tuple[WorkerState, float]] = []
        self.messages: list[Up] = []
        self._changed = asyncio.Event()
        self.fail_on: type | None = None

    def events(self) -> WorkerEvents:
        return WorkerEvents(self._on_message, self._on_state)

    def _on_message(self, handle: WorkerHandle, message: Up) -> None:
        if self.fail_on is not None and isinstance(message, self.fail_on):
            self.fail_on = None
            raise RuntimeError("a bug in the supervisor's handler")
        self.messages.append(message)

    def _on_state(self, handle: WorkerHandle) -> None:
        self.states.append((handle.state, asyncio.get_running_loop().time()))
        self._changed.set()

    def seen(self) -> list[WorkerState]:
        return [state for state, _ in self.states]

    async def reach(self, state: WorkerState, count: int = 1, timeout: float = 3600.0) -> float:
        """Wait (virtual time) until `state` was entered `count` times; when it last was."""
        async with asyncio.timeout(timeout):
            while self.seen().count(state) < count:
                self._changed.clear()
                await self._changed.wait()
        return [t for s, t in self.states if s is state][count - 1]


def ready(worker: FakeWorker) -> Ready:
    return Ready(worker.process.pid or 0, "cpu", "m.onnx", ("CPUExecutionProvider",), 10.0, 5.0)


def scenario(
    test: Callable[[WorkerHandle, FakeWorkers, Recorder], Coroutine[Any, Any, None]],
    **worker: Any,
) -> None:
    """Run `test` with a fresh handle on worker `w` (config overrides in `worker`)."""

    async def main() -> None:
        workers, recorder = FakeWorkers(), Recorder()
        config = WorkerConfig(name="w", model="m.onnx", **worker)
        handle = WorkerHandle(
            config, {"cam": CAM}, recorder.events(), policy=POLICY, host=workers.host()
        )
        handle.start()
        try:
            await test(handle, workers, recorder)
        finally:
            await handle.stop(0.0)
        # Every process the handle started was reaped and its sentinel released.
        assert all(w.process.exitcode is not None and w.process.closed for w in workers.spawned)

    run_virtual(main)


async def started(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder, n: int = 1) -> float:
    """The n-th process spawned, then said READY; when the handle became ready."""
    worker = await workers.spawn_count(n)
    readies = rec.seen().count(S.READY)
    worker.send(ready(worker))
    return await rec.reach(S.READY, readies + 1)


def test_starts_gets_ready_and_stops_cleanly() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        await started(handle, workers, rec)
        worker = workers.last
        assert worker.spec.worker.name == "w" and worker.spec.streams == (CAM,)
        assert handle.pid == worker.process.pid and handle.heartbeat_age() == 0.0
        t0 = asyncio.get_running_loop().time()
        await handle.stop(5.0)
        assert rec.seen() == [S.STARTING, S.READY, S.STOPPING, S.STOPPED]
        assert worker.down == [Shutdown()] and worker.signals == []
        assert worker.exited_at == t0  # it obeyed at once: no grace period spent
        assert handle.last_exit == "exited cleanly"

    scenario(test)


def test_a_crash_restarts_after_a_doubling_delay() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        await started(handle, workers, rec)
        workers.last.exit(1)
        crashed = await rec.reach(S.BACKOFF)
        assert handle.last_exit == "exit code 1" and handle.restarts == 1
        assert handle.heartbeat_age() is None and handle.pid is not None
        await started(handle, workers, rec, 2)
        assert workers.last.spawned_at - crashed == pytest.approx(0.5)
        workers.last.exit(-signal.SIGSEGV)
        crashed = await rec.reach(S.BACKOFF, 2)
        assert handle.last_exit == "killed by SIGSEGV"
        await workers.spawn_count(3)
        assert workers.last.spawned_at - crashed == pytest.approx(1.0)
        assert rec.seen() == [S.STARTING, S.READY, S.BACKOFF] * 2 + [S.STARTING]

    scenario(test)


def test_a_boot_error_says_why_and_backs_off_from_its_own_delay() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        await workers.spawn_count(1)
        workers.last.send(Error("cannot load model m.onnx: truncated", fatal=True))
        workers.last.exit(3)
        failed_at = await rec.reach(S.BACKOFF)
        assert handle.last_exit == (
            "exit code 3: could not load its model or open its device: "
            "cannot load model m.onnx: truncated"
        )
        await workers.spawn_count(2)
        assert workers.last.spawned_at - failed_at == pytest.approx(POLICY.boot_error_delay)
        assert S.READY not in rec.seen()

    scenario(test)


def test_not_ready_in_time_is_aborted_then_killed() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        worker = await workers.spawn_count(1)
        worker.stopped = True  # a wedged process: only SIGKILL ends it
        await rec.reach(S.BACKOFF)
        assert worker.signals == [signal.SIGABRT, signal.SIGKILL]
        # SIGABRT at the READY deadline, SIGKILL kill_after (3 s) later.
        assert worker.exited_at == pytest.approx(worker.spawned_at + 120.0 + 3.0)
        assert handle.last_exit == "not ready within 120 s; killed by SIGKILL from the supervisor"

    scenario(test, ready_timeout=120.0)


def test_silence_after_ready_is_a_hang() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        ready_at = await started(handle, workers, rec)
        worker = workers.last
        await asyncio.sleep(4.0)
        worker.send(Heartbeat(1))  # progress at +4 s moves the deadline to +14 s
        await asyncio.sleep(1.0)
        assert handle.heartbeat_age() == pytest.approx(1.0)
        await rec.reach(S.BACKOFF)
        assert worker.signals == [signal.SIGABRT]  # it died of the abort: no SIGKILL needed
        assert worker.exited_at == pytest.approx(ready_at + 4.0 + 10.0)
        assert handle.last_exit == (
            "no heartbeat for 10 s; aborted by SIGABRT from the supervisor "
            "(its stack traces are in the log above)"
        )

    scenario(test, heartbeat_timeout=10.0)


def test_past_the_budget_it_is_failed_retried_slowly_and_now_on_request() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        for n in range(1, POLICY.budget + 2):
            (await workers.spawn_count(n)).exit(1)
        failed_at = await rec.reach(S.FAILED)
        assert rec.seen().count(S.BACKOFF) == POLICY.budget
        # The slow cadence.
        await workers.spawn_count(POLICY.budget + 2)
        assert workers.last.spawned_at - failed_at == pytest.approx(POLICY.failed_retry)
        workers.last.exit(1)
        await rec.reach(S.FAILED, 2)
        # A reload may have fixed the model: retry_now starts it at once, with a fresh budget.
        t0 = asyncio.get_running_loop().time()
        handle.retry_now()
        await started(handle, workers, rec, POLICY.budget + 3)
        assert workers.last.spawned_at == t0

    scenario(test)


def test_stop_kills_a_worker_that_ignores_shutdown_after_the_grace() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        await started(handle, workers, rec)
        worker = workers.last
        worker.exits_on_shutdown = False
        t0 = asyncio.get_running_loop().time()
        await handle.stop(5.0)
        assert worker.signals == [signal.SIGKILL]
        assert worker.exited_at == pytest.approx(t0 + 5.0)
        assert handle.state is S.STOPPED

    scenario(test)


def test_a_second_signal_kills_without_waiting_for_the_grace() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        await started(handle, workers, rec)
        worker = workers.last
        worker.exits_on_shutdown = False
        t0 = asyncio.get_running_loop().time()
        stopping = asyncio.create_task(handle.stop(5.0))
        await asyncio.sleep(1.0)  # the scenario: 1 s (virtual) into the grace period
        handle.kill_now()
        await stopping
        assert worker.signals == [signal.SIGKILL]
        assert worker.exited_at == pytest.approx(t0 + 1.0)

    scenario(test)


def test_a_changed_model_restarts_at_once_without_counting_a_crash() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        await started(handle, workers, rec)
        old = workers.last
        t0 = asyncio.get_running_loop().time()
        handle.restart_with(WorkerConfig(name="w", model="other.onnx"))
        await started(handle, workers, rec, 2)
        assert old.down == [Shutdown()] and old.process.exitcode == 0
        assert workers.last.spawned_at == t0 and workers.last.spec.worker.model == "other.onnx"
        assert handle.restarts == 0 and S.BACKOFF not in rec.seen()

    scenario(test)


def test_streams_and_log_level_go_down_the_pipe_and_into_the_next_spec() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        await started(handle, workers, rec)
        worker = workers.last
        door = StreamConfig(name="door", source="/videos/door.mp4", worker="w")
        handle.set_stream(door)
        handle.set_stream(msgspec.structs.replace(door, min_score=0.8))
        handle.remove_stream("cam")
        handle.set_log_level("debug")
        await until(lambda: len(worker.down) >= 4, "four messages down the pipe")
        assert worker.down == [
            StartStream(door),
            UpdateStream(msgspec.structs.replace(door, min_score=0.8)),
            StopStream("cam"),
            SetLogLevel("debug"),
        ]
        worker.exit(1)
        await workers.spawn_count(2)
        # The replacement starts with what the handle knows now.
        spec = workers.last.spec
        assert spec.log_level == "debug"
        assert spec.streams == (msgspec.structs.replace(door, min_score=0.8),)

    scenario(test)


def test_new_deadlines_apply_to_the_running_process() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        ready_at = await started(handle, workers, rec)
        worker = workers.last
        await asyncio.sleep(1.0)  # the scenario: 1 s (virtual) after ready
        handle.update_config(WorkerConfig(name="w", model="m.onnx", heartbeat_timeout=3.0))
        await rec.reach(S.BACKOFF)
        assert worker.signals == [signal.SIGABRT]
        assert worker.exited_at == pytest.approx(ready_at + 3.0)  # not ready_at + 10
        assert handle.config.heartbeat_timeout == 3.0 and workers.spawned == [worker]

    scenario(test, heartbeat_timeout=10.0)


def test_a_closed_pipe_with_a_lingering_process_is_killed() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        await started(handle, workers, rec)
        worker = workers.last
        worker.close_pipe()  # the pipe ends, the process does not
        closed_at = asyncio.get_running_loop().time()
        await rec.reach(S.BACKOFF)
        assert worker.signals == [signal.SIGKILL]
        assert worker.exited_at == pytest.approx(closed_at + PIPE_CLOSED_GRACE_S)

    scenario(test)


def test_a_bug_handling_one_message_does_not_cost_the_pipe() -> None:
    async def test(handle: WorkerHandle, workers: FakeWorkers, rec: Recorder) -> None:
        await started(handle, workers, rec)
        rec.fail_on = Result
        first = Result("cam", 1, 0.0, 640, 480, 5.0, b"[]")
        second = Result("cam", 2, 0.0, 640, 480, 5.0, b"[]")
        workers.last.send(first, Heartbeat(1), second)
        await until(lambda: second in rec.messages, "the message after the failed one handled")
        assert [m for m in rec.messages if isinstance(m, Result)] == [second]
        assert handle.state is S.READY

    scenario(test)
