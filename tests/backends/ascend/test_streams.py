"""Per-stream device resources on the emulator: the pad is written once per buffer, not per
frame; VDEC channel ids come back when a stream closes (a 310 has 32)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.acl_emulator import YOLOX_AIPP, only_report, run_snippet, write_om

OPEN_STREAM = """
import av
from edged.backends.ascend import AscendBackend
from edged.config.model import StreamConfig, WorkerConfig
w = WorkerConfig(name="npu", model={om!r}, backend="ascend")
b = AscendBackend(w); b.load(); b.warm_up()
video = {video!r}

def play(frames):
    done = 0
    with av.open(video) as container:
        stream = container.streams.video[0]
        path = b.media_path(stream, StreamConfig(name="s", source=video, worker="npu"))
        for packet in container.demux(stream):
            for frame in path.decode(packet):
                if done < frames:
                    model_input = path.prepare(frame)
                    b.infer([model_input])
                    path.release(model_input)
                    done += 1
            if done >= frames:
                break
        path.close()
    return done
"""


def on_a_stream(
    tmp_path: Path,
    assets: Path,
    model_path: Path,
    code: str,
    *,
    timeout: float = 120,
    **settings: str,
) -> subprocess.CompletedProcess[str]:
    """Run `code` after OPEN_STREAM (a loaded backend `b` on the traffic video, and `play`) in a
    fresh process on the emulator, its reports in tmp_path / "r"."""
    om = write_om(tmp_path / "yolox.om", model_path, aipp=YOLOX_AIPP)
    video = str(assets / "media" / "traffic-720p.mp4")
    return run_snippet(
        (OPEN_STREAM.format(om=str(om), video=video), code),
        tmp_path / "r",
        timeout=timeout,
        **settings,
    )


def test_the_letterbox_pad_is_written_once_per_buffer_not_per_frame(
    tmp_path: Path, assets: Path, model_path: Path
) -> None:
    done = on_a_stream(tmp_path, assets, model_path, "assert play(30) == 30\nb.close()")
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path / "r")
    calls = report["calls_by_name"]
    # Model input buffers: each has its dataset, made once (one more dataset is the outputs').
    inputs = calls["acl.mdl.create_dataset"] - 1
    assert calls["acl.media.dvpp_vpc_crop_and_paste_async"] == 30
    # Y and UV of each model input once, and the warm-up's blank input: not twice a frame.
    assert calls["acl.rt.memset"] <= 2 * inputs + 1 <= 7, calls
    # Buffers and descriptors are made once and reused (the VDEC pool grows to the decoder's
    # lag), never one per frame.
    assert calls["acl.media.dvpp_malloc"] < 30 and calls["acl.media.dvpp_create_pic_desc"] < 30
    assert report["violations"] == [] and report["leaks"] == []


def test_forty_streams_one_after_another_on_a_310_reuse_its_32_vdec_channels(
    tmp_path: Path, assets: Path, model_path: Path
) -> None:
    # Huawei's acllite hands out ids 0, 1, 2, ... and never takes one back: its 33rd capture in
    # a process fails on a 310. A camera that reconnects forty times must not.
    done = on_a_stream(
        tmp_path, assets, model_path,
        "assert [play(1) for _ in range(40)] == [1] * 40\nb.close()",
        soc="Ascend310", timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path / "r")
    assert report["calls_by_name"]["acl.media.vdec_create_channel"] == 40
    assert report["violations"] == [] and report["leaks"] == []


def test_a_snapshot_after_prepare_shows_the_frame_just_prepared(
    tmp_path: Path, assets: Path, model_path: Path
) -> None:
    # VDEC calls back in bursts: one decode() can return several frames. The worker pairs a
    # snapshot taken right after prepare() with that frame's boxes, so it must be that frame.
    done = on_a_stream(tmp_path, assets, model_path, """
        import acl, cv2, numpy as np
        def picture(frame):  # the frame's NV12 read on the board (ACL_DEVICE), to BGR
            raw = np.frombuffer(acl.util.ptr_to_bytes(frame.buffer.address, frame.size), np.uint8)
            planes = raw.reshape(-1, frame.width_stride)[:, : frame.width]
            return cv2.cvtColor(np.ascontiguousarray(planes), cv2.COLOR_YUV2BGR_NV12)
        checked = 0
        with av.open(video) as container:
            stream = container.streams.video[0]
            path = b.media_path(stream, StreamConfig(name="s", source=video, worker="npu"))
            for packet in container.demux(stream):
                frames = path.decode(packet)
                if len(frames) >= 2 and checked < 3:
                    first = frames[0]
                    model_input = path.prepare(first)
                    shot = path.snapshot().bgr()
                    path.release(model_input)
                    assert np.array_equal(shot, picture(first))
                    assert not np.array_equal(shot, picture(frames[-1]))
                    checked += 1
                if checked == 3:
                    break
            path.close()
        # The clip gives one burst on this machine, quiet or loaded (the decoder's reordering at
        # the start); every burst there is must pass.
        assert checked >= 1, checked
        b.close()
        """, run_mode="ACL_DEVICE")
    assert done.returncode == 0, done.stderr
    assert only_report(tmp_path / "r")["violations"] == []
