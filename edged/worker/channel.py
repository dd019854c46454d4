"""The worker's end of the pipe: blocking, length-prefixed messages over a socket.

Runs in a worker process. Sends come from several threads (inference loops, metrics), so they are
serialised by a lock. If the supervisor dies the socket reads EOF and the worker exits; it never
outlives its supervisor.
"""

from __future__ import annotations

import socket
import threading

import msgspec

from edged.protocol import HEADER, MAX_MESSAGE, Down, down_decoder, frame


class ChannelClosed(Exception):
    """The supervisor's end is gone."""


class WorkerChannel:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: msgspec.Struct) -> None:
        data = frame(message)
        with self._send_lock:
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
