"""Which compressed H.264 pictures no other picture needs: the frames a source may leave undecoded.

Runs in a worker's source threads, once per video packet of a stream that does not detect every
frame (`detect_fps` above 0), while its next wanted frame is still ahead. A picture whose slices
all have `nal_ref_idc = 0` is never used to predict another (H.264 7.4.1: one slice of a picture
with 0 means all of them), so leaving it undecoded changes no other frame: it is what FFmpeg's
own `skip_frame = NONREF` drops, decided here before the packet reaches any decoder, so the CPU
path and a hardware decoder both save it and the source still counts the frame. Encoders put
them in B-frames: the example street clip (H.264 High) has 256 of 341, and decodes in 0.68 ms a
packet instead of 1.6 when they are skipped; cameras that send only I and P pictures have none,
and nothing changes for them. Other codecs: never disposable (HEVC's non-reference pictures may
still serve higher temporal layers). A packet this cannot parse is kept: decoding it is always
safe, so every doubt decodes.
"""

from __future__ import annotations

ANNEX_B_START = b"\x00\x00\x01"
# NAL unit types of coded slices (1: non-IDR, 2-4: data partitions, 5: IDR).
_VCL_TYPES = range(1, 6)


class DisposableFrames:
    """Tells the disposable pictures of one opened H.264 stream from the rest.

    `extradata` is the stream's codec extradata: an avcC record (MP4, MKV: NAL units prefixed
    by their length, whose size the record gives) or empty or Annex-B (AVI, RTSP, MPEG-TS:
    NAL units after start codes)."""

    def __init__(self, codec_name: str, extradata: bytes | None) -> None:
        self.applies = codec_name == "h264"
        self._length_size = 0  # 0: Annex-B start codes
        if extradata and extradata[0] == 1 and len(extradata) >= 5:
            self._length_size = (extradata[4] & 3) + 1

    def disposable(self, data: bytes) -> bool:
        """True when the packet's picture is not a reference for any other."""
        if not self.applies:
            return False
        header = self._first_slice_header(data)
        return header is not None and header & 0x60 == 0  # nal_ref_idc, 2 bits

    def _first_slice_header(self, data: bytes) -> int | None:
        """The header byte of the packet's first coded-slice NAL unit, or None."""
        size = len(data)
        if self._length_size:
            width = self._length_size
            at = 0
            while at + width < size:
                end = at + width + int.from_bytes(data[at : at + width], "big")
                if end > size:
                    return None  # the lengths do not add up: not what the avcC record says
                header = data[at + width]
                if header & 0x1F in _VCL_TYPES:
                    return header
                at = end
            return None
        if not data.startswith((ANNEX_B_START, b"\x00" + ANNEX_B_START)):
            return None  # not Annex-B after all: a length-prefixed packet is not guessed at
        at = 0
        while True:
            found = data.find(ANNEX_B_START, at)
            if found < 0 or found + 3 >= size:
                return None
            header = data[found + 3]
            if header & 0x1F in _VCL_TYPES:
                return header
            at = found + 3
