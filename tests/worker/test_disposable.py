"""Disposable H.264 pictures, told from the packets alone: leaving them undecoded changes no
other frame, on the example clips' real streams (avcC in AVI and MP4, and Annex-B)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import pytest

from edged.worker.disposable import DisposableFrames


def _packets(video: Path) -> tuple[DisposableFrames, list[av.Packet]]:
    container = av.open(str(video))
    stream = container.streams.video[0]
    codec = stream.codec_context
    packets = [p for p in container.demux(stream) if p.size > 0]
    return DisposableFrames(codec.name, codec.extradata), packets


def _decode(video: Path, keep: set[int] | None) -> dict[int, str]:
    """Frames by pts -> a digest of their pixels; only the packets numbered in `keep` (all
    when None) are given to a fresh decoder."""
    container = av.open(str(video))
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    out: dict[int, str] = {}
    number = 0
    for packet in container.demux(stream):
        if packet.size > 0:
            number += 1
            if keep is not None and number not in keep:
                continue
        for frame in stream.codec_context.decode(packet):
            assert frame.pts is not None
            out[frame.pts] = hashlib.sha1(frame.to_ndarray().tobytes()).hexdigest()
    container.close()
    return out


def test_skipping_the_street_clips_disposable_pictures_changes_no_other_frame(
    assets: Path,
) -> None:
    video = assets / "media" / "pedestrians-720p.avi"  # H.264 High with B-frames
    frames, packets = _packets(video)
    assert frames.applies
    disposable = {n for n, p in enumerate(packets, 1) if frames.disposable(bytes(p))}
    # Most of its B-frames are disposable (FFmpeg's own skip_frame = NONREF keeps 85 of 341).
    assert 0.6 * len(packets) < len(disposable) < 0.8 * len(packets), len(disposable)
    full = _decode(video, None)
    kept = _decode(video, set(range(1, len(packets) + 1)) - disposable)
    assert len(kept) == len(packets) - len(disposable)
    # Every frame still decoded is the very frame a full decode gives.
    assert all(full[pts] == digest for pts, digest in kept.items())


def test_a_camera_like_stream_of_i_and_p_pictures_has_none(assets: Path) -> None:
    frames, packets = _packets(assets / "media" / "traffic-720p.mp4")
    assert frames.applies and not any(frames.disposable(bytes(p)) for p in packets)


def test_annex_b_packets_are_read_as_well(assets: Path) -> None:
    """RTSP and MPEG-TS carry start codes instead of lengths: the same pictures are found."""
    frames, packets = _packets(assets / "media" / "pedestrians-720p.avi")
    expected = [frames.disposable(bytes(p)) for p in packets]
    bsf = av.BitStreamFilterContext("h264_mp4toannexb", packets[0].stream)
    annex_b = [bytes(q) for p in packets for q in bsf.filter(p)]
    assert all(b.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")) for b in annex_b)
    plain = DisposableFrames("h264", None)
    assert [plain.disposable(b) for b in annex_b] == expected


@pytest.mark.parametrize("codec", ["hevc", "mpeg4", "mjpeg"])
def test_other_codecs_are_never_skipped(codec: str) -> None:
    frames = DisposableFrames(codec, None)
    # An H.264 non-reference slice (nal_ref_idc 0, type 1) after a start code.
    assert not frames.applies and not frames.disposable(b"\x00\x00\x01\x01\x88\x84")
    assert DisposableFrames("h264", None).disposable(b"\x00\x00\x01\x01\x88\x84")


def test_a_packet_without_a_slice_or_in_another_framing_is_kept() -> None:
    frames = DisposableFrames("h264", None)
    assert not frames.disposable(b"")
    # Length-prefixed where start codes were expected (an SEI, then a reference slice of 257
    # bytes whose length reads like a start code before a non-reference header): the packet
    # does not start with a start code, so it is not searched for one.
    sei = b"\x00\x00\x00\x06\x06\x05\x01\x02\x03\x80"
    assert not frames.disposable(sei + b"\x00\x00\x01\x01" + b"\x41" + bytes(256))
    avcc = DisposableFrames("h264", bytes([1, 0x64, 0, 0x1F, 0xFF]))  # 4-byte lengths
    assert avcc.disposable(b"\x00\x00\x00\x02\x01\x88")
    # A length running past the packet: not what the record says, so not guessed at.
    assert not avcc.disposable(b"\x00\x00\x00\x09\x01\x88")
    assert not frames.disposable(b"\x00\x00\x01\x09\x10")  # an access unit delimiter alone
    assert not frames.disposable(b"\x00\x00\x01\x65\x88")  # an IDR slice
