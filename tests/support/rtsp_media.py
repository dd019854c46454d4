"""Videos for the test RTSP server, derived at test time from the shared footage with PyAV.

Runs in the test process. A camera does not stop after the 12 s of a shared clip, so every
served file is the clip repeated (packets copied with shifted timestamps: no re-encoding) for a
few minutes. H.265 and 1080p are encoded from the shared H.264 720p clip (libx264/libx265, the
encoders PyAV's wheels carry), with a keyframe every second like a camera's GOP.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from pathlib import Path

import av

CLIP = "traffic-720p.mp4"  # H.264 Main 1280x720 30 fps, 368 frames of cars and trucks
FPS = 30
ENCODED_FRAMES = 150  # 5 s are enough to loop; encoding all 368 costs CPU every session
ENCODERS = {"h264": "libx264", "h265": "libx265"}


@dataclass(frozen=True)
class Variant:
    codec: str  # "h264" | "h265" (what the RTSP server payloads)
    height: int  # 720 | 1080

    @property
    def width(self) -> int:
        return self.height * 16 // 9

    @property
    def name(self) -> str:
        return f"{self.codec}-{self.height}p"


H264_720 = Variant("h264", 720)
H265_720 = Variant("h265", 720)
H264_1080 = Variant("h264", 1080)
H265_1080 = Variant("h265", 1080)


def prepare(variant: Variant, media: Path, workdir: Path, minutes: float = 5.0) -> Path:
    """The looped Matroska file for `variant` in `workdir` (made once, reused afterwards)."""
    looped = workdir / f"{variant.name}.mkv"
    if looped.is_file():
        return looped
    workdir.mkdir(parents=True, exist_ok=True)
    partial = workdir / f"{variant.name}.partial.mkv"
    with av.open(str(media / CLIP)) as inp, av.open(str(partial), "w", format="matroska") as out:
        if variant == H264_720:
            stream = out.add_stream_from_template(inp.streams.video[0])
            packets = [p for p in inp.demux(video=0) if p.size > 0]
        else:
            stream, packets = _encode(inp, out, variant)
        _write_looped(out, stream, packets, minutes * 60.0)
    partial.rename(looped)
    return looped


def _encode(
    inp: av.container.InputContainer, out: av.container.OutputContainer, variant: Variant
) -> tuple[av.VideoStream, list[av.Packet]]:
    stream = out.add_stream(ENCODERS[variant.codec], rate=FPS)
    stream.width, stream.height, stream.pix_fmt = variant.width, variant.height, "yuv420p"
    stream.codec_context.gop_size = FPS
    # ultrafast x264 at 1080p writes 200 MB for 5 minutes; veryfast at CRF 28 a tenth of it
    stream.options = {"preset": "veryfast" if variant.codec == "h264" else "ultrafast", "crf": "28"}
    if variant.codec == "h265":
        stream.options["x265-params"] = "log-level=error"
    packets: list[av.Packet] = []
    for index, frame in enumerate(inp.decode(video=0)):
        if index == ENCODED_FRAMES:
            break
        scaled = frame.reformat(variant.width, variant.height, "yuv420p")
        scaled.pts, scaled.time_base = index, fractions.Fraction(1, FPS)
        packets += stream.encode(scaled)
    packets += stream.encode(None)
    return stream, packets


def _write_looped(
    out: av.container.OutputContainer,
    stream: av.VideoStream,
    packets: list[av.Packet],
    seconds: float,
) -> None:
    """Write the clip's packets back to back, timestamps shifted, until `seconds` are covered."""
    time_base = packets[0].time_base
    pts = [p.pts for p in packets if p.pts is not None]
    period = max(pts) - min(pts) + round(1 / (FPS * time_base))
    repeats = max(1, int(seconds / float(period * time_base)) + 1)
    for repeat in range(repeats):
        shift = repeat * period
        for packet in packets:
            assert packet.pts is not None and packet.dts is not None, "a packet without timestamps"
            copy = av.Packet(bytes(packet))
            copy.pts, copy.dts, copy.time_base = packet.pts + shift, packet.dts + shift, time_base
            copy.is_keyframe = packet.is_keyframe
            copy.stream = stream
            out.mux(copy)
