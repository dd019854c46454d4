"""Stream sources: one thread per stream that opens, decodes and paces frames.

Runs in a worker process. OpenCV's FFmpeg reader releases the GIL while it decodes, so streams
decode in parallel with inference. Frames are read into a small pool of preallocated buffers that
rotate between decoder, slot and detector: no per-frame allocation. A source that fails to open or
stops delivering is reported offline and reopened with doubling backoff (up to 60 s): a broken
camera never becomes a hot loop, and never takes the worker down.
"""

from __future__ import annotations

import queue
import threading
import time
import zlib
from collections.abc import Callable

import cv2
import numpy as np
import structlog

from edged.config.auto import decoder_threads
from edged.config.model import StreamConfig
from edged.worker.board import FrameBoard, FramePacket
from edged.worker.scheduling import batch_scheduling

log = structlog.get_logger(__name__)

MAX_BACKOFF_S = 60.0

_LIVE_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")

StatusCallback = Callable[[str, str, str], None]  # stream, status, reason


def is_live(source: str) -> bool:
    return source.startswith(_LIVE_PREFIXES) or source.startswith("/dev/video")


def _phase(name: str) -> float:
    """A stable fraction in [0, 1) from a stream's name."""
    return zlib.crc32(name.encode()) / 2**32


def open_capture(source: str, decoder_threads: int = 0) -> cv2.VideoCapture:
    """Open a stream the way every source does (`edged bench` measures decode cost through it)."""
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10_000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10_000]
    if decoder_threads > 0:
        params += [cv2.CAP_PROP_N_THREADS, decoder_threads]
    if source.startswith("/dev/video"):
        return cv2.VideoCapture(source, cv2.CAP_V4L2)
    return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)


class StreamSource:
    """Decodes one stream into the frame board until `stop()`."""

    def __init__(
        self,
        config: StreamConfig,
        board: FrameBoard,
        on_status: StatusCallback,
    ) -> None:
        self.config = config  # replaced whole on UpdateStream; readers take one reference
        self.name = config.name
        self._board = board
        self._on_status = on_status
        self._stop = threading.Event()
        # Buffers come back here after use; the pool grows to the number in flight (one
        # decoding, one waiting, one per inference loop) and then stops allocating.
        self._pool: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
        self._shape: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.decode_errors = 0
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name=f"source:{self.name}", daemon=True)

    # --- called from other threads ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        dropped = self._board.discard(self.name)
        if dropped is not None:
            self.release(dropped.image)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def release(self, image: np.ndarray) -> None:
        """Give a frame buffer back once the detector has letterboxed it."""
        if image.shape == self._shape:
            self._pool.put(image)

    def count_processed(self) -> None:
        with self._lock:
            self.frames_processed += 1

    # --- the source thread ------------------------------------------------------------------

    def _run(self) -> None:
        batch_scheduling()
        delay = self.config.reconnect_delay
        while not self._stop.is_set():
            self._on_status(self.name, "starting", "")
            outcome = self._play()
            if outcome == "ended" or self._stop.is_set():
                if outcome == "ended":
                    self._on_status(self.name, "ended", "end of file")
                return
            if outcome == "played":
                delay = self.config.reconnect_delay
            self.reconnects += 1
            self._on_status(self.name, "offline", f"{outcome}; retrying in {delay:.0f} s")
            log.warning("stream offline", stream=self.name, reason=outcome, retry_s=delay)
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _open(self) -> cv2.VideoCapture:
        return open_capture(self.config.source, decoder_threads(self.config))

    def _play(self) -> str:
        """Decode until the stream fails or ends; return "ended", "played" or a failure reason."""
        live = is_live(self.config.source)
        cap = self._open()
        try:
            if not cap.isOpened():
                return "cannot open source"
            fps = cap.get(cv2.CAP_PROP_FPS)
            fps = fps if 1.0 <= fps <= 240.0 else 25.0
            played = False
            start = time.monotonic()
            index = 0
            # Streams that start together (a restart, or copies of one file) would otherwise all
            # want a detection at the same instants and queue behind each other; a fixed phase
            # per stream name spreads them over the detect interval.
            rate = self.config.detect_fps
            next_detect = _phase(self.name) / rate if rate > 0 else 0.0
            while not self._stop.is_set():
                config = self.config
                stream_time = index / fps
                # Decode every frame (H.264 needs it) but convert and hand over only the ones the
                # detector should see: grab() skips the colour conversion.
                wanted = config.detect_fps <= 0 or stream_time >= next_detect
                image: np.ndarray | None = None
                ok = cap.grab()
                if ok and wanted:
                    ok, image = cap.retrieve(self._buffer())
                if not ok or (wanted and image is None):
                    if live:
                        self.decode_errors += 1
                        return "played" if played else "no frames from source"
                    if not played:
                        return "no frames in file"
                    if not config.loop:
                        return "ended"
                    cap.release()
                    cap = self._open()
                    start = time.monotonic() - stream_time  # keep the clock running across loops
                    continue
                if not played:
                    played = True
                    self._on_status(self.name, "online", "")
                self.frames_in += 1
                index += 1
                if not live and config.realtime:
                    self._stop.wait(max(0.0, start + stream_time - time.monotonic()))
                if image is None:
                    continue
                next_detect = stream_time + 1.0 / config.detect_fps if config.detect_fps > 0 else 0
                self._shape = image.shape
                packet = FramePacket(self, index, time.time(), image)
                wait = not live and not config.realtime
                replaced = self._board.offer(packet, wait=wait)
                if replaced is not None:
                    self.frames_dropped += 1
                    self.release(replaced.image)
            return "played"
        finally:
            cap.release()

    def _buffer(self) -> np.ndarray | None:
        """A free frame buffer; None lets OpenCV allocate (first frames, or a size change)."""
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            return None
