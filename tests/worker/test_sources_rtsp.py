"""Stream sources against real cameras: the test RTSP server (gst-rtsp-server), a silent server,
a proxy that freezes or cuts the stream; and the codecs a camera sends, at 720p and 1080p.

Every stream runs its real source thread with the CPU backend's media path. Times are compared
with the same stream alone, measured in the same test, never with a fixed figure.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from edged.backends import make_backend
from edged.backends.base import Backend
from edged.config.model import StreamConfig, WorkerConfig
from edged.protocol import StreamReason
from edged.worker.board import FrameBoard
from edged.worker.detector import Detector
from edged.worker.sources import StreamSource
from tests.support.rtsp import RTSP_PASSWORD, RTSP_USER, RtspServer
from tests.support.rtsp_faults import Proxy, SilentServer
from tests.support.rtsp_media import H264_720, H264_1080, H265_720, H265_1080, Variant, prepare


class Events:
    """Every status a source reported, with its monotonic time."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str, str, StreamReason, str]] = []
        self.lock = threading.Lock()

    def __call__(self, stream: str, status: str, reason: StreamReason, detail: str) -> None:
        with self.lock:
            self.items.append((time.monotonic(), stream, status, reason, detail))

    def of(self, stream: str, status: str) -> list[tuple[float, StreamReason, str]]:
        with self.lock:
            return [(t, r, d) for t, s, st, r, d in self.items if s == stream and st == status]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def config(name: str, source: str, **fields: object) -> StreamConfig:
    return msgspec.convert({"name": name, "source": source, "worker": "w", **fields}, StreamConfig)


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Backend:
    backend = make_backend(WorkerConfig(name="w", model=str(model_path)))
    backend.load()
    return backend


class Running:
    """Sources on one board (as in a worker), with a consumer that gives frames back."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.board = FrameBoard()
        self.events = Events()
        self.sources: list[StreamSource] = []
        self.first_frame: dict[str, float] = {}
        self._stop = threading.Event()
        self._consumer = threading.Thread(target=self._consume, daemon=True)
        self._consumer.start()

    def add(self, stream: StreamConfig) -> StreamSource:
        source = StreamSource(stream, self.board, self.backend, self.events)
        self.sources.append(source)
        source.start()
        return source

    def _consume(self) -> None:
        while not self._stop.is_set():
            packet = self.board.take(0.1)
            if packet is not None:
                self.first_frame.setdefault(packet.source.name, time.monotonic())
                packet.path.release(packet.model_input)

    def close(self) -> None:
        for source in self.sources:
            source.stop()
        self._stop.set()
        self.board.close()
        for source in self.sources:
            source.join(5)
        self._consumer.join(5)


@pytest.fixture
def running(backend: Backend) -> Iterator[Running]:
    r = Running(backend)
    yield r
    r.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_401_404_refused_and_silent_are_four_reasons(
    running: Running, rtsp_server: RtspServer
) -> None:
    with SilentServer() as silent:
        streams = {
            "nopass": rtsp_server.url("/secure"),
            "wrongpass": rtsp_server.url("/secure", user="viewer", password="not-it"),
            "missing": rtsp_server.url("/missing"),
            "refused": f"rtsp://127.0.0.1:{closed_port()}/stream",
            "silent": silent.url(),
        }
        for name, url in streams.items():
            running.add(config(name, url, open_timeout=2.0, reconnect_delay=30))
        wait_for(
            lambda: all(running.events.of(n, "offline") for n in streams), 15, "all offline"
        )
    reasons = {n: running.events.of(n, "offline")[0][1] for n in streams}
    assert reasons == {
        "nopass": StreamReason.UNAUTHORIZED,
        "wrongpass": StreamReason.UNAUTHORIZED,
        "missing": StreamReason.NOT_FOUND,
        "refused": StreamReason.CONNECTION_REFUSED,
        "silent": StreamReason.NO_ANSWER,
    }
    detail = running.events.of("wrongpass", "offline")[0][2]
    assert "not-it" not in detail and "retrying in 30 s" in detail


def test_the_right_password_plays_and_udp_plays(running: Running, rtsp_server: RtspServer) -> None:
    secure = rtsp_server.url("/secure", user=RTSP_USER, password=RTSP_PASSWORD)
    running.add(config("secure", secure))
    running.add(config("udp", rtsp_server.url("/h264"), rtsp_transport="udp"))
    wait_for(lambda: {"secure", "udp"} <= running.first_frame.keys(), 20, "frames from both")
    assert not running.events.of("secure", "offline") and not running.events.of("udp", "offline")


def _time_to_first_frame(running: Running, name: str, url: str) -> float:
    started = time.monotonic()
    running.add(config(name, url))
    wait_for(lambda: name in running.first_frame, 30, f"a frame from {name}")
    return running.first_frame[name] - started


def _time_to_reconnect(running: Running, name: str, proxy: Proxy) -> float:
    """Cut the camera's connection; seconds until its next frame arrives."""
    before = len(running.events.of(name, "online"))
    cut = time.monotonic()
    proxy.cut()
    wait_for(lambda: len(running.events.of(name, "online")) > before, 30, f"{name} back online")
    return running.events.of(name, "online")[-1][0] - cut


def test_a_healthy_camera_is_not_delayed_by_two_dead_neighbours(
    backend: Backend, rtsp_server: RtspServer
) -> None:
    alone, crowded = Running(backend), Running(backend)
    try:
        with Proxy(rtsp_server.port) as proxy_a, Proxy(rtsp_server.port) as proxy_b:
            first_alone = _time_to_first_frame(alone, "cam", proxy_a.url("/h264"))
            reconnect_alone = _time_to_reconnect(alone, "cam", proxy_a)
            alone.close()
            with SilentServer() as dead1, SilentServer() as dead2:
                # The dead cameras start first and hang in their opens the whole time.
                for name, dead in (("dead1", dead1), ("dead2", dead2)):
                    crowded.add(config(name, dead.url(), open_timeout=10.0))
                wait_for(lambda: len(dead1.accepted) + len(dead2.accepted) >= 2, 5, "the dials")
                first_crowded = _time_to_first_frame(crowded, "cam", proxy_b.url("/h264"))
                reconnect_crowded = _time_to_reconnect(crowded, "cam", proxy_b)
                assert not crowded.events.of("dead1", "online")
    finally:
        alone.close()
        crowded.close()
    assert first_crowded <= first_alone + 1.0, (first_alone, first_crowded)
    assert reconnect_crowded <= reconnect_alone + 1.0, (reconnect_alone, reconnect_crowded)


def test_a_frozen_camera_is_offline_within_its_stall_timeout(
    running: Running, rtsp_server: RtspServer
) -> None:
    stall = 2.0
    with Proxy(rtsp_server.port) as proxy:
        source = running.add(config("cam", proxy.url("/h264"), stall_timeout=stall))
        wait_for(lambda: bool(running.events.of("cam", "online")), 20, "online")
        # a little playing (half a second of 25 fps video), so the decoder is past its start
        wait_for(lambda: source.frames_in >= 12, 20, "playing")
        frozen = time.monotonic()
        proxy.freeze()
        wait_for(lambda: bool(running.events.of("cam", "offline")), stall + 5, "offline")
        went_offline, reason, detail = running.events.of("cam", "offline")[0]
        # Frames already buffered before the freeze may still arrive; the deadline runs from the
        # last frame, so allow the stall plus a second of slack.
        assert went_offline - frozen <= stall + 1.0, (went_offline - frozen, detail)
        assert reason is StreamReason.STALLED, detail
        assert source.disconnects == 1
        proxy.thaw()


def test_a_cut_connection_is_a_disconnect_and_comes_back(
    running: Running, rtsp_server: RtspServer
) -> None:
    with Proxy(rtsp_server.port) as proxy:
        source = running.add(config("cam", proxy.url("/h264"), reconnect_delay=0.5))
        wait_for(lambda: bool(running.events.of("cam", "online")), 20, "online")
        proxy.cut()
        wait_for(lambda: len(running.events.of("cam", "online")) >= 2, 20, "online again")
    _, reason, detail = running.events.of("cam", "offline")[0]
    assert reason in (StreamReason.DISCONNECTED, StreamReason.STALLED), detail
    assert source.disconnects >= 1 and source.reconnects >= 1
    assert source.decode_errors == 0  # a disconnect is not a decode error


@pytest.mark.parametrize(
    "variant", [H264_720, H265_720, H264_1080, H265_1080], ids=lambda v: v.name
)
def test_h264_and_h265_at_720p_and_1080p_decode_into_detections(
    backend: Backend, assets: Path, rtsp_cache: Path, model_path: Path, variant: Variant
) -> None:
    """The traffic clip re-encoded: each frame the detector gets shows the cars in it."""
    video = prepare(variant, assets / "media", rtsp_cache)
    board, events = FrameBoard(), Events()
    source = StreamSource(config("cam", str(video), realtime=False), board, backend, events)
    detector = Detector(WorkerConfig(name="w", model=str(model_path)))
    source.start()
    labels: list[set[str]] = []
    try:
        while len(labels) < 5:
            packet = board.take(10.0)
            assert packet is not None, "no frame"
            model_input = packet.model_input
            assert (model_input.width, model_input.height) == (variant.width, variant.height)
            (output,) = backend.infer([model_input])
            found = detector.postprocess(
                output, model_input.scale, model_input.width, model_input.height, 0.4
            )
            labels.append({label for label, *_ in found})
            packet.path.release(model_input)
    finally:
        source.stop()
        source.join(5)
    assert all("car" in found for found in labels), labels
