"""Virtual time for asyncio, and fake worker processes: the handle's state machine without waiting.

`run_virtual(main)` runs a coroutine on a selector event loop whose clock only moves when the loop
has nothing to do: instead of sleeping until the next timer, the clock jumps to it. Ready I/O
(socketpairs, pipes) is still real and is always served first. So a 120 s READY deadline or a
300 s failed-retry cadence passes in microseconds, and timing is exact: a test can assert that a
restart came 0.5 s after a crash, not "about". Only in-process I/O belongs here: with a real
broker or a real child process the clock would run ahead of them.

`FakeWorkers` is the handle's `Host.spawn` and `Host.kill`: each spawn makes a `FakeWorker` that
plays the worker's end of a real socketpair (real framing, real decoding) and "exits" by closing
a pipe that stands in for the process sentinel, with an exit code of the test's choosing.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import msgspec

from edged.protocol import HEADER, Down, Shutdown, WorkerSpec, down_decoder, frame
from edged.supervisor.handle import Host, WorkerProcess

T = TypeVar("T")


class _FastForwardSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            # Nothing scheduled and nothing ready: only outside I/O could wake us; give it a
            # (real) moment, then call it what it is.
            events = super().select(2.0)
            if not events:
                raise RuntimeError("virtual-time loop would wait forever: nothing is scheduled")
            return events
        self.now += timeout
        return []


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` on a loop with virtual time (`loop.time()` starts at 0)."""
    selector = _FastForwardSelector()
    loop = asyncio.SelectorEventLoop(selector)
    loop.time = lambda: selector.now  # type: ignore[method-assign]
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until `predicate()` holds, in virtual time; fail after `timeout` virtual seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout:g} s (virtual): {what}")
        await asyncio.sleep(0.001)


class FakeProcess:
    """A process as a handle sees it: pid, sentinel fd, exit code. Nothing is started."""

    def __init__(self, pid: int) -> None:
        self.pid: int | None = pid
        self._sentinel, self._write_end = os.pipe()
        self.exitcode: int | None = None
        self.closed = False

    @property
    def sentinel(self) -> int:
        return self._sentinel

    def exit(self, code: int) -> None:
        if self.exitcode is None:
            self.exitcode = code
            os.close(self._write_end)  # the sentinel becomes readable, as when a child exits

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return self.exitcode is None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._sentinel)


class FakeWorker:
    """The worker's side of one spawn: messages up, messages down, exit with a code.

    It reads what the supervisor sends as it arrives (a reader on the loop) and, like a real
    worker, exits with code 0 on Shutdown, unless a test made it deaf (`exits_on_shutdown`,
    `stopped`).
    """

    def __init__(self, spec: WorkerSpec, pid: int, sock: socket.socket) -> None:
        self.spec = spec
        self.process = FakeProcess(pid)
        self.sock = sock
        self.sock.setblocking(False)
        self.down: list[Down] = []  # every message the supervisor sent, in order
        self.signals: list[signal.Signals] = []
        self.loop = asyncio.get_running_loop()
        self.spawned_at = self.loop.time()
        self.exited_at: float | None = None
        self.exits_on_shutdown = True
        self.stopped = False  # like SIGSTOP: deaf to everything but SIGKILL
        self._buffer = b""
        self.loop.add_reader(self.sock.fileno(), self._on_readable)

    def send(self, *messages: msgspec.Struct) -> None:
        for message in messages:
            self.sock.send(frame(message))

    def _on_readable(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        if not chunk:  # the supervisor closed its end
            self.loop.remove_reader(self.sock.fileno())
            return
        self._buffer += chunk
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if len(self._buffer) < HEADER.size + size:
                break
            message = down_decoder.decode(self._buffer[HEADER.size : HEADER.size + size])
            self._buffer = self._buffer[HEADER.size + size :]
            self.down.append(message)
            if isinstance(message, Shutdown) and self.exits_on_shutdown and not self.stopped:
                self.exit(0)
                return

    def exit(self, code: int) -> None:
        """The process ends: its pipe closes, then its sentinel fires."""
        if self.process.exitcode is None:
            self.exited_at = self.loop.time()
            self.close_pipe()
            self.process.exit(code)

    def close_pipe(self) -> None:
        """Close the worker's end of the pipe (the process may live on)."""
        if self.sock.fileno() != -1:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class FakeWorkers:
    """Every worker a handle spawned, oldest first; the `Host` to give the handle."""

    def __init__(self) -> None:
        self.spawned: list[FakeWorker] = []
        self._next_pid = 4_000_000  # above pid_max: never a real process
        self._changed: asyncio.Event | None = None

    def host(self) -> Host:
        return Host(
            clock=lambda: asyncio.get_running_loop().time(), spawn=self._spawn, kill=self._kill
        )

    @property
    def last(self) -> FakeWorker:
        return self.spawned[-1]

    async def spawn_count(self, n: int) -> FakeWorker:
        """Wait until the n-th worker was spawned; that worker."""
        while len(self.spawned) < n:
            self._changed = asyncio.Event()
            await self._changed.wait()
        return self.spawned[n - 1]

    async def _spawn(self, spec: WorkerSpec) -> tuple[WorkerProcess, socket.socket]:
        parent, child = socket.socketpair()
        self._next_pid += 1
        worker = FakeWorker(spec, self._next_pid, child)
        self.spawned.append(worker)
        if self._changed is not None:
            self._changed.set()
        return worker.process, parent

    def _kill(self, pid: int, sig: int) -> None:
        worker = next(w for w in self.spawned if w.process.pid == pid)
        worker.signals.append(signal.Signals(sig))
        if sig == signal.SIGKILL or not worker.stopped:
            worker.exit(-sig)
