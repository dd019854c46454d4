"""Stream sources on real video: frames decoded into reused buffers, paced, looped; a broken
stream is reported offline and retried with growing delays, never in a hot loop."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import msgspec
import pytest

from edged.config.model import StreamConfig
from edged.worker.board import FrameBoard
from edged.worker.sources import StreamSource


class Statuses:
    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, stream: str, status: str, reason: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), status, reason))

    def of(self, status: str) -> list[float]:
        with self.lock:
            return [t for t, s, _ in self.events if s == status]


def wait_until(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def stream(source: Path | str, **fields: object) -> StreamConfig:
    return msgspec.convert(
        {"name": "cam", "source": str(source), "worker": "w", **fields}, StreamConfig
    )


def test_file_as_fast_as_it_decodes_loses_no_frame_and_reuses_buffers(assets: Path) -> None:
    board, statuses = FrameBoard(), Statuses()
    video = assets / "media" / "traffic-720p.mp4"
    source = StreamSource(stream(video, realtime=False), board, statuses)
    source.start()
    buffers: set[int] = set()
    indices: list[int] = []
    try:
        while len(indices) < 60:
            packet = board.take(5.0)
            assert packet is not None, "no frame from the file"
            assert packet.image.shape == (720, 1280, 3)
            indices.append(packet.index)
            buffers.add(packet.image.ctypes.data)
            source.release(packet.image)
    finally:
        source.stop()
        source.join(5)
    assert indices == list(range(1, 61))  # waited for the detector: nothing dropped
    assert source.frames_dropped == 0
    assert len(buffers) <= 3  # a few buffers rotate; no allocation per frame
    assert statuses.of("online")


def test_realtime_file_plays_at_its_frame_rate_and_detect_fps_thins_frames(assets: Path) -> None:
    board, statuses = FrameBoard(), Statuses()
    video = assets / "media" / "traffic-720p.mp4"  # 30 fps
    source = StreamSource(stream(video, detect_fps=5), board, statuses)
    source.start()
    taken = 0
    try:
        wait_until(lambda: bool(statuses.of("online")), 10)
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            packet = board.take(0.5)
            if packet is not None:
                taken += 1
                source.release(packet.image)
        elapsed = time.monotonic() - started
    finally:
        source.stop()
        source.join(5)
    decoded_rate = source.frames_in / elapsed
    assert 20 <= decoded_rate <= 40, decoded_rate  # paced like a 30 fps camera
    assert 6 <= taken <= 14, taken  # about 5 a second reach the detector


def test_file_without_loop_ends_and_with_loop_starts_again(assets: Path, tmp_path: Path) -> None:
    video = assets / "media" / "traffic-720p.mp4"
    board, statuses = FrameBoard(), Statuses()
    once = StreamSource(stream(video, realtime=False), board, statuses)
    once.start()
    drain = threading.Event()

    def consume() -> None:
        while not drain.is_set():
            packet = board.take(0.1)
            if packet is not None:
                packet.source.release(packet.image)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        wait_until(lambda: bool(statuses.of("ended")), 60)
        assert once.frames_in == 368  # every frame of the file, once
        looped_statuses = Statuses()
        looped = StreamSource(stream(video, realtime=False, loop=True), board, looped_statuses)
        looped.start()
        wait_until(lambda: looped.frames_in > 400, 60)
        looped.stop()
        looped.join(5)
        assert not looped_statuses.of("ended")
    finally:
        drain.set()
        consumer.join()


@pytest.mark.parametrize("kind", ["garbage", "missing"])
def test_broken_stream_is_reported_and_retried_with_backoff(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "broken.mp4"
    if kind == "garbage":
        path.write_bytes(b"\x00\x00\x01\xb3 not a video at all " * 200)
    board, statuses = FrameBoard(), Statuses()
    source = StreamSource(stream(path, reconnect_delay=0.2), board, statuses)
    source.start()
    try:
        wait_until(lambda: len(statuses.of("offline")) >= 3, 15)
    finally:
        source.stop()
        source.join(5)
    offline = statuses.of("offline")
    gaps = [b - a for a, b in itertools.pairwise(offline)]
    # 0.2 s, then 0.4 s, ...: each wait at least as long as the one before, never a hot loop
    assert gaps[0] >= 0.18 and gaps[1] >= 0.36, gaps
    reasons = [r for _, s, r in statuses.events if s == "offline"]
    assert "retrying in" in reasons[0]
    assert source.reconnects >= 3
