"""Stream sources: one thread per stream that demuxes, paces and hands frames to the detector.

Runs in a worker process. Each stream opens its own PyAV (FFmpeg) container with its own open and
read timeouts; FFmpeg runs with the GIL released and no lock is shared between streams, so a
camera that hangs while opening or reading delays nobody else. The demuxed video packets go to the
backend's media path (edged/backends/base.py), which decodes them and prepares the frames the
detector wants into model inputs. A source that fails is reported offline with a `StreamReason`
and words (URLs redacted), and reopened with doubling backoff (up to 60 s): a broken camera never
becomes a hot loop and never takes the worker down. A live stream that delivers no frame for its
`stall_timeout` is reported `stalled` within it.
"""

from __future__ import annotations

import threading
import time
import traceback
import zlib
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

import av
import structlog

from edged.backends.base import ModelInput, UnsupportedCodec
from edged.backoff import Backoff
from edged.config.model import StreamConfig
from edged.protocol import StreamReason, StreamStatus
from edged.urls import redact_text, redact_url
from edged.worker import failures
from edged.worker.board import FrameBoard, FramePacket
from edged.worker.disposable import DisposableFrames
from edged.worker.failures import SourceFailure
from edged.worker.ffmpeg_log import StreamLog
from edged.worker.scheduling import ThreadRole, batch_scheduling, name_thread

if TYPE_CHECKING:
    from edged.backends.base import Backend, MediaPath

log = structlog.get_logger(__name__)

MAX_BACKOFF_S = 60.0

_LIVE_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")


class StatusCallback(Protocol):
    def __call__(
        self, stream: str, status: StreamStatus, reason: StreamReason, detail: str
    ) -> None: ...


def is_live(source: str) -> bool:
    return source.startswith(_LIVE_PREFIXES) or source.startswith("/dev/video")


def _phase(name: str) -> float:
    """A stable fraction in [0, 1) from a stream's name."""
    return zlib.crc32(name.encode()) / 2**32


def open_container(config: StreamConfig) -> av.container.InputContainer:
    """Open a stream's source the way every source does (`edged bench` measures through it).

    Raises PyAV's FFmpegError (or OSError) as FFmpeg reports it; `failures.opening` says why.
    """
    source = config.source.removeprefix("file:")
    options: dict[str, str] = {}
    fmt: str | None = None
    if source.startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = config.rtsp_transport
    elif source.startswith("/dev/video"):
        fmt = "v4l2"
    # A read may block at most until the stall deadline: past it the stream is offline anyway.
    read_timeout = min(config.read_timeout, config.stall_timeout)
    return av.open(
        source, "r", format=fmt, options=options, timeout=(config.open_timeout, read_timeout)
    )


def frame_rate(stream: av.video.stream.VideoStream) -> float:
    """The stream's nominal frame rate; 25 when the container does not say (or says nonsense)."""
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    return fps if 1.0 <= fps <= 240.0 else 25.0


class Outcome(Enum):
    ENDED = "ended"  # a file reached its end and does not loop


@dataclass
class _Clock:
    """Where playback is; kept across the reopens of a looping file so pacing runs on."""

    fps: float = 25.0
    index: int = 0
    start: float = 0.0
    next_detect: float = 0.0
    played: bool = False


class StreamSource:
    """Decodes one stream into the frame board until `stop()`."""

    def __init__(
        self,
        config: StreamConfig,
        board: FrameBoard,
        backend: Backend,
        on_status: StatusCallback,
    ) -> None:
        self.config = config  # replaced whole on UpdateStream; readers take one reference
        self.name = config.name
        self._board = board
        self._backend = backend
        self._on_status = on_status
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.frames_skipped = 0  # disposable frames left undecoded (disposable.py)
        self.decode_errors = 0
        self.reconnects = 0
        self.disconnects = 0
        # Set by an inference loop when the stream's tracker wants its next frame on the host
        # (a better snapshot is in sight); read and cleared by the source thread.
        self.snapshot_wanted = False
        self._snapshot_failed = False
        self._thread = threading.Thread(target=self._run, name=f"source:{self.name}", daemon=True)

    # --- called from other threads ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        dropped = self._board.discard(self.name)
        if dropped is not None:
            dropped.path.release(dropped.model_input)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def count_processed(self) -> None:
        with self._lock:
            self.frames_processed += 1

    # --- the source thread ------------------------------------------------------------------

    def _run(self) -> None:
        name_thread(ThreadRole.SOURCE, self.name)
        batch_scheduling()
        # No jitter: a stream's phase (below) already spreads streams that start together.
        backoff = Backoff(self.config.reconnect_delay, MAX_BACKOFF_S, jitter=0.0)
        with StreamLog(self.name) as ffmpeg:
            # "starting" before the first attempt only: while a failed stream is retried, its
            # retained status stays offline with the reason, for whoever looks at that moment.
            self._on_status(self.name, StreamStatus.STARTING, StreamReason.NONE, "")
            while not self._stop.is_set():
                try:
                    outcome = self._attempt(ffmpeg)
                except SourceFailure as failure:
                    ffmpeg.flush()
                    if self._stop.is_set():
                        return
                    if failure.played:
                        # It worked for a while: back off from the first delay again.
                        backoff.reset()
                    self.reconnects += 1
                    # reconnect_delay may have changed on reload (UpdateStream): read each time.
                    delay = backoff.delay(first=self.config.reconnect_delay)
                    detail = f"{failure.detail}; retrying in {delay:.0f} s"
                    self._on_status(self.name, StreamStatus.OFFLINE, failure.reason, detail)
                    log.warning(
                        "stream offline",
                        stream=self.name,
                        source=redact_url(self.config.source),
                        reason=failure.reason.value,
                        detail=failure.detail,
                        retry_s=delay,
                    )
                    self._stop.wait(delay)
                    continue
                if outcome is Outcome.ENDED:
                    self._on_status(
                        self.name, StreamStatus.ENDED, StreamReason.END_OF_FILE, "end of file"
                    )
                    return
                # Stopped while playing.
                return

    def _attempt(self, ffmpeg: StreamLog) -> Outcome | None:
        """`_play`, with any unexpected exception turned into a failure with a reason: the
        stream is reported and retried with backoff instead of its thread dying silently."""
        try:
            return self._play(ffmpeg)
        except SourceFailure:
            raise
        except Exception as exc:
            # Exception texts may quote the URL: the traceback is logged redacted.
            trace = redact_text("".join(traceback.format_exception(exc)))
            log.error("stream failed unexpectedly", stream=self.name, traceback=trace)
            words = redact_text(f"{type(exc).__name__}: {exc}")
            raise SourceFailure(StreamReason.ERROR, f"unexpected error ({words})") from exc

    def _play(self, ffmpeg: StreamLog) -> Outcome | None:
        """Play until stopped (None), a file ends (ENDED); a failure raises SourceFailure."""
        clock = _Clock()
        while True:
            config = self.config
            ffmpeg.forget()
            started = time.monotonic()
            try:
                container = open_container(config)
            except (av.error.FFmpegError, OSError) as exc:
                elapsed = time.monotonic() - started
                ffmpeg.flush()
                raise failures.opening(exc, elapsed, config.open_timeout, ffmpeg.last) from exc
            ffmpeg.flush()
            try:
                ended = self._demux(container, clock, ffmpeg)
            except SourceFailure as failure:
                failure.played = clock.played
                raise
            finally:
                container.close()
            if ended is None or not config.loop:
                return ended
            # A looping file: open it again, the clock keeps running.

    def _demux(
        self, container: av.container.InputContainer, clock: _Clock, ffmpeg: StreamLog
    ) -> Outcome | None:
        config = self.config
        live = is_live(config.source)
        if not container.streams.video:
            raise SourceFailure(StreamReason.NO_VIDEO, "the source has no video track")
        video = container.streams.video[0]
        try:
            path = self._backend.media_path(video, config)
        except UnsupportedCodec as exc:
            raise SourceFailure(StreamReason.UNSUPPORTED_CODEC, str(exc)) from exc
        try:
            if clock.index == 0:
                clock.fps = frame_rate(video)
                clock.start = time.monotonic()
                # Streams that start together (a restart, or copies of one file) would otherwise
                # all want a detection at the same instants and queue behind each other; a fixed
                # phase per stream name spreads them over the detect interval.
                rate = config.detect_fps
                clock.next_detect = _phase(self.name) / rate if rate > 0 else 0.0
            else:
                clock.start = time.monotonic() - clock.index / clock.fps
            return self._packets(container, video, path, clock, live, ffmpeg)
        finally:
            path.close()

    def _packets(
        self,
        container: av.container.InputContainer,
        video: av.video.stream.VideoStream,
        path: MediaPath[Any],
        clock: _Clock,
        live: bool,
        ffmpeg: StreamLog,
    ) -> Outcome | None:
        last_frame = time.monotonic()
        packets = container.demux()  # every stream: audio packets also prove the source alive
        codec = video.codec_context
        disposable = DisposableFrames(codec.name, codec.extradata)
        # A disposable picture is displayed up to `has_b_frames` frames from where it is
        # decoded: skip only those that end before the next wanted frame by that much.
        skip_margin = 1 + max(0, codec.has_b_frames)
        while not self._stop.is_set():
            config = self.config
            timeout = min(config.read_timeout, config.stall_timeout)  # what open_container set
            read_started = time.monotonic()
            try:
                packet = next(packets, None)
            except (av.error.FFmpegError, OSError) as exc:
                ffmpeg.flush()
                self._lost(clock)
                elapsed = time.monotonic() - read_started
                raise failures.reading(exc, elapsed, timeout, ffmpeg.last) from exc
            if packet is None:
                break
            waited = time.monotonic() - read_started
            if live and waited >= timeout * failures.TIMEOUT_SLACK:
                # The read timeout ended a read that waited for data, yet FFmpeg's RTSP demuxer
                # may still hand over what it had (a partial packet, which a frame-threaded
                # decoder answers with an older frame): the source has stalled all the same.
                self._lost(clock)
                raise SourceFailure(StreamReason.STALLED, f"no data for {waited:.1f} s")
            if packet.stream.index != video.index:
                frames: list[Any] = []
            elif (
                disposable.applies
                and config.detect_fps > 0
                and (clock.index + skip_margin) / clock.fps < clock.next_detect
                and disposable.disposable(bytes(packet))
            ):
                # No detection wants it and no other frame needs it: counted, not decoded.
                self.frames_in += 1
                clock.index += 1
                self.frames_skipped += 1
                continue
            else:
                try:
                    frames = list(path.decode(packet))
                except (av.error.FFmpegError, ValueError):
                    self.decode_errors += 1
                    frames = []
                ffmpeg.flush()
            for frame in frames:
                last_frame = time.monotonic()
                self._frame(path, frame, clock, live, config)
            if frames:
                ffmpeg.last = ""  # what FFmpeg said before a good frame is not why it fails
            if live and time.monotonic() - last_frame > config.stall_timeout:
                self._lost(clock)
                raise SourceFailure(
                    StreamReason.STALLED,
                    f"no frame for {time.monotonic() - last_frame:.1f} s "
                    f"(stall_timeout {config.stall_timeout:g} s)",
                )
        if self._stop.is_set():
            return None
        if live:
            self._lost(clock)
            raise SourceFailure(StreamReason.DISCONNECTED, "the source ended the stream")
        if not clock.played:
            raise SourceFailure(StreamReason.INVALID_DATA, "no frame could be decoded in the file")
        return Outcome.ENDED

    def _lost(self, clock: _Clock) -> None:
        if clock.played:
            self.disconnects += 1

    def _frame(
        self, path: MediaPath[Any], frame: Any, clock: _Clock, live: bool, config: StreamConfig
    ) -> None:
        stream_time = clock.index / clock.fps
        # Every frame is decoded (H.264 needs it) but only the ones the detector should see are
        # prepared: the rest cost no resize and no colour conversion.
        wanted = config.detect_fps <= 0 or stream_time >= clock.next_detect
        if not clock.played:
            clock.played = True
            self._on_status(self.name, StreamStatus.ONLINE, StreamReason.NONE, "")
        self.frames_in += 1
        clock.index += 1
        if not live and config.realtime:
            self._stop.wait(max(0.0, clock.start + stream_time - time.monotonic()))
        if not wanted or self._stop.is_set():
            return
        clock.next_detect = stream_time + 1.0 / config.detect_fps if config.detect_fps > 0 else 0
        try:
            model_input: ModelInput = path.prepare(frame)
        except Exception:
            # A frame the path cannot prepare (an odd pixel format, a broken frame) is skipped
            # and counted with the decode errors; the stream goes on.
            if self.decode_errors == 0:
                log.exception("frame cannot be prepared", stream=self.name)
            self.decode_errors += 1
            return
        image = None
        if self.snapshot_wanted:
            self.snapshot_wanted = False
            try:
                # The last decoded frame is the one just prepared: its boxes and pixels match.
                image = path.snapshot()
            except Exception:
                # No snapshot; the detections and events go on. Logged once per source.
                if not self._snapshot_failed:
                    log.exception("snapshot failed", stream=self.name)
                self._snapshot_failed = True
        packet = FramePacket(self, path, clock.index, time.time(), model_input, image)
        wait = not live and not config.realtime
        replaced = self._board.offer(packet, wait=wait)
        if replaced is not None:
            self.frames_dropped += 1
            replaced.path.release(replaced.model_input)
