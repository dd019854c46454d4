"""`acl.media`: DVPP V1 memory, descriptors, VPC, JPEG and VDEC (pyacl.md sections 4, 5)."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from acl import _core, _memory, _vdec
from acl._core import INVALID_PARAM, AclFail, Resource, api, require_context, violation
from acl._reports import REPORTS

NV12, NV21 = 1, 2
PIC_FIELDS = ("data", "size", "format", "width", "height", "width_stride", "height_stride")
STREAM_FIELDS = ("data", "size", "format", "timestamp", "eos", "ret_code")

# ------------------------------------------------------------------ memory


@api("pair")
def dvpp_malloc(size: int) -> tuple[int, int]:
    ctx = require_context()
    if not isinstance(size, int) or size <= 0:
        violation("11", INVALID_PARAM, f"dvpp_malloc({size!r})")
    return _memory.MEMORY.allocate(size, _memory.DVPP, ctx.device), 0


@api("ret")
def dvpp_free(dev_ptr: int) -> int:
    _memory.MEMORY.free(dev_ptr, _memory.DVPP)
    return 0


# ------------------------------------------------------------------ descriptors


def _destroy_desc(handle: int, kind: str) -> int:
    resource = _core.lookup(handle, kind)
    if resource.data.get("inflight"):
        violation("24", INVALID_PARAM, f"{kind} destroyed while its VDEC frame is in flight",
                  tolerated=True)
    _core.destroy(resource)
    return 0


@api("value")
def dvpp_create_pic_desc() -> int:
    return _core.register("pic_desc", ret_code=0).handle


@api("ret")
def dvpp_destroy_pic_desc(pic_desc: int) -> int:
    return _destroy_desc(pic_desc, "pic_desc")


@api("value")
def dvpp_create_stream_desc() -> int:
    return _core.register("stream_desc").handle


@api("ret")
def dvpp_destroy_stream_desc(stream_desc: int) -> int:
    return _destroy_desc(stream_desc, "stream_desc")


def _setter(kind: str, key: str) -> Callable[[int, Any], int]:
    def set_field(desc: int, value: Any) -> int:
        resource = _core.lookup(desc, kind)
        if not isinstance(value, int):
            violation("21", INVALID_PARAM, f"{key} = {value!r} (an int expected)")
        if resource.data.get("inflight"):
            violation("24", INVALID_PARAM, f"{kind} changed while its VDEC frame is in flight",
                      tolerated=True)
        resource.data[key] = value
        return 0

    set_field.__name__ = f"dvpp_set_{kind}_{key}"
    return api("ret")(set_field)


def _getter(kind: str, key: str) -> Callable[[int], int]:
    def get_field(desc: int) -> int:
        return int(_core.lookup(desc, kind).data.get(key, 0))

    get_field.__name__ = f"dvpp_get_{kind}_{key}"
    return api("value")(get_field)


for _key in (*PIC_FIELDS, "ret_code"):
    globals()[f"dvpp_set_pic_desc_{_key}"] = _setter("pic_desc", _key)
    globals()[f"dvpp_get_pic_desc_{_key}"] = _getter("pic_desc", _key)
for _key in STREAM_FIELDS:
    globals()[f"dvpp_set_stream_desc_{_key}"] = _setter("stream_desc", _key)
    globals()[f"dvpp_get_stream_desc_{_key}"] = _getter("stream_desc", _key)


@api("value")
def dvpp_create_resize_config() -> int:
    return _core.register("resize_config", interpolation=0).handle


@api("ret")
def dvpp_destroy_resize_config(config: int) -> int:
    _core.destroy(_core.lookup(config, "resize_config"))
    return 0


@api("ret")
def dvpp_set_resize_config_interpolation(config: int, interpolation: int) -> int:
    _core.lookup(config, "resize_config").data["interpolation"] = interpolation
    return 0


@api("value")
def dvpp_create_roi_config(left: int, right: int, top: int, bottom: int) -> int:
    if right < left or bottom < top or min(left, top) < 0:
        violation("21", INVALID_PARAM, f"ROI left {left} right {right} top {top} "
                  f"bottom {bottom}: right/bottom are inclusive and >= left/top")
    return _core.register("roi_config", left=left, right=right, top=top, bottom=bottom).handle


@api("ret")
def dvpp_destroy_roi_config(config: int) -> int:
    _core.destroy(_core.lookup(config, "roi_config"))
    return 0


@api("value")
def dvpp_create_channel_desc() -> int:
    return _core.register("dvpp_channel_desc", created=0).handle


@api("ret")
def dvpp_create_channel(channel_desc: int) -> int:
    require_context()
    resource = _core.lookup(channel_desc, "dvpp_channel_desc")
    resource.data["created"] = 1
    return 0


@api("ret")
def dvpp_destroy_channel(channel_desc: int) -> int:
    resource = _core.lookup(channel_desc, "dvpp_channel_desc")
    if not resource.data["created"]:
        violation("26", INVALID_PARAM, "dvpp_destroy_channel of a channel never created")
    resource.data["created"] = 0
    return 0


@api("ret")
def dvpp_destroy_channel_desc(channel_desc: int) -> int:
    resource = _core.lookup(channel_desc, "dvpp_channel_desc")
    if resource.data["created"]:
        violation("26", INVALID_PARAM, "channel desc destroyed before dvpp_destroy_channel")
    _core.destroy(resource)
    return 0


# ------------------------------------------------------------------ VPC


class Picture:
    """A validated picture descriptor and its NV12/NV21 planes in emulated memory (rule 21)."""

    def __init__(self, desc: Resource, role: str, *, jpegd: bool = False) -> None:
        fields = desc.data
        missing = [k for k in PIC_FIELDS if not fields.get(k)]
        if missing:
            violation("21", INVALID_PARAM, f"{role} picture desc lacks {', '.join(missing)}")
        self.fmt = fields["format"]
        self.width, self.height = fields["width"], fields["height"]
        self.ws, self.hs = fields["width_stride"], fields["height_stride"]
        if self.fmt not in (NV12, NV21):
            violation("21", INVALID_PARAM, f"{role} format {self.fmt} (the emulator does "
                      "YUV420SP NV12 = 1 and NV21 = 2)")
        if self.width % 2 or self.height % 2:
            violation("21", INVALID_PARAM, f"{role} {self.width}x{self.height}: YUV420SP needs "
                      "even width and height")
        w_align, h_align = (16, 2)
        if jpegd:
            w_align = 128 if _core.settings().soc == "Ascend310" else 64
            h_align = 16
        if self.ws % w_align or self.ws < self.width or self.ws < 32 or self.ws > 4096:
            violation("21", INVALID_PARAM, f"{role} width_stride {self.ws} for width "
                      f"{self.width}: a multiple of {w_align}, >= width, 32..4096")
        if self.hs % h_align or self.hs < self.height or self.hs < 6:
            violation("21", INVALID_PARAM, f"{role} height_stride {self.hs} for height "
                      f"{self.height}: a multiple of {h_align}, >= height, >= 6")
        self.bytes = self.ws * self.hs * 3 // 2
        if fields["size"] < self.bytes:
            violation("21", INVALID_PARAM, f"{role} size {fields['size']} < width_stride x "
                      f"height_stride x 3/2 = {self.bytes}")
        span = _memory.resolve(fields["data"], f"{role} data")
        if span.block is None or span.block.kind != _memory.DVPP:
            violation("21", INVALID_PARAM, f"{role} data must come from dvpp_malloc",
                      tolerated=span.on_device)
        if span.limit < self.bytes:
            violation("21", INVALID_PARAM, f"{role} buffer has {span.limit} bytes, needs "
                      f"{self.bytes}")
        self.span = span

    def planes(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        raw = self.span.view(self.bytes)
        y = raw[: self.ws * self.hs].reshape(self.hs, self.ws)
        uv = raw[self.ws * self.hs :].reshape(self.hs // 2, self.ws // 2, 2)
        return y, uv


def _roi(handle: int, role: str, picture: Picture, paste: bool) -> tuple[int, int, int, int]:
    roi = _core.lookup(handle, "roi_config").data
    left, right, top, bottom = roi["left"], roi["right"], roi["top"], roi["bottom"]
    if right >= picture.width or bottom >= picture.height:
        violation("21", INVALID_PARAM, f"{role} ROI ({left}..{right}, {top}..{bottom}) outside "
                  f"the {picture.width}x{picture.height} picture")
    if _core.settings().soc == "Ascend310" and (left % 2 or top % 2 or not right % 2
                                                or not bottom % 2):
        violation("21", INVALID_PARAM, f"{role} ROI ({left}, {right}, {top}, {bottom}) on "
                  "Ascend310: left and top even, right and bottom odd")
    if paste and left % 16:
        violation("21", INVALID_PARAM, f"paste ROI left {left} must be a multiple of 16")
    return left, right, top, bottom


def _vpc(chan: int, src: int, dst: int, crop: int | None, paste: int | None,
         stream: int) -> int:
    from acl import rt

    require_context()
    channel = _core.lookup(chan, "dvpp_channel_desc")
    if not channel.data["created"]:
        violation("21", INVALID_PARAM, "VPC on a channel desc not passed to dvpp_create_channel")
    inp = Picture(_core.lookup(src, "pic_desc"), "input")
    out = Picture(_core.lookup(dst, "pic_desc"), "output")
    c = _roi(crop, "crop", inp, False) if crop else (0, inp.width - 1, 0, inp.height - 1)
    p = _roi(paste, "paste", out, True) if paste else (0, out.width - 1, 0, out.height - 1)
    cw, ch = c[1] - c[0] + 1, c[3] - c[2] + 1
    pw, ph = p[1] - p[0] + 1, p[3] - p[2] + 1
    for ratio in (pw / cw, ph / ch):
        if not 1 / 32 <= ratio <= 16:
            violation("21", INVALID_PARAM, f"resize ratio {ratio:.3f} outside [1/32, 16]")
    rt.enqueue(stream, lambda: _crop_and_paste(inp, out, c, p))
    return 0


def _crop_and_paste(inp: Picture, out: Picture, c: tuple[int, int, int, int],
                    p: tuple[int, int, int, int]) -> None:
    """Write only the paste rectangle (9a.12): the rest of the output keeps its bytes."""
    import cv2

    y_in, uv_in = inp.planes()
    y_out, uv_out = out.planes()
    (cl, cr, ct, cb), (pl, pr, pt, pb) = c, p
    pw, ph = (pr - pl + 1) // 2 * 2, (pb - pt + 1) // 2 * 2
    y = cv2.resize(y_in[ct : cb + 1, cl : cr + 1], (pw, ph), interpolation=cv2.INTER_LINEAR)
    y_out[pt : pt + ph, pl : pl + pw] = y
    uv = cv2.resize(np.ascontiguousarray(uv_in[ct // 2 : (cb + 1) // 2, cl // 2 : (cr + 1) // 2]),
                    (pw // 2, ph // 2), interpolation=cv2.INTER_LINEAR)
    if inp.fmt != out.fmt:
        uv = uv[..., ::-1]
    uv_out[pt // 2 : (pt + ph) // 2, pl // 2 : (pl + pw) // 2] = uv


@api("ret")
def dvpp_vpc_resize_async(channel_desc: int, input_desc: int, output_desc: int,
                          resize_config: int, stream: int) -> int:
    _core.lookup(resize_config, "resize_config")
    return _vpc(channel_desc, input_desc, output_desc, None, None, stream)


@api("ret")
def dvpp_vpc_crop_async(channel_desc: int, input_desc: int, output_desc: int, crop_area: int,
                        stream: int) -> int:
    return _vpc(channel_desc, input_desc, output_desc, crop_area, None, stream)


@api("ret")
def dvpp_vpc_crop_and_paste_async(channel_desc: int, input_desc: int, output_desc: int,
                                  crop_area: int, paste_area: int, stream: int) -> int:
    return _vpc(channel_desc, input_desc, output_desc, crop_area, paste_area, stream)


# ------------------------------------------------------------------ JPEG


def _host_bytes(ptr: int, size: int) -> bytes:
    span = _memory.resolve(ptr, "JPEG data")
    if size > span.limit:
        violation("13", INVALID_PARAM, f"JPEG of {size} bytes where {span.limit} remain")
    return bytes(span.view(size))


def _image(data: bytes) -> np.ndarray[Any, Any]:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        violation("21", INVALID_PARAM, "not a JPEG the decoder can read")
    return image  # type: ignore[no-any-return]


@api("tuple3")
def dvpp_jpeg_get_image_info(data: int, size: int) -> tuple[int, int, int, int]:
    image = _image(_host_bytes(data, size))
    return image.shape[1], image.shape[0], 3, 0


@api("pair")
def dvpp_jpeg_predict_dec_size(data: int, size: int, output_format: int) -> tuple[int, int]:
    image = _image(_host_bytes(data, size))
    w_align = 128 if _core.settings().soc == "Ascend310" else 64
    ws = (image.shape[1] + w_align - 1) // w_align * w_align
    hs = (image.shape[0] + 15) // 16 * 16
    return ws * hs * 3 // 2, 0


@api("ret")
def dvpp_jpeg_decode_async(channel_desc: int, data: int, size: int, output_desc: int,
                           stream: int) -> int:
    from acl import rt

    require_context()
    _core.lookup(channel_desc, "dvpp_channel_desc")
    span = _memory.resolve(data, "JPEG input")
    if span.block is None or span.block.kind != _memory.DVPP:
        violation("21", INVALID_PARAM, "JPEG input must be in dvpp_malloc memory")
    desc = _core.lookup(output_desc, "pic_desc")
    payload = bytes(span.view(size))

    def work() -> None:
        import cv2

        image = _image(payload)
        h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        desc.data.setdefault("width", w)
        desc.data.setdefault("height", h)
        out = Picture(desc, "JPEGD output", jpegd=True)
        i420 = cv2.cvtColor(np.ascontiguousarray(image[:h, :w]), cv2.COLOR_BGR2YUV_I420)
        y, uv = out.planes()
        y[:h, :w] = i420[:h]
        u = i420[h : h + h // 4].reshape(h // 2, w // 2)
        v = i420[h + h // 4 :].reshape(h // 2, w // 2)
        uv[: h // 2, : w // 2] = np.stack([u, v] if out.fmt == NV12 else [v, u], axis=-1)

    rt.enqueue(stream, work)
    return 0


@api("value")
def dvpp_create_jpege_config() -> int:
    return _core.register("jpege_config", level=100).handle


@api("ret")
def dvpp_set_jpege_config_level(config: int, level: int) -> int:
    _core.lookup(config, "jpege_config").data["level"] = level
    return 0


@api("ret")
def dvpp_destroy_jpege_config(config: int) -> int:
    _core.destroy(_core.lookup(config, "jpege_config"))
    return 0


@api("pair")
def dvpp_jpeg_predict_enc_size(input_desc: int, config: int) -> tuple[int, int]:
    picture = Picture(_core.lookup(input_desc, "pic_desc"), "JPEGE input")
    _core.lookup(config, "jpege_config")
    return picture.bytes + 4096, 0


@api("ret")
def dvpp_jpeg_encode_async(channel_desc: int, input_desc: int, data: int, size: int,
                           config: int, stream: int) -> int:
    from acl import rt

    require_context()
    _core.lookup(channel_desc, "dvpp_channel_desc")
    picture = Picture(_core.lookup(input_desc, "pic_desc"), "JPEGE input")
    level = _core.lookup(config, "jpege_config").data["level"]
    out = _memory.resolve(data, "JPEGE output")
    size_span = _memory.resolve(size, "JPEGE size")

    def work() -> None:
        import cv2

        y, uv = picture.planes()
        w, h = picture.width, picture.height
        nv = np.concatenate([y[:h, :w], uv[: h // 2, : w // 2].reshape(h // 2, w)])
        code = cv2.COLOR_YUV2BGR_NV12 if picture.fmt == NV12 else cv2.COLOR_YUV2BGR_NV21
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(nv, code),
                                [cv2.IMWRITE_JPEG_QUALITY, int(level)])
        limit = int(np.frombuffer(size_span.view(4).tobytes(), np.uint32)[0])
        if not ok or jpeg.size > min(limit, out.limit):
            violation("21", INVALID_PARAM, "JPEGE output buffer too small", tolerated=True)
            return
        out.view(jpeg.size)[:] = jpeg
        ctypes.memmove(size_span.address(), np.array([jpeg.size], np.uint32).ctypes.data, 4)

    rt.enqueue(stream, work)
    return 0


# ------------------------------------------------------------------ VDEC

_CHANNEL_IDS: set[int] = set()
_CHANNELS: dict[int, _vdec.Channel] = {}


def _vdec_desc(handle: int) -> Resource:
    return _core.lookup(handle, "vdec_channel_desc")


@api("value")
def vdec_create_channel_desc() -> int:
    return _core.register("vdec_channel_desc", out_pic_format=NV12, out_mode=0).handle


def _vdec_setter(key: str) -> Callable[[int, Any], int]:
    def set_field(desc: int, value: Any) -> int:
        resource = _vdec_desc(desc)
        if resource.handle in _CHANNELS:
            violation("23", INVALID_PARAM, f"{key} changed after vdec_create_channel")
        if key == "ref_frame_num" and _core.settings().soc == "Ascend310":
            violation("23", INVALID_PARAM, "ref_frame_num is not supported on Ascend310")
        resource.data[key] = value
        return 0

    set_field.__name__ = f"vdec_set_channel_desc_{key}"
    return api("ret")(set_field)


def _vdec_getter(key: str) -> Callable[[int], Any]:
    def get_field(desc: int) -> Any:
        return _vdec_desc(desc).data.get(key, 0)

    get_field.__name__ = f"vdec_get_channel_desc_{key}"
    return api("value")(get_field)


for _key in ("channel_id", "thread_id", "callback", "entype", "out_pic_format", "out_mode",
             "ref_frame_num", "bit_depth"):
    globals()[f"vdec_set_channel_desc_{_key}"] = _vdec_setter(_key)
    globals()[f"vdec_get_channel_desc_{_key}"] = _vdec_getter(_key)


@api("ret")
def vdec_create_channel(channel_desc: int) -> int:
    from acl import util

    require_context()
    resource = _vdec_desc(channel_desc)
    data = resource.data
    ids = range(32) if _core.settings().soc == "Ascend310" else range(256)
    channel_id = data.get("channel_id")
    if channel_id not in ids:
        violation("23", INVALID_PARAM, f"VDEC channel id {channel_id!r} outside {ids.start}.."
                  f"{ids.stop - 1} on {_core.settings().soc}")
    if channel_id in _CHANNEL_IDS:
        violation("23", INVALID_PARAM, f"VDEC channel id {channel_id} already in use")
    tid = data.get("thread_id")
    if tid not in util._THREADS and tid not in {t.ident for t in threading.enumerate()}:
        violation("23", INVALID_PARAM, "set the callback thread id (acl.util.start_thread) "
                  "before vdec_create_channel")
    if not callable(data.get("callback")):
        violation("23", INVALID_PARAM, "set the callback before vdec_create_channel")
    if data.get("entype") not in _vdec.CODECS:
        violation("23", INVALID_PARAM, f"entype {data.get('entype')!r} (0 H.265, 1-3 H.264)")
    if data.get("out_pic_format", NV12) not in (NV12, NV21):
        violation("23", INVALID_PARAM, "VDEC output must be NV12 (1) or NV21 (2)")
    if resource.handle in _CHANNELS:
        violation("23", INVALID_PARAM, "vdec_create_channel twice on one desc")
    _CHANNEL_IDS.add(channel_id)
    _CHANNELS[resource.handle] = _vdec.Channel(resource)
    REPORTS.subscribe(tid)
    data["created"] = 1
    return 0


def _channel(channel_desc: int) -> _vdec.Channel:
    resource = _vdec_desc(channel_desc)
    channel = _CHANNELS.get(resource.handle)
    if channel is None:
        violation("23", INVALID_PARAM, "vdec_send_frame before vdec_create_channel or after "
                  "vdec_destroy_channel")
        raise AclFail(INVALID_PARAM)
    return channel


@api("ret")
def vdec_destroy_channel(channel_desc: int) -> int:
    require_context()
    channel = _channel(channel_desc)
    drained = channel.drain(_core.settings().drain_timeout)
    channel.close()
    del _CHANNELS[channel.desc.handle]
    _CHANNEL_IDS.discard(channel.desc.data.get("channel_id"))
    channel.desc.data["created"] = 0
    REPORTS.unsubscribe(channel.thread_id)
    if not drained:
        violation("25", _core.RT_INTERNAL_ERROR, "deadlock: the callback thread is not "
                  "processing reports (process_report with a current context), so "
                  "vdec_destroy_channel cannot drain")
    return 0


@api("ret")
def vdec_destroy_channel_desc(channel_desc: int) -> int:
    resource = _vdec_desc(channel_desc)
    if resource.handle in _CHANNELS:
        violation("26", INVALID_PARAM, "VDEC channel desc destroyed before vdec_destroy_channel")
    _core.destroy(resource)
    return 0


@api("value")
def vdec_create_frame_config() -> int:
    return _core.register("vdec_frame_config").handle


@api("ret")
def vdec_destroy_frame_config(frame_config: int) -> int:
    _core.destroy(_core.lookup(frame_config, "vdec_frame_config"))
    return 0


@api("ret")
def vdec_send_frame(channel_desc: int, stream_desc: int, pic_desc: int, frame_config: Any,
                    user_data: Any) -> int:
    require_context()
    channel = _channel(channel_desc)
    sd = _core.lookup(stream_desc, "stream_desc")
    if sd.data.get("eos"):
        # EOS blocks until every frame sent has been decoded and its callback returned.
        if not channel.drain(_core.settings().drain_timeout):
            violation("25", _core.RT_INTERNAL_ERROR, "deadlock: EOS cannot drain; the callback "
                      "thread is not processing reports")
        return 0
    return _send(channel, sd, pic_desc, user_data, skipped=False)


@api("ret")
def vdec_send_skipped_frame(channel_desc: int, stream_desc: int, frame_config: Any,
                            user_data: Any) -> int:
    require_context()
    channel = _channel(channel_desc)
    sd = _core.lookup(stream_desc, "stream_desc")
    return _send(channel, sd, 0, user_data, skipped=True)


def _send(channel: _vdec.Channel, sd: Resource, pic_desc: int, user_data: Any,
          skipped: bool) -> int:
    size = sd.data.get("size", 0)
    if not sd.data.get("data") or size <= 0:
        violation("23", INVALID_PARAM, "empty stream desc in a non-EOS frame")
    packet = _memory.resolve(sd.data["data"], "VDEC input")
    if not packet.on_device:
        violation("23", INVALID_PARAM, "VDEC input must be device memory (dvpp_malloc)")
    if size > packet.limit:
        violation("23", INVALID_PARAM, f"VDEC input size {size} overruns its buffer")
    if not _vdec.annexb(packet.view(4)):
        violation("23", INVALID_PARAM, "VDEC input is not Annex-B (no 00 00 01 start code): "
                  "convert AVCC with the h264_mp4toannexb / hevc_mp4toannexb filter")
    locked = [packet.block] if packet.block else []
    if skipped:
        pd = _core.register("pic_desc", ret_code=0)
        pd.destroyed = True  # the callback sees 0 for it
    else:
        pd = _core.lookup(pic_desc, "pic_desc")
        out = _memory.resolve(pd.data.get("data", 0), "VDEC output")
        if out.block is None or out.block.kind != _memory.DVPP:
            violation("23", INVALID_PARAM, "VDEC output must come from dvpp_malloc")
        if not pd.data.get("size"):
            violation("23", INVALID_PARAM, "VDEC output desc has no size")
        if out.block is not None:
            locked.append(out.block)
    channel.send(_vdec.Frame(sd, pd, user_data, packet, size, locked, skipped))
    return 0


def live_channels() -> int:
    return len(_CHANNELS)

