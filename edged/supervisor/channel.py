"""The supervisor's end of a worker pipe: async, length-prefixed messages.

Runs in the supervisor's event loop. The socket is watched by the loop (an asyncio Protocol), so
reading never blocks; every message that arrived in one read is decoded in one go and handed
over as a batch, which keeps the cost per result to a few microseconds at hundreds a second.
With `deliver` the batch goes straight to a callback from the loop's read callback, without
waking a task (a task switch per result was a measurable share of the supervisor's CPU). A
worker that dies shows up here as end of file.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from typing import cast

import msgspec

from edged.protocol import HEADER, MAX_MESSAGE, Up, frame, up_decoder


class PipeClosed(Exception):
    """The worker's end is gone (it exited, crashed, or closed the pipe)."""


class _PipeProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.messages: deque[Up] = deque()
        self.closed: PipeClosed | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.on_messages: Callable[[list[Up]], None] | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        view = memoryview(buffer)
        offset = 0
        try:
            while len(buffer) - offset >= HEADER.size:
                (size,) = HEADER.unpack_from(buffer, offset)
                if size > MAX_MESSAGE:
                    raise PipeClosed(f"worker sent a {size}-byte message; limit {MAX_MESSAGE}")
                end = offset + HEADER.size + size
                if len(buffer) < end:
                    break
                self.messages.append(up_decoder.decode(view[offset + HEADER.size : end]))
                offset = end
        except msgspec.DecodeError as exc:
            self._fail(PipeClosed(f"worker sent a message that does not decode: {exc}"))
        except PipeClosed as exc:
            self._fail(exc)
        finally:
            view.release()
        del buffer[:offset]
        if self.on_messages is not None and self.messages:
            batch = list(self.messages)
            self.messages.clear()
            self.on_messages(batch)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed is None:
            self.closed = PipeClosed("end of file")
        self._wake()

    def _fail(self, exc: PipeClosed) -> None:
        self.closed = exc
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class SupervisorChannel:
    def __init__(self, protocol: _PipeProtocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(cls, sock: socket.socket) -> SupervisorChannel:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_PipeProtocol, sock=sock)
        return cls(protocol)

    async def recv_many(self) -> list[Up]:
        """Every message that has arrived (at least one); raises PipeClosed at the end."""
        protocol = self._protocol
        while not protocol.messages:
            if protocol.closed is not None:
                raise protocol.closed
            protocol.waiter = asyncio.get_running_loop().create_future()
            await protocol.waiter
        messages = list(protocol.messages)
        protocol.messages.clear()
        return messages

    def deliver(self, on_messages: Callable[[list[Up]], None]) -> None:
        """From now on, hand every batch to `on_messages` as soon as it is decoded (in the loop's
        read callback: it must not block, and an exception from it ends the loop's call, not
        the pipe). Messages that were waiting go first."""
        protocol = self._protocol
        protocol.on_messages = on_messages
        if protocol.messages:
            batch = list(protocol.messages)
            protocol.messages.clear()
            on_messages(batch)

    async def closed(self) -> None:
        """Wait for the end of the pipe; raises its PipeClosed (use with `deliver`)."""
        protocol = self._protocol
        while protocol.closed is None:
            protocol.waiter = asyncio.get_running_loop().create_future()
            await protocol.waiter
        raise protocol.closed

    async def recv(self) -> Up:
        """One message (tests and simple callers)."""
        protocol = self._protocol
        if not protocol.messages:
            protocol.messages.extend(await self.recv_many())
        return protocol.messages.popleft()

    def send(self, message: msgspec.Struct) -> None:
        """Queue a message to the worker; never blocks (messages down are few and small)."""
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(frame(message))

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()
