"""Stream sources on real video (PyAV): frames decoded and prepared into reused model inputs,
paced, looped; a broken stream is reported offline with a reason and retried with growing
delays, never in a hot loop."""

from __future__ import annotations

import functools
import http.server
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import av
import msgspec
import numpy as np
import pytest

from edged.backends import make_backend
from edged.backends.base import Backend
from edged.config.model import StreamConfig, WorkerConfig
from edged.protocol import StreamReason
from edged.worker.board import FrameBoard, FramePacket
from edged.worker.sources import StreamSource


class Statuses:
    def __init__(self) -> None:
        self.events: list[tuple[float, str, StreamReason, str]] = []
        self.lock = threading.Lock()

    def __call__(self, stream: str, status: str, reason: StreamReason, detail: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), status, reason, detail))

    def of(self, status: str) -> list[float]:
        with self.lock:
            return [t for t, s, _, _ in self.events if s == status]

    def reasons(self, status: str = "offline") -> list[tuple[StreamReason, str]]:
        with self.lock:
            return [(r, d) for _, s, r, d in self.events if s == status]


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Backend:
    """The CPU backend (its media path decodes and letterboxes; no model needed for that)."""
    return make_backend(WorkerConfig(name="w", model=str(model_path)))


def release(packet: FramePacket) -> None:
    packet.path.release(packet.model_input)


def wait_until(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def stream(source: Path | str, **fields: object) -> StreamConfig:
    return msgspec.convert(
        {"name": "cam", "source": str(source), "worker": "w", **fields}, StreamConfig
    )


def until_offline(
    config: StreamConfig, backend: Backend, timeout: float, times: int = 1
) -> tuple[StreamSource, Statuses]:
    """Run a source on `config` until it has gone offline `times` times, then stop it."""
    statuses = Statuses()
    source = StreamSource(config, FrameBoard(), backend, statuses)
    source.start()
    try:
        wait_until(lambda: len(statuses.of("offline")) >= times, timeout)
    finally:
        source.stop()
        source.join(5)
    return source, statuses


# The street clip has B-frames no other frame references: detecting every frame, none is skipped.
@pytest.mark.parametrize("clip", ["traffic-720p.mp4", "pedestrians-720p.avi"])
def test_file_as_fast_as_it_decodes_loses_no_frame_and_reuses_buffers(
    assets: Path, backend: Backend, clip: str
) -> None:
    board, statuses = FrameBoard(), Statuses()
    video = assets / "media" / clip
    source = StreamSource(stream(video, realtime=False), board, backend, statuses)
    source.start()
    buffers: set[int] = set()
    indices: list[int] = []
    try:
        while len(indices) < 60:
            packet = board.take(5.0)
            assert packet is not None, "no frame from the file"
            model_input = packet.model_input
            assert (model_input.width, model_input.height) == (1280, 720)
            assert model_input.data.shape == (1, 3, 416, 416)
            indices.append(packet.index)
            buffers.add(model_input.data.ctypes.data)
            release(packet)
    finally:
        source.stop()
        source.join(5)
    assert indices == list(range(1, 61))  # waited for the detector: nothing dropped
    assert source.frames_dropped == 0 and source.frames_skipped == 0
    assert len(buffers) <= 3  # a few buffers rotate; no allocation per frame
    assert statuses.of("online")


def _play_at_detect_fps_5(
    video: Path, backend: Backend, seconds: float
) -> tuple[StreamSource, list[int], float]:
    """Play a file at its own rate with detect_fps 5 for `seconds` once it is online; return
    the stopped source, the indices of the frames the detector got, and the seconds played."""
    board, statuses = FrameBoard(), Statuses()
    source = StreamSource(stream(video, detect_fps=5), board, backend, statuses)
    source.start()
    taken: list[int] = []
    try:
        wait_until(lambda: bool(statuses.of("online")), 10)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            packet = board.take(0.5)
            if packet is not None:
                taken.append(packet.index)
                release(packet)
        elapsed = time.monotonic() - started
    finally:
        source.stop()
        source.join(5)
    return source, taken, elapsed


def test_realtime_file_plays_at_its_frame_rate_and_detect_fps_thins_frames(
    assets: Path, backend: Backend
) -> None:
    video = assets / "media" / "traffic-720p.mp4"  # 30 fps
    source, indices, elapsed = _play_at_detect_fps_5(video, backend, 2.0)
    taken = len(indices)
    frames = source.frames_in
    # Paced like a 30 fps camera: never faster (a loaded box may decode slower; then the file
    # falls behind its clock, it does not race to catch up).
    assert 0 < frames / elapsed <= 40, frames / elapsed
    # detect_fps thins by the stream's own clock, however fast this box decoded: one frame in
    # six (30 -> 5 a second) reaches the detector; never more, and few lost on the way.
    assert frames / 6 / 2 <= taken <= frames / 6 + 2, (taken, frames)


def test_frames_no_detection_wants_and_no_frame_needs_are_counted_not_decoded(
    assets: Path, backend: Backend
) -> None:
    """The street clip (50 fps, H.264 with B-frames) at detect_fps 5: its disposable pictures
    between wanted frames are left undecoded (disposable.py), yet the stream plays at its rate,
    counts every frame in and hands the detector its five frames a second."""
    video = assets / "media" / "pedestrians-720p.avi"
    source, taken, elapsed = _play_at_detect_fps_5(video, backend, 3.0)
    frames = source.frames_in
    assert 0 < frames / elapsed <= 60, frames / elapsed  # paced at the file's 50 fps
    assert source.frames_skipped > frames / 3, (source.frames_skipped, frames)
    assert source.decode_errors == 0
    # One frame in ten reaches the detector, about a fifth of a second apart in stream time.
    assert frames / 10 / 2 <= len(taken) <= frames / 10 + 2, (taken, frames)
    gaps = [b - a for a, b in itertools.pairwise(taken)]
    assert gaps and all(8 <= g <= 13 for g in gaps), gaps


def test_file_without_loop_ends_and_with_loop_starts_again(assets: Path, backend: Backend) -> None:
    video = assets / "media" / "traffic-720p.mp4"
    board, statuses = FrameBoard(), Statuses()
    once = StreamSource(stream(video, realtime=False), board, backend, statuses)
    once.start()
    drain = threading.Event()

    def consume() -> None:
        while not drain.is_set():
            packet = board.take(0.1)
            if packet is not None:
                release(packet)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        wait_until(lambda: bool(statuses.of("ended")), 60)
        assert once.frames_in == 368  # every frame of the file, once
        assert statuses.reasons("ended") == [(StreamReason.END_OF_FILE, "end of file")]
        looped_statuses = Statuses()
        looped = StreamSource(
            stream(video, realtime=False, loop=True), board, backend, looped_statuses
        )
        looped.start()
        wait_until(lambda: looped.frames_in > 400, 60)
        looped.stop()
        looped.join(5)
        assert not looped_statuses.of("ended")
    finally:
        drain.set()
        consumer.join()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("garbage", StreamReason.INVALID_DATA), ("missing", StreamReason.NOT_FOUND)],
)
def test_broken_stream_is_reported_and_retried_with_backoff(
    tmp_path: Path, backend: Backend, kind: str, reason: StreamReason
) -> None:
    path = tmp_path / "broken.mp4"
    if kind == "garbage":
        path.write_bytes(b"\x00\x00\x01\xb3 not a video at all " * 200)
    source, statuses = until_offline(stream(path, reconnect_delay=0.2), backend, 15, times=3)
    offline = statuses.of("offline")
    gaps = [b - a for a, b in itertools.pairwise(offline)]
    # 0.2 s, then 0.4 s, ...: each wait at least as long as the one before, never a hot loop
    assert gaps[0] >= 0.18 and gaps[1] >= 0.36, gaps
    first_reason, detail = statuses.reasons()[0]
    assert first_reason is reason, statuses.events
    assert "retrying in" in detail
    assert source.reconnects >= 3


def audio_only(path: Path) -> Path:
    """A Matroska file with one MP2 audio track and no video."""
    with av.open(str(path), "w", format="matroska") as out:
        audio = out.add_stream("mp2", rate=48000)
        silence = av.AudioFrame.from_ndarray(
            np.zeros((1, 1152 * 2), np.int16), format="s16", layout="stereo"
        )
        silence.sample_rate = 48000
        for i in range(20):
            silence.pts = i * 1152
            for packet in audio.encode(silence):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    return path


def short_clip(path: Path, assets: Path) -> Path:
    """The traffic clip's first 30 H.264 packets in Matroska (streamable: no index at the end)."""
    with (
        av.open(str(assets / "media" / "traffic-720p.mp4")) as inp,
        av.open(str(path), "w", format="matroska") as out,
    ):
        video = out.add_stream_from_template(inp.streams.video[0])
        for packet, _ in zip(inp.demux(video=0), range(30), strict=False):
            if packet.size:
                packet.stream = video
                out.mux(packet)
    return path


def unknown_codec(path: Path, assets: Path) -> Path:
    """The traffic clip's H.264 in Matroska, its codec id changed to one no decoder has."""
    short_clip(path, assets)
    data = path.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_EDGED/NOCODEC"))
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("audio only", StreamReason.NO_VIDEO), ("unknown codec", StreamReason.UNSUPPORTED_CODEC)],
)
def test_a_file_without_a_video_the_backend_can_decode_says_why(
    tmp_path: Path, assets: Path, backend: Backend, kind: str, reason: StreamReason
) -> None:
    path = tmp_path / "odd.mkv"
    video = audio_only(path) if kind == "audio only" else unknown_codec(path, assets)
    _, statuses = until_offline(stream(video, reconnect_delay=30), backend, 10)
    (got, detail), *_ = statuses.reasons()
    assert got is reason, detail
    assert not statuses.of("online")


def test_an_unknown_host_is_unreachable_in_words_without_the_password(backend: Backend) -> None:
    # .invalid never resolves (RFC 2606); FFmpeg's error code says only "Input/output error",
    # its log says why, and that is what the reason is made from.
    url = "rtsp://admin:Hunter2@camera.invalid/live"
    _, statuses = until_offline(stream(url, reconnect_delay=30), backend, 15)
    (reason, detail), *_ = statuses.reasons()
    assert reason is StreamReason.UNREACHABLE, detail
    assert "camera.invalid" in detail and "Hunter2" not in detail


class MediaServer:
    """A plain HTTP server over the shared media folder (an HTTP camera or a video URL)."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_sources_play_and_a_missing_one_is_not_found(
    assets: Path, tmp_path: Path, backend: Backend
) -> None:
    short_clip(tmp_path / "clip.mkv", assets)
    server = MediaServer(tmp_path)
    board = FrameBoard()
    playing, missing = Statuses(), Statuses()
    sources = [
        StreamSource(
            stream(server.url("clip.mkv"), name="web", reconnect_delay=0.2),
            board,
            backend,
            playing,
        ),
        StreamSource(
            stream(server.url("missing.mp4"), name="gone", reconnect_delay=30),
            board,
            backend,
            missing,
        ),
    ]
    for source in sources:
        source.start()
    taken = 0
    try:
        # An HTTP source is live: at the end of the file it is a disconnect, and it reconnects.
        deadline = time.monotonic() + 60
        while len(playing.of("online")) < 2:
            assert time.monotonic() < deadline, playing.events
            packet = board.take(0.5)
            if packet is not None:
                taken += 1
                release(packet)
        wait_until(lambda: bool(missing.of("offline")), 10)
    finally:
        for source in sources:
            source.stop()
            source.join(5)
        server.close()
    assert taken > 10
    assert [r for r, _ in playing.reasons()][:1] == [StreamReason.DISCONNECTED]
    assert [r for r, _ in missing.reasons()] == [StreamReason.NOT_FOUND]


def test_a_live_paced_stream_drops_what_the_detector_does_not_take(
    assets: Path, backend: Backend
) -> None:
    """A camera-paced stream never waits for the detector: its waiting frame is replaced by the
    newest and the replaced ones are counted; the one finally taken is recent."""
    board, statuses = FrameBoard(), Statuses()
    video = assets / "media" / "traffic-720p.mp4"  # 30 fps
    source = StreamSource(stream(video), board, backend, statuses)
    source.start()
    try:
        wait_until(lambda: source.frames_in >= 30, 10)  # a second of frames nobody takes
        packet = board.take(1.0)
        assert packet is not None
        release(packet)
        frames_in, dropped = source.frames_in, source.frames_dropped
    finally:
        source.stop()
        source.join(5)
    assert dropped >= frames_in - 3, (frames_in, dropped)  # all but the newest were replaced
    assert packet.index >= frames_in - 2, (packet.index, frames_in)


def test_a_missing_v4l2_device_is_not_found(backend: Backend) -> None:
    """/dev/videoN opens through FFmpeg's v4l2 demuxer (the format exists in this build); a
    device that is not there is `not_found`, retried like any camera."""
    _, statuses = until_offline(stream("/dev/video99", reconnect_delay=30), backend, 10)
    (reason, detail), *_ = statuses.reasons()
    assert reason is StreamReason.NOT_FOUND, detail


class FailingFirstPath:
    """The real CPU backend, except that its first media path fails with a bug whose text
    quotes the source URL (what an unexpected exception in a backend looks like)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.failed = False

    def media_path(self, video: object, config: StreamConfig) -> object:
        if not self.failed:
            self.failed = True
            raise RuntimeError(f"backend bug while opening {config.source}")
        return self.backend.media_path(video, config)  # type: ignore[arg-type]


def test_an_unexpected_error_is_reported_and_retried(
    tmp_path: Path, assets: Path, backend: Backend
) -> None:
    clip = short_clip(tmp_path / "clip.mkv", assets)
    board, statuses = FrameBoard(), Statuses()
    failing: Any = FailingFirstPath(backend)
    source = StreamSource(
        stream(f"file:{clip}", realtime=False, reconnect_delay=0.1), board, failing, statuses
    )
    source.start()
    try:
        packet = board.take(10.0)  # the second attempt plays
        assert packet is not None
        release(packet)
    finally:
        source.stop()
        source.join(5)
    (reason, detail), *_ = statuses.reasons()
    assert reason is StreamReason.ERROR and "backend bug" in detail, detail
    assert statuses.of("online")
