"""One worker's lifecycle as explicit state: starting, ready, stopping, backoff, failed.

Runs in the supervisor's event loop. A handle spawns its worker process, waits for its READY
within a deadline, feeds its messages to the supervisor, and watches two things without polling:
the process sentinel and the pipe (a crash shows as EOF and an exit code), and the heartbeat
deadline (a hang shows as silence). A crash or hang is logged in words and the worker is started
again after a backoff; past the restart budget it is reported `failed` and retried slowly. Other
workers are untouched throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

import structlog

from edged.config.model import StreamConfig, WorkerConfig
from edged.protocol import (
    EXIT_BOOT_ERROR,
    Error,
    Heartbeat,
    Ready,
    Shutdown,
    StartStream,
    StopStream,
    Up,
    UpdateStream,
    WorkerSpec,
    encode_spec,
)
from edged.supervisor.channel import PipeClosed, SupervisorChannel
from edged.supervisor.restart import RestartPolicy, RestartTracker, describe_exit

log = structlog.get_logger(__name__)

# One spawn context for the whole program; the global start method is never changed.
_SPAWN = multiprocessing.get_context("spawn")
# After SIGABRT (traceback) a hung worker gets this long to die before SIGKILL.
KILL_AFTER_S = 3.0


class WorkerState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class WorkerEvents:
    """Where a handle delivers what its worker says (all called on the event loop)."""

    on_message: Callable[[WorkerHandle, Up], None]
    on_state: Callable[[WorkerHandle], None]


class WorkerHandle:
    def __init__(
        self,
        config: WorkerConfig,
        streams: dict[str, StreamConfig],
        events: WorkerEvents,
        *,
        log_level: str = "info",
        policy: RestartPolicy | None = None,
        heartbeat_interval: float = 1.0,
    ) -> None:
        self.config = config
        self.streams = dict(streams)
        self._events = events
        self._log_level = log_level
        self._heartbeat_interval = heartbeat_interval
        self.tracker = RestartTracker(policy or RestartPolicy())
        self.state = WorkerState.STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.last_exit = ""
        self.last_heartbeat = 0.0  # monotonic
        self.ready_info: Ready | None = None
        self._process: BaseProcess | None = None
        self._channel: SupervisorChannel | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._exited: asyncio.Future[None] | None = None
        self._restart_requested = False
        self._log = log.bind(worker=config.name)

    def __repr__(self) -> str:
        return f"<WorkerHandle {self.config.name} {self.state.value} pid={self.pid}>"

    # --- control, from the supervisor --------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._lifecycle(), name=f"worker:{self.config.name}")

    def set_stream(self, stream: StreamConfig) -> None:
        """Start a new stream or apply a changed one (thresholds in place, new source reopened)."""
        old = self.streams.get(stream.name)
        self.streams[stream.name] = stream
        if self._channel is not None and self.state is WorkerState.READY:
            message = StartStream(stream) if old is None else UpdateStream(stream)
            self._channel.send(message)

    def remove_stream(self, name: str) -> None:
        if self.streams.pop(name, None) is not None and self._channel is not None:
            self._channel.send(StopStream(name))

    def restart_with(self, config: WorkerConfig) -> None:
        """A changed model or backend: stop this worker's process and start it with `config`."""
        self.config = config
        self.tracker = RestartTracker(self.tracker.policy)
        # Only a running process is ended on purpose; one in backoff simply starts sooner.
        self._restart_requested = self._process is not None and self._process.is_alive()
        self._terminate_current("config changed")
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Ask the worker to stop; escalate to SIGKILL after `grace`; always reap it."""
        self._stopping.set()
        self._wake.set()
        process = self._process
        if process is not None and process.is_alive():
            self._set_state(WorkerState.STOPPING)
            if self._channel is not None:
                self._channel.send(Shutdown())
            if not await self._wait_exit(process, grace):
                self._log.warning("worker did not stop in time; killing it", grace_s=grace)
                self._signal(process, signal.SIGKILL)
                await self._wait_exit(process, 5.0)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_state(WorkerState.STOPPED)

    def kill_now(self) -> None:
        """Second signal during stop: no more waiting."""
        if self._process is not None and self._process.is_alive():
            self._signal(self._process, signal.SIGKILL)

    def heartbeat_age(self) -> float | None:
        if self.state is not WorkerState.READY:
            return None
        return time.monotonic() - self.last_heartbeat

    # --- the lifecycle task ----------------------------------------------------------------

    async def _lifecycle(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            exitcode = await self._run_once()
            if self._stopping.is_set():
                return
            if self._restart_requested:
                # Asked for (a changed model or backend): not a crash, no backoff.
                self._restart_requested = False
                continue
            boot_error = exitcode == EXIT_BOOT_ERROR
            decision = self.tracker.exited(boot_error=boot_error)
            self.restarts += 1
            self._set_state(WorkerState.FAILED if decision.failed else WorkerState.BACKOFF)
            self._log.warning(
                "worker failed; retrying slowly" if decision.failed else "worker will restart",
                reason=self.last_exit,
                retry_in_s=round(decision.delay, 2),
                restarts_in_window=self.tracker.restarts_in_window,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), decision.delay)

    async def _run_once(self) -> int | None:
        self._set_state(WorkerState.STARTING)
        self.ready_info = None
        try:
            process, channel = await self._spawn()
        except OSError as exc:
            self.last_exit = f"could not start a process: {exc}"
            return None
        self._process, self._channel, self.pid = process, channel, process.pid
        exited = self._watch_exit(process)
        reader = asyncio.create_task(self._read(channel), name=f"pipe:{self.config.name}")
        deadline = time.monotonic() + self.config.ready_timeout
        hang_reason = ""
        try:
            while not exited.done() and not self._stopping.is_set():
                if self.state is WorkerState.READY:
                    deadline = self.last_heartbeat + self.config.heartbeat_timeout
                timeout = max(0.0, deadline - time.monotonic())
                await asyncio.wait({exited, reader}, timeout=min(timeout, 1.0))
                if exited.done() or self._stopping.is_set():
                    break
                if reader.done():
                    # The pipe closed but the process lingers: give it a moment, then make sure.
                    if not await self._wait_exit(process, 2.0):
                        self._signal(process, signal.SIGKILL)
                    break
                if time.monotonic() >= deadline:
                    hang_reason = self._hang_reason()
                    self._log.error("worker hung; aborting it", reason=hang_reason, pid=process.pid)
                    self._signal(process, signal.SIGABRT)
                    if not await self._wait_exit(process, KILL_AFTER_S):
                        self._signal(process, signal.SIGKILL)
                    break
        finally:
            # Stopping: `stop()` drives the escalation; here we only wait for the end.
            await self._wait_exit(process, None)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, PipeClosed):
                await reader
            channel.close()
            self._channel = None
        exitcode = process.exitcode
        reason = describe_exit(exitcode, EXIT_BOOT_ERROR)
        self.last_exit = f"{hang_reason}; {reason}" if hang_reason else reason
        if not self._stopping.is_set():
            self._log.error("worker died", reason=self.last_exit, pid=process.pid)
        self._process = None
        return exitcode

    def _hang_reason(self) -> str:
        if self.state is WorkerState.READY:
            return f"no heartbeat for {self.config.heartbeat_timeout:g} s"
        return f"not ready within {self.config.ready_timeout:g} s"

    async def _spawn(self) -> tuple[BaseProcess, SupervisorChannel]:
        from edged.worker.main import worker_main  # the child imports it; we only name it

        spec = WorkerSpec(
            self.config,
            tuple(self.streams.values()),
            log_level=self._log_level,
            heartbeat_interval=self._heartbeat_interval,
        )
        parent, child = socket.socketpair()
        process = _SPAWN.Process(
            target=worker_main,
            args=(child, encode_spec(spec)),
            name=f"edged-worker-{self.config.name}",
            daemon=False,
        )
        try:
            # Spawning forks, execs and pickles the arguments: keep that off the event loop.
            await asyncio.get_running_loop().run_in_executor(None, process.start)
        finally:
            child.close()
        self._log.info("worker spawned", pid=process.pid)
        return process, await SupervisorChannel.open(parent)

    async def _read(self, channel: SupervisorChannel) -> None:
        while True:
            message = await channel.recv()
            if isinstance(message, Heartbeat):
                self.last_heartbeat = time.monotonic()
            elif isinstance(message, Ready):
                self.ready_info = message
                self.last_heartbeat = time.monotonic()
                self.tracker.started()
                self._set_state(WorkerState.READY)
                self._log.info("worker ready", pid=message.pid, load_ms=round(message.load_ms))
            elif isinstance(message, Error):
                self.last_exit = message.message
                self._log.error("worker error", message=message.message, fatal=message.fatal)
            self._events.on_message(self, message)

    def _terminate_current(self, why: str) -> None:
        process = self._process
        if process is not None and process.is_alive():
            self._log.info("stopping worker", reason=why)
            if self._channel is not None:
                self._channel.send(Shutdown())

    def _watch_exit(self, process: BaseProcess) -> asyncio.Future[None]:
        """A future that resolves when the process ends (its sentinel fd becomes readable)."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def reap() -> None:
            # The sentinel closes as the child's files close, a moment before the kernel makes
            # it waitable: try a non-blocking reap and, if early, again a few ms later.
            process.join(0)
            if process.exitcode is None:
                loop.call_later(0.005, reap)
            elif not exited.done():
                exited.set_result(None)

        def on_sentinel() -> None:
            loop.remove_reader(process.sentinel)
            reap()

        loop.add_reader(process.sentinel, on_sentinel)
        self._exited = exited
        return exited

    async def _wait_exit(self, process: BaseProcess, timeout: float | None) -> bool:
        """Wait for the current process to end (and be reaped) without blocking the loop."""
        if process.exitcode is not None:
            return True
        assert self._exited is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        return process.exitcode is not None

    def _signal(self, process: BaseProcess, sig: signal.Signals) -> None:
        if process.pid is not None and process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)

    def _set_state(self, state: WorkerState) -> None:
        if state is not self.state:
            self.state = state
            self._events.on_state(self)
