"""The worker's end of the pipe: blocking, length-prefixed messages over a socket.

Runs in a worker process. Sends come from several threads (inference loops, metrics), so they are
serialised by a lock. If the supervisor dies the socket reads EOF and the worker exits; it never
outlives its supervisor.

Two ways to send. `send` writes at once (with whatever is held, first, so order is kept).
`send_held` is for results while the worker is behind (`FrameBoard.behind`): they are held
and written together, `HOLD_S` after the first of them, by whichever comes first: any `send`, a
`send_held` that finds the time passed, or `flush` (the inference loops call it every iteration
and wait no longer than `due_in()` for a frame). At saturation results are late anyway (tens of
ms in the board); written one at a time, each woke the supervisor, which then woke again for its
PUBACK: held together, a few are read, published and acknowledged in one go, and the
supervisor's CPU a frame halves (docs/performance.md). A crash loses what is held, as it loses
the frames in the board.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence

import msgspec

from edged.protocol import HEADER, MAX_MESSAGE, Down, down_decoder, frame

# How long held messages wait to be written together (seconds): against the 70-110 ms a result
# already waits at saturation, it gathers about six at 100 frames/s. Measured on the 2-core box,
# 2 and 4 streams, alternating runs: 30 ms left the supervisor 0.26-0.27 core-ms a message
# published, 60 ms 0.20-0.25 (docs/performance.md).
HOLD_S = 0.06


class ChannelClosed(Exception):
    """The supervisor's end is gone."""


class WorkerChannel:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._send_lock = threading.Lock()
        self._held = bytearray()
        self._held_since = 0.0

    def send(self, message: msgspec.Struct) -> None:
        data = frame(message)
        with self._send_lock:
            if self._held:
                data = bytes(self._held) + data
                self._held.clear()
            self._write(data)

    def send_held(self, messages: Sequence[msgspec.Struct]) -> None:
        """Hold `messages` (written together with later ones, at most `HOLD_S` later)."""
        data = b"".join(frame(m) for m in messages)
        now = time.monotonic()
        with self._send_lock:
            if not self._held:
                self._held_since = now
            self._held += data
            if now - self._held_since >= HOLD_S:
                self._write_held()

    def due_in(self, idle: float) -> float:
        """Seconds until what is held must be written; `idle` when nothing is held."""
        if not self._held:
            return idle
        return max(0.0, min(idle, self._held_since + HOLD_S - time.monotonic()))

    def flush(self, *, now: bool = False) -> None:
        """Write what is held once its time has come (or `now`); cheap when nothing is."""
        if self._held and (now or time.monotonic() - self._held_since >= HOLD_S):
            with self._send_lock:
                if self._held:
                    self._write_held()

    def _write_held(self) -> None:
        data = bytes(self._held)
        self._held.clear()
        self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc

    def recv(self) -> Down:
        """The next message from the supervisor; raises ChannelClosed on EOF."""
        (size,) = HEADER.unpack(self._read_exactly(HEADER.size))
        if size > MAX_MESSAGE:
            raise ChannelClosed(f"message of {size} bytes is larger than the protocol allows")
        message: Down = down_decoder.decode(self._read_exactly(size))
        return message

    def _read_exactly(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            try:
                chunk = self._sock.recv(size - len(chunks))
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not chunk:
                raise ChannelClosed("end of file")
            chunks += chunk
        return bytes(chunks)

    def close(self) -> None:
        self._sock.close()
