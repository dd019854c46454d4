"""acl.media on the emulator: VDEC callbacks and in-flight buffers, VPC rules per SoC."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.acl_emulator import PRELUDE, TEARDOWN, only_report, rules, run_snippet

# A VDEC channel fed with the first packets of a real H.264 file. SET_CONTEXT: whether the
# callback thread calls set_context; SHARED_INPUT: one input buffer for every packet (acllite's
# VideoCapture) instead of one per frame in flight.
VDEC = """
import av, av.bitstream, threading, time
SET_CONTEXT = {set_context}
SHARED_INPUT = {shared_input}
container = av.open({video!r})
vstream = container.streams.video[0]
bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", vstream)
packets = [bytes(q) for p in container.demux(vstream) for q in bsf.filter(p) if q.size][:{count}]
running = True
callbacks = []
def loop(args):
    if SET_CONTEXT:
        ok(acl.rt.set_context(ctx))
    while running:
        acl.rt.process_report(100)
def callback(sd, pd, user_data):
    callbacks.append((user_data, acl.media.dvpp_get_pic_desc_ret_code(pd),
                      acl.media.dvpp_get_pic_desc_width_stride(pd)))
    if not SHARED_INPUT:
        ok(acl.media.dvpp_free(acl.media.dvpp_get_stream_desc_data(sd)))
    ok(acl.media.dvpp_destroy_stream_desc(sd))
    ok(acl.media.dvpp_free(acl.media.dvpp_get_pic_desc_data(pd)))
    ok(acl.media.dvpp_destroy_pic_desc(pd))
tid, r = acl.util.start_thread(loop, []); ok(r)
cd = acl.media.vdec_create_channel_desc()
ok(acl.media.vdec_set_channel_desc_channel_id(cd, 0))
ok(acl.media.vdec_set_channel_desc_thread_id(cd, tid))
ok(acl.media.vdec_set_channel_desc_callback(cd, callback))
ok(acl.media.vdec_set_channel_desc_entype(cd, 2))
ok(acl.media.vdec_create_channel(cd))
fc = acl.media.vdec_create_frame_config()
shared, r = acl.media.dvpp_malloc(max(len(p) for p in packets)); ok(r)
copies = []
for i, packet in enumerate(packets):
    buf = shared
    if not SHARED_INPUT:
        buf, r = acl.media.dvpp_malloc(len(packet)); ok(r)
    copies.append(acl.rt.memcpy(buf, len(packet), acl.util.bytes_to_ptr(packet), len(packet), 1))
    sd = acl.media.dvpp_create_stream_desc()
    ok(acl.media.dvpp_set_stream_desc_data(sd, buf))
    ok(acl.media.dvpp_set_stream_desc_size(sd, len(packet)))
    out, r = acl.media.dvpp_malloc({out_size}); ok(r)
    pd = acl.media.dvpp_create_pic_desc()
    ok(acl.media.dvpp_set_pic_desc_data(pd, out))
    ok(acl.media.dvpp_set_pic_desc_size(pd, {out_size}))
    ok(acl.media.dvpp_set_pic_desc_format(pd, 1))
    ok(acl.media.vdec_send_frame(cd, sd, pd, fc, [0, i]))
destroyed = acl.media.vdec_destroy_channel(cd)
ok(acl.media.vdec_destroy_channel_desc(cd))
ok(acl.media.vdec_destroy_frame_config(fc))
running = False
ok(acl.util.stop_thread(tid))
ok(acl.media.dvpp_free(shared))
"""


def vdec(assets: Path, *, set_context: bool = True, shared_input: bool = False,
         count: int = 12, out_size: int = 1280 * 720 * 3 // 2) -> str:
    return VDEC.format(set_context=set_context, shared_input=shared_input, count=count,
                       video=str(assets / "media" / "traffic-720p.mp4"), out_size=out_size)


def test_every_frame_sent_gets_one_callback_before_destroy_returns(
    tmp_path: Path, assets: Path
) -> None:
    done = run_snippet((
        PRELUDE,
        vdec(assets),
        """
        ok(destroyed)
        assert sorted(u[1] for u, _, _ in callbacks) == list(range(12)), callbacks
        assert all(code == 0 and ws == 1280 for _, code, ws in callbacks), callbacks
        """,
        TEARDOWN,
    ), tmp_path)
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path)
    assert report["violations"] == [] and report["leaks"] == []


def test_a_callback_thread_without_set_context_is_caught(tmp_path: Path, assets: Path) -> None:
    # Callbacks never run: process_report answers 107002, and the channel cannot drain.
    done = run_snippet((
        PRELUDE,
        vdec(assets, set_context=False, count=3),
        """
        assert destroyed == 507000, destroyed
        assert callbacks == []
        """,
    ), tmp_path, drain_timeout="1")
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path)
    assert rules(report) >= {"25"}
    assert any(v["code"] == 107002 for v in report["violations"]), report["violations"]


@pytest.mark.parametrize(("mode", "copy_code"), [("strict", 100000), ("realistic", 0)])
def test_an_in_flight_vdec_input_buffer_reused_is_caught(
    tmp_path: Path, assets: Path, mode: str, copy_code: int
) -> None:
    # acllite's VideoCapture copies every packet into one buffer while earlier frames decode.
    done = run_snippet((
        PRELUDE,
        """
        import acl._vdec as v
        # Hold the decoder back so frames are surely in flight when the next packet is copied.
        original = v.Channel._decode
        def slow(self, frame):
            time.sleep(0.05); original(self, frame)
        v.Channel._decode = slow
        """,
        vdec(assets, shared_input=True, count=4),
        f"""
        assert {copy_code} in copies[1:], copies
        """,
        TEARDOWN,
    ), tmp_path, mode=mode)
    assert done.returncode == 0, done.stderr
    assert "24" in rules(only_report(tmp_path))


def test_a_vdec_output_without_stride_alignment_is_reported(tmp_path: Path, assets: Path) -> None:
    # 9a.14: acllite sizes the output w*h*3//2; fine for 1280x720 on 310, too small for a width
    # that is not a multiple of 16. Here the buffer is one row short.
    done = run_snippet((
        PRELUDE,
        vdec(assets, count=2, out_size=1280 * 718 * 3 // 2),
        """
        ok(destroyed)
        assert [code for _, code, _ in callbacks] == [0x10003, 0x10003], callbacks
        """,
        TEARDOWN,
    ), tmp_path, mode="realistic")
    assert done.returncode == 0, done.stderr
    assert rules(only_report(tmp_path)) == {"9a.14"}


# A 64x64 NV12 picture (Y 200) cropped and pasted into a 64x32 output prefilled with Y 7.
VPC = """
chan = acl.media.dvpp_create_channel_desc(); ok(acl.media.dvpp_create_channel(chan))
def picture(w, h, fill):
    size = w * h * 3 // 2
    buf, r = acl.media.dvpp_malloc(size); ok(r)
    ok(acl.rt.memset(buf, size, fill, size))
    pd = acl.media.dvpp_create_pic_desc()
    for setter, value in (("data", buf), ("size", size), ("format", 1), ("width", w),
                          ("height", h), ("width_stride", w), ("height_stride", h)):
        ok(getattr(acl.media, "dvpp_set_pic_desc_" + setter)(pd, value))
    return buf, pd, size
src, src_pd, _ = picture(64, 64, 200)
dst, dst_pd, dst_size = picture(64, 32, 7)
def crop_and_paste(crop, paste):
    c = acl.media.dvpp_create_roi_config(*crop)
    p = acl.media.dvpp_create_roi_config(*paste)
    code = acl.media.dvpp_vpc_crop_and_paste_async(chan, src_pd, dst_pd, c, p, stream)
    ok(acl.rt.synchronize_stream(stream))
    ok(acl.media.dvpp_destroy_roi_config(c)); ok(acl.media.dvpp_destroy_roi_config(p))
    return code
"""

VPC_END = """
for buf, pd in ((src, src_pd), (dst, dst_pd)):
    ok(acl.media.dvpp_destroy_pic_desc(pd)); ok(acl.media.dvpp_free(buf))
ok(acl.media.dvpp_destroy_channel(chan)); ok(acl.media.dvpp_destroy_channel_desc(chan))
"""


@pytest.mark.parametrize(("soc", "odd_left_code"), [("Ascend310", 100000), ("Ascend310P3", 0)])
def test_crop_and_paste_writes_only_the_paste_area_and_checks_rois(
    tmp_path: Path, soc: str, odd_left_code: int
) -> None:
    done = run_snippet((
        PRELUDE,
        VPC,
        f"""
        ok(crop_and_paste((0, 63, 0, 63), (16, 47, 0, 31)))
        back = bytes(dst_size)
        ok(acl.rt.memcpy(acl.util.bytes_to_ptr(back), dst_size, dst, dst_size, 2))
        y = np.frombuffer(back, np.uint8)[: 64 * 32].reshape(32, 64)
        assert (y[:, 16:48] == 200).all() and (y[:, :16] == 7).all() and (y[:, 48:] == 7).all()
        assert crop_and_paste((1, 63, 0, 63), (16, 47, 0, 31)) == {odd_left_code}  # crop left
        assert crop_and_paste((0, 63, 0, 63), (8, 39, 0, 31)) == 100000   # paste left % 16
        assert crop_and_paste((0, 63, 0, 63), (0, 70, 0, 31)) == 100000   # outside the output
        """,
        VPC_END,
        TEARDOWN,
    ), tmp_path, soc=soc)
    assert done.returncode == 0, done.stderr
    assert rules(only_report(tmp_path)) == {"21"}


def test_a_picture_desc_with_a_bad_stride_is_refused(tmp_path: Path) -> None:
    done = run_snippet((
        PRELUDE,
        VPC,
        """
        ok(acl.media.dvpp_set_pic_desc_width_stride(src_pd, 72))       # not a multiple of 16
        assert crop_and_paste((0, 63, 0, 63), (0, 63, 0, 31)) == 100000
        assert "width_stride 72" in acl.get_recent_err_msg()
        """,
        VPC_END,
        TEARDOWN,
    ), tmp_path)
    assert done.returncode == 0, done.stderr
