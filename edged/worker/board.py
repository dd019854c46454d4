"""The hand-off between source threads and inference loops: one slot per stream, newest wins.

Runs in a worker process. Nothing queues without bound: a stream holds at most one decoded frame
waiting for the detector. A live source that outpaces the detector replaces its waiting frame (the
replaced one is counted as dropped); a file read "as fast as it decodes" waits for its slot instead,
so no decode work is wasted. Streams are served oldest-offer first, which keeps them fair. A
frame that finds its stream's previous one still waiting also says the worker is behind
(`behind`): the inference loops then hold their results a moment (edged/worker/channel.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# How long the worker counts as behind after a stream's frame found its slot taken (`behind`).
BEHIND_S = 0.5

if TYPE_CHECKING:
    from edged.backends.base import MediaPath, ModelInput
    from edged.backends.picture import Picture
    from edged.worker.sources import StreamSource


@dataclass(slots=True)
class FramePacket:
    source: StreamSource
    # The media path that made the model input; it takes the input back once inferred.
    path: MediaPath[Any]
    index: int
    # wall-clock seconds when the frame left the decoder
    capture_ts: float
    model_input: ModelInput
    # The frame on the host, only when the stream's tracker asked for one (a snapshot): the
    # media path's `snapshot()`, taken right after this frame was prepared.
    image: Picture | None = None


class FrameBoard:
    """One lock, and a condition for each kind of waiter, so a hand-off wakes only a thread
    that can use it: an offer wakes one idle inference loop; a take wakes only the decoder
    whose slot it freed. (One shared condition woke every decoder and every loop on each
    frame: with 4 file streams, ~97 us of CPU a frame in the board against ~60 us now, see
    tests/worker/test_board.py.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame_ready = threading.Condition(self._lock)  # inference loops wait here
        # a stream's decoder waits on its own condition for its slot to come free
        self._slot_free: dict[str, threading.Condition] = {}
        # insertion order = offer order: the oldest waiting frame is served first
        self._waiting: dict[str, FramePacket] = {}
        self._closed = False
        self._full_at = -BEHIND_S  # when a frame last found its stream's slot taken (monotonic)

    def offer(self, packet: FramePacket, *, wait: bool) -> FramePacket | None:
        """Put a frame in its stream's slot; return the frame it replaced, if any.

        With `wait`, block until the slot is free (or the board closes) instead of replacing.
        """
        name = packet.source.name
        with self._lock:
            if name in self._waiting:
                self._full_at = time.monotonic()
            if wait and name in self._waiting and not self._closed:
                slot = self._slot_free.get(name)
                if slot is None:
                    slot = self._slot_free[name] = threading.Condition(self._lock)
                while name in self._waiting and not self._closed:
                    slot.wait()
            replaced = self._waiting.pop(name, None)
            self._waiting[name] = packet
            if replaced is None:  # a replaced frame had already woken a loop
                self._frame_ready.notify()
            return replaced

    def take(self, timeout: float) -> FramePacket | None:
        """The oldest waiting frame, or None after `timeout` seconds without one."""
        with self._lock:
            if not self._waiting and not self._closed:
                self._frame_ready.wait(timeout)
            if not self._waiting:
                return None
            name = next(iter(self._waiting))
            packet = self._waiting.pop(name)
            self._wake_slot(name)
            return packet

    def behind(self) -> bool:
        """The worker is not keeping up: within the last `BEHIND_S` a stream's next frame found
        its previous one still waiting (a file waited for its slot, a camera's frame was
        replaced), and a frame waits now. Two streams' frames arriving together at half load
        do not count: each finds its own slot empty. A hint, read without the lock."""
        return bool(self._waiting) and time.monotonic() - self._full_at < BEHIND_S

    def discard(self, name: str) -> FramePacket | None:
        """Remove a stream's waiting frame (the stream is stopping)."""
        with self._lock:
            packet = self._waiting.pop(name, None)
            self._wake_slot(name)
            return packet

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._frame_ready.notify_all()
            for slot in self._slot_free.values():
                slot.notify_all()

    def _wake_slot(self, name: str) -> None:
        """Wake the decoder waiting for `name`'s slot, if one waits; the caller holds the lock."""
        slot = self._slot_free.get(name)
        if slot is not None:
            slot.notify()
