"""One worker's lifecycle as explicit state: starting, ready, stopping, backoff, failed.

Runs in the supervisor's event loop. A handle spawns its worker process, waits for its READY
within a deadline, feeds its messages to the supervisor, and watches two things without polling:
the process sentinel and the pipe (a crash shows as EOF and an exit code), and the heartbeat
deadline (a hang shows as silence; `escalation.HangWatch` decides SIGABRT, then SIGKILL). A crash
or hang is logged in words and the worker is started again after a backoff; past the restart
budget it is reported `failed` and retried slowly. Other workers are untouched throughout. Every
process a handle starts is reaped and closed (its pipe, sentinel and socket fds released) before
the next one starts, so crash/restart cycles leak nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from edged.config.model import StreamConfig, WorkerConfig
from edged.protocol import (
    EXIT_BOOT_ERROR,
    Error,
    Heartbeat,
    Ready,
    SetLogLevel,
    Shutdown,
    StartStream,
    StopStream,
    Up,
    UpdateStream,
    WorkerSpec,
    WorkerState,
    encode_spec,
)
from edged.spawn import worker_process
from edged.supervisor.channel import PipeClosed, SupervisorChannel
from edged.supervisor.escalation import Action, HangWatch
from edged.supervisor.restart import RestartPolicy, RestartTracker, describe_exit

log = structlog.get_logger(__name__)

# One spawn context for the whole program; the global start method is never changed.
_SPAWN = multiprocessing.get_context("spawn")
# A worker whose pipe closed gets this long to exit on its own before SIGKILL.
PIPE_CLOSED_GRACE_S = 2.0
# After SIGKILL while stopping: how long to wait for the kernel before giving up on a reap.
REAP_TIMEOUT_S = 10.0


class WorkerProcess(Protocol):
    """What a handle uses of a worker process (multiprocessing's `BaseProcess` in production)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def is_alive(self) -> bool: ...
    def close(self) -> None: ...


async def spawn_worker(spec: WorkerSpec) -> tuple[WorkerProcess, socket.socket]:
    """Start a worker process (spawn) with `spec`; return it and the supervisor's pipe end."""
    parent, child = socket.socketpair()
    process = _SPAWN.Process(
        target=worker_process,
        args=(child, encode_spec(spec)),
        name=f"edged-worker-{spec.worker.name}",
        daemon=False,
    )
    try:
        # Spawning forks, execs and pickles the arguments: keep that off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, process.start)
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    return process, parent


@dataclass(frozen=True)
class Host:
    """What a handle needs from the machine: a clock, a way to start a worker, signals.

    Production uses the real ones; the state machine's unit tests pass a clock that is the
    event loop's (virtual) time and fake processes, so hours of backoff take milliseconds.
    """

    clock: Callable[[], float] = time.monotonic
    spawn: Callable[[WorkerSpec], Awaitable[tuple[WorkerProcess, socket.socket]]] = field(
        default=spawn_worker
    )
    kill: Callable[[int, int], None] = os.kill


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
        host: Host | None = None,
    ) -> None:
        self._host = host or Host()
        self.config = config
        self.streams = dict(streams)
        self._events = events
        self._log_level = log_level
        self._heartbeat_interval = heartbeat_interval
        self._policy_override = policy  # tests; otherwise the worker's `[workers.restart]`
        self.tracker = self._new_tracker()
        self.state = WorkerState.STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.last_exit = ""
        self._error = ""  # the last fatal Error the current process sent
        self.last_heartbeat = 0.0  # monotonic
        self._process: WorkerProcess | None = None
        self._channel: SupervisorChannel | None = None
        self._watch: HangWatch | None = None
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal while stopping: SIGKILL, no grace
        self._grace = 5.0
        self._wake = asyncio.Event()
        # Set on READY: the deadline moves from `ready_timeout` to the (usually much earlier)
        # heartbeat deadline, so the supervising wait must be re-armed. Heartbeats only push the
        # deadline later; waking at the old one and re-checking is enough for them.
        self._rearm = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._restart_requested = False
        # A proxy, not a resolved logger: a reloaded log level reaches it (edged.logs).
        self._log = structlog.get_logger(__name__, worker=config.name)

    def __repr__(self) -> str:
        return f"<WorkerHandle {self.config.name} {self.state.value} pid={self.pid}>"

    def _policy(self) -> RestartPolicy:
        return self._policy_override or RestartPolicy.from_config(self.config.restart)

    def _new_tracker(self) -> RestartTracker:
        return RestartTracker(self._policy(), clock=self._host.clock)

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
        self.tracker = self._new_tracker()
        # Only a running process is ended on purpose; one in backoff simply starts sooner.
        self._restart_requested = self._process is not None and self._process.is_alive()
        self._terminate_current("config changed")
        self._wake.set()

    def update_config(self, config: WorkerConfig) -> None:
        """Only supervisor-side settings changed (deadlines, restart policy): the running process
        is left alone; the new deadlines apply to it at once, the policy from its next exit."""
        self.config = config
        self.tracker.set_policy(self._policy())
        if self._watch is not None:
            self._watch.retime(config.ready_timeout, config.heartbeat_timeout)
            self._rearm.set()  # a deadline may have moved earlier

    def set_log_level(self, level: str) -> None:
        """`node.log_level` changed: this worker's process follows now, the next one starts so."""
        self._log_level = level
        if self._channel is not None:
            self._channel.send(SetLogLevel(level))

    def retry_now(self) -> None:
        """A worker waiting in backoff or failed is started again at once (after a reload:
        the model file it could not load may have been fixed in place)."""
        if self.state in (WorkerState.BACKOFF, WorkerState.FAILED):
            self._log.info("retrying now", state=self.state.value)
            self.tracker = self._new_tracker()
            self._wake.set()

    async def stop(self, grace: float) -> None:
        """Ask the worker to stop; escalate to SIGKILL after `grace`; always reap it.

        The lifecycle task does the stopping, so a worker that is being spawned right now is
        stopped too, once it exists (none is left running behind our back).
        """
        self._grace = grace
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:
                self._log.exception("worker lifecycle failed while stopping")
        self._set_state(WorkerState.STOPPED)

    def kill_now(self) -> None:
        """Second signal during stop: no more waiting."""
        self._hurry.set()
        self._stopping.set()
        self._wake.set()

    def heartbeat_age(self) -> float | None:
        if self.state is not WorkerState.READY:
            return None
        return self._host.clock() - self.last_heartbeat

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
                budget=self.tracker.policy.budget,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), decision.delay)

    async def _run_once(self) -> int | None:
        self._set_state(WorkerState.STARTING)
        self._error = ""
        try:
            process, channel = await self._spawn()
        except OSError as exc:
            self.last_exit = f"could not start a process: {exc}"
            self._log.error("worker not started", reason=self.last_exit)
            return None
        self._process, self._channel, self.pid = process, channel, process.pid
        self._watch = HangWatch(
            self.config.ready_timeout, self.config.heartbeat_timeout, clock=self._host.clock
        )
        exited = self._watch_exit(process)
        reader = asyncio.create_task(self._read(channel), name=f"pipe:{self.config.name}")
        sent: signal.Signals | None = None
        try:
            sent = await self._supervise(process, exited, reader, self._watch)
        finally:
            if not exited.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), REAP_TIMEOUT_S)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, PipeClosed):
                await reader
            channel.close()
            self._channel = None
        exitcode = process.exitcode
        reason = describe_exit(exitcode, EXIT_BOOT_ERROR, sent=sent)
        if self._error:
            reason = f"{reason}: {self._error}"  # the worker's own words, e.g. why the model failed
        hung = self._watch.hung
        self.last_exit = f"{self._watch.reason()}; {reason}" if hung else reason
        if exitcode is None:
            self._log.error("worker could not be reaped", pid=process.pid)
        elif not self._stopping.is_set():
            self._log.error("worker died", reason=self.last_exit, pid=process.pid)
        else:
            self._log.info("worker stopped", reason=self.last_exit, pid=process.pid)
        self._process = None
        if exitcode is not None:
            # Releases the sentinel fd now rather than whenever the object is collected.
            process.close()
        return exitcode

    async def _supervise(
        self,
        process: WorkerProcess,
        exited: asyncio.Future[None],
        reader: asyncio.Task[None],
        watch: HangWatch,
    ) -> signal.Signals | None:
        """Wait for the process to end, ending it ourselves when it hangs or must stop."""
        sent: signal.Signals | None = None
        stopping = asyncio.ensure_future(self._stopping.wait())
        pipe_closed_at: float | None = None
        try:
            while not exited.done():
                if self._stopping.is_set():
                    return await self._stop_process(process, exited) or sent
                verdict = watch.check()
                if verdict.action is Action.ABORT:
                    self._log.error(
                        "worker hung; aborting it with SIGABRT (stack traces follow)",
                        reason=watch.reason(),
                        pid=process.pid,
                    )
                    sent = self._signal(process, signal.SIGABRT) or sent
                elif verdict.action is Action.KILL:
                    self._log.error(
                        "hung worker still there after SIGABRT; killing it",
                        after_s=watch.kill_after,
                        pid=process.pid,
                    )
                    sent = self._signal(process, signal.SIGKILL) or sent
                timeout = verdict.check_in
                if reader.done():
                    # The pipe closed but the process lingers: give it a moment, then make sure.
                    now = self._host.clock()
                    if pipe_closed_at is None:
                        pipe_closed_at = now
                    if now - pipe_closed_at >= PIPE_CLOSED_GRACE_S:
                        self._log.warning("worker closed its pipe but did not exit; killing it")
                        return self._signal(process, signal.SIGKILL) or sent
                    left = pipe_closed_at + PIPE_CLOSED_GRACE_S - now
                    timeout = left if timeout is None else min(timeout, left)
                rearm = asyncio.ensure_future(self._rearm.wait())
                waiters: set[asyncio.Future[Any]] = {exited, stopping, rearm}
                if not reader.done():
                    waiters.add(reader)
                try:
                    await asyncio.wait(
                        waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    rearm.cancel()
                self._rearm.clear()
            return sent
        finally:
            stopping.cancel()

    async def _stop_process(
        self, process: WorkerProcess, exited: asyncio.Future[None]
    ) -> signal.Signals | None:
        """Shutdown message, `grace` seconds (none after a second signal), then SIGKILL."""
        self._set_state(WorkerState.STOPPING)
        if self._channel is not None:
            self._channel.send(Shutdown())
        if not self._hurry.is_set():
            hurry = asyncio.ensure_future(self._hurry.wait())
            try:
                waiters: set[asyncio.Future[Any]] = {exited, hurry}
                await asyncio.wait(
                    waiters, timeout=self._grace, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                hurry.cancel()
        if exited.done():
            return None
        if self._hurry.is_set():
            self._log.warning("second signal; killing the worker now", pid=process.pid)
        else:
            self._log.warning("worker did not stop in time; killing it", grace_s=self._grace)
        return self._signal(process, signal.SIGKILL)

    async def _spawn(self) -> tuple[WorkerProcess, SupervisorChannel]:
        spec = WorkerSpec(
            self.config,
            tuple(self.streams.values()),
            log_level=self._log_level,
            heartbeat_interval=self._heartbeat_interval,
        )
        process, parent = await self._host.spawn(spec)
        self._log.info("worker spawned", pid=process.pid)
        return process, await SupervisorChannel.open(parent)

    async def _read(self, channel: SupervisorChannel) -> None:
        channel.deliver(self._handle_batch)
        await channel.closed()

    def _handle_batch(self, messages: list[Up]) -> None:
        for message in messages:
            try:
                self._handle(message)
            except Exception:
                # Our bug, not the worker's: logged, and the pipe (and its streams) carry on.
                self._log.exception("handling a worker message failed", message=type(message))

    def _handle(self, message: Up) -> None:
        if isinstance(message, Heartbeat):
            self.last_heartbeat = self._host.clock()
            if self._watch is not None:
                self._watch.beat()
        elif isinstance(message, Ready):
            self.last_heartbeat = self._host.clock()
            if self._watch is not None:
                self._watch.beat()
            self.tracker.started()
            self._rearm.set()
            if self.state is WorkerState.STARTING:
                self._set_state(WorkerState.READY)
            self._log.info("worker ready", pid=message.pid, load_ms=round(message.load_ms))
        elif isinstance(message, Error):
            if message.fatal:
                self._error = message.message
            self._log.error("worker error", message=message.message, fatal=message.fatal)
        try:
            self._events.on_message(self, message)
        except Exception:
            # A bug on our side must not cost the worker its pipe (and its streams).
            self._log.exception("handling a worker message failed", message=type(message))

    def _terminate_current(self, why: str) -> None:
        process = self._process
        if process is not None and process.is_alive():
            self._log.info("stopping worker", reason=why)
            if self._channel is not None:
                self._channel.send(Shutdown())

    def _watch_exit(self, process: WorkerProcess) -> asyncio.Future[None]:
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
        return exited

    def _signal(self, process: WorkerProcess, sig: signal.Signals) -> signal.Signals | None:
        """Send `sig` if the process is still there; return it when sent."""
        if process.pid is not None and process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                self._host.kill(process.pid, sig)
                return sig
        return None

    def _set_state(self, state: WorkerState) -> None:
        if state is not self.state:
            self.state = state
            self._events.on_state(self)
