"""The supervisor's end of a worker pipe: async, length-prefixed messages.

Runs in the supervisor's event loop. Reading never blocks the loop (asyncio streams watch the
socket); a worker that dies shows up here as end of file.
"""

from __future__ import annotations

import asyncio
import socket

import msgspec

from edged.protocol import HEADER, MAX_MESSAGE, Up, frame, up_decoder


class PipeClosed(Exception):
    """The worker's end is gone (it exited, crashed, or closed the pipe)."""


class SupervisorChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> SupervisorChannel:
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_MESSAGE)
        return cls(reader, writer)

    async def recv(self) -> Up:
        try:
            header = await self._reader.readexactly(HEADER.size)
            (size,) = HEADER.unpack(header)
            if size > MAX_MESSAGE:
                raise PipeClosed(f"worker sent a {size}-byte message; the limit is {MAX_MESSAGE}")
            message: Up = up_decoder.decode(await self._reader.readexactly(size))
            return message
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise PipeClosed("end of file") from exc
        except msgspec.DecodeError as exc:
            raise PipeClosed(f"worker sent a message that does not decode: {exc}") from exc

    def send(self, message: msgspec.Struct) -> None:
        """Queue a message to the worker; never blocks (messages down are few and small)."""
        if not self._writer.is_closing():
            self._writer.write(frame(message))

    def close(self) -> None:
        self._writer.close()
