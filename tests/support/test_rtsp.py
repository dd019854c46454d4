"""The test cameras themselves: the real RTSP server serves decodable, camera-paced video with
Basic auth on one mount and survives a restart; the misbehaving servers misbehave as promised.
Checked with PyAV (FFmpeg), the client edged uses, so a failing edged test is edged's fault."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from tests.support.rtsp import RTSP_PASSWORD, RTSP_USER, Mount, RtspServer
from tests.support.rtsp_faults import Proxy, SilentServer
from tests.support.rtsp_media import H264_720, H264_1080, H265_720, H265_1080, Variant


def read_frames(
    url: str, count: int, transport: str = "tcp", timeout: float = 10.0
) -> list[av.VideoFrame]:
    with av.open(url, options={"rtsp_transport": transport}, timeout=timeout) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) == count:
                break
        return frames


@pytest.mark.parametrize(
    "variant", [H264_720, H265_720, H264_1080, H265_1080], ids=lambda v: v.name
)
def test_serves_h264_and_h265_at_720p_and_1080p_paced_like_a_camera(
    assets: Path, rtsp_cache: Path, tmp_path: Path, variant: Variant
) -> None:
    mounts = [Mount("/cam", variant)]
    with RtspServer(mounts, assets / "media", rtsp_cache, tmp_path / "server.log") as server:
        container = av.open(server.url("/cam"), options={"rtsp_transport": "tcp"}, timeout=10)
        with container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == {"h264": "h264", "h265": "hevc"}[variant.codec]
            frames, arrivals = [], []
            for frame in container.decode(video=0):
                frames.append(frame)
                arrivals.append(time.monotonic())
                if len(frames) == 75:
                    break
    assert {(f.width, f.height) for f in frames} == {(variant.width, variant.height)}
    # FFmpeg's RTSP reader gives the first frame no timestamp (no RTCP sender report yet).
    times = [f.time for f in frames[1:]]
    assert None not in times
    steps = [b - a for a, b in itertools.pairwise(times)]  # type: ignore[operator]
    # 30 fps: no frame missing, none twice (a parameter set sent apart from its keyframe decodes
    # into a duplicate)
    assert steps == pytest.approx([1 / 30] * len(steps), abs=0.002), times
    # A camera delivers in real time, not as fast as a file decodes (the server sends what it
    # prerolled and FFmpeg buffers while it probes the stream, so look at the last second).
    assert arrivals[-1] - arrivals[-31] >= 1.0 - 0.25, arrivals


def test_the_looped_video_runs_past_the_end_of_the_clip(assets: Path, rtsp_cache: Path) -> None:
    """The served file is the 12 s clip repeated: frames keep their rate across the seam."""
    from tests.support.rtsp_media import prepare

    with av.open(str(prepare(H264_720, assets / "media", rtsp_cache))) as container:
        stream = container.streams.video[0]
        assert container.duration is not None and container.duration / 1e6 >= 240
        pts = [p.pts for p, _ in zip(container.demux(stream), range(1200), strict=False) if p.pts]
    steps = {b - a for a, b in zip(sorted(pts), sorted(pts)[1:], strict=False)}
    assert max(steps) <= 2 * min(steps), steps  # no gap and no overlap where the clip repeats


def test_basic_auth_on_one_mount_and_404_for_an_unknown_one(rtsp_server: RtspServer) -> None:
    with pytest.raises(av.error.HTTPUnauthorizedError):
        read_frames(rtsp_server.url("/secure"), 1)
    with pytest.raises(av.error.HTTPUnauthorizedError):
        read_frames(rtsp_server.url("/secure", user=RTSP_USER, password="wrong"), 1)
    with pytest.raises(av.error.HTTPNotFoundError):
        read_frames(rtsp_server.url("/missing"), 1)
    url = rtsp_server.url("/secure", user=RTSP_USER, password=RTSP_PASSWORD)
    assert len(read_frames(url, 5)) == 5
    assert len(read_frames(rtsp_server.url("/h264"), 5)) == 5  # the others need no password


def test_udp_transport(rtsp_server: RtspServer) -> None:
    frames = read_frames(rtsp_server.url("/h264"), 10, transport="udp")
    assert [(f.width, f.height) for f in frames] == [(1280, 720)] * 10


def test_restart_comes_back_on_the_same_port(rtsp_server: RtspServer) -> None:
    url = rtsp_server.url("/h264")
    assert read_frames(url, 3)
    rtsp_server.stop()
    with pytest.raises(ConnectionRefusedError):
        read_frames(url, 1)
    rtsp_server.start()
    assert rtsp_server.url("/h264") == url
    assert read_frames(url, 3)


def test_a_missing_server_fails_loudly_with_the_install_command(
    assets: Path, rtsp_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.support.rtsp.SYSTEM_PYTHON", str(tmp_path / "no-python"))
    server = RtspServer([Mount("/cam")], assets / "media", rtsp_cache, tmp_path / "log")
    with pytest.raises(AssertionError, match=r"apt-get install .*gir1\.2-gst-rtsp-server-1\.0"):
        server.start()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


def test_silent_server_accepts_and_never_answers(silent: SilentServer) -> None:
    started = time.monotonic()
    # FFmpeg reports an interrupted open as "invalid data": only the time tells it timed out.
    with pytest.raises(av.error.FFmpegError):
        read_frames(silent.url(), 1, timeout=1.0)
    assert time.monotonic() - started >= 1.0  # it timed out; nothing was refused
    assert len(silent.accepted) == 1


def test_proxy_freeze_keeps_the_socket_and_stops_the_video(rtsp_server: RtspServer) -> None:
    with Proxy(rtsp_server.port) as proxy:
        url = proxy.url("/h264")
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(10, 2)) as container:
            frames = container.decode(video=0)
            for _ in range(10):
                next(frames)
            proxy.freeze()
            frozen_at = time.monotonic()
            # what was in flight, then nothing: FFmpeg gives up at its read timeout, with an
            # error or an end, depending on where the data stopped
            with pytest.raises((av.error.FFmpegError, StopIteration)):
                for _ in range(1000):
                    next(frames)
            # the read timeout (2 s) ended it, not a closed socket
            assert time.monotonic() - frozen_at >= 1.5
        assert proxy.connections == 1


def test_proxy_cut_and_close_after_bytes_end_the_stream_mid_way(rtsp_server: RtspServer) -> None:
    with Proxy(rtsp_server.port, close_after_bytes=300_000) as proxy:
        frames = read_frames(proxy.url("/h264"), 1000, timeout=5)
        assert 0 < len(frames) < 1000  # some video, then the connection closed
    with Proxy(rtsp_server.port) as proxy:
        url = proxy.url("/h264")
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(10, 5)) as container:
            frames_iter = container.decode(video=0)
            next(frames_iter)
            proxy.cut()
            cut_at = time.monotonic()
            with pytest.raises((av.error.FFmpegError, StopIteration)):
                for _ in range(1000):
                    next(frames_iter)
            assert time.monotonic() - cut_at < 4  # ended by the close, not a timeout
