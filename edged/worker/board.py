"""The hand-off between source threads and inference loops: one slot per stream, newest wins.

Runs in a worker process. Nothing queues without bound: a stream holds at most one decoded frame
waiting for the detector. A live source that outpaces the detector replaces its waiting frame (the
replaced one is counted as dropped); a file read "as fast as it decodes" waits for its slot instead,
so no decode work is wasted. Streams are served oldest-offer first, which keeps them fair.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edged.worker.sources import StreamSource


@dataclass(slots=True)
class FramePacket:
    source: StreamSource
    index: int
    # wall-clock seconds when the frame left the decoder
    capture_ts: float
    image: np.ndarray


class FrameBoard:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        # insertion order = offer order: the oldest waiting frame is served first
        self._waiting: dict[str, FramePacket] = {}
        self._closed = False

    def offer(self, packet: FramePacket, *, wait: bool) -> FramePacket | None:
        """Put a frame in its stream's slot; return the frame it replaced, if any.

        With `wait`, block until the slot is free (or the board closes) instead of replacing.
        """
        name = packet.source.name
        with self._cond:
            while wait and name in self._waiting and not self._closed:
                self._cond.wait()
            replaced = self._waiting.pop(name, None)
            self._waiting[name] = packet
            self._cond.notify_all()
            return replaced

    def take(self, timeout: float) -> FramePacket | None:
        """The oldest waiting frame, or None after `timeout` seconds without one."""
        with self._cond:
            if not self._waiting and not self._closed:
                self._cond.wait(timeout)
            if not self._waiting:
                return None
            packet = self._waiting.pop(next(iter(self._waiting)))
            self._cond.notify_all()
            return packet

    def discard(self, name: str) -> FramePacket | None:
        """Remove a stream's waiting frame (the stream is stopping)."""
        with self._cond:
            packet = self._waiting.pop(name, None)
            self._cond.notify_all()
            return packet

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
