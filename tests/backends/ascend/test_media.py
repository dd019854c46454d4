"""The Ascend media path on the emulator with live cameras: H.264 and H.265 over RTSP (Annex-B
from the start, parameter sets in the SDP) decode on VDEC and find the cars."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.acl_emulator import YOLOX_AIPP, only_report, run_snippet, write_om
from tests.support.rtsp import RtspServer

CAMERA = """
import av
from edged.backends.ascend import AscendBackend
from edged.config.model import StreamConfig, WorkerConfig
from edged.worker.detector import Detector
w = WorkerConfig(name="npu", model={om!r}, backend="ascend")
b = AscendBackend(w); b.load(); b.warm_up()
detector = Detector(w)
url = {url!r}
container = av.open(url, options={{"rtsp_transport": "tcp"}}, timeout=10)
stream = container.streams.video[0]
path = b.media_path(stream, StreamConfig(name="cam", source=url, worker="npu"))
labels, frames = [], 0
for packet in container.demux(stream):
    for frame in path.decode(packet):
        if frames == 10:  # VDEC calls back in bursts: one packet can complete two frames
            break
        model_input = path.prepare(frame)
        (output,) = b.infer([model_input])
        path.release(model_input)
        found = detector.postprocess(output, model_input.scale, model_input.width,
                                     model_input.height, 0.4)
        labels += [label for label, _, _, _ in found]
        frames += 1
    if frames >= 10:
        break
snapshot = path.snapshot()
path.close(); container.close(); b.close()
print(stream.codec_context.name, frames, labels.count("car"), snapshot.bgr().shape)
"""


@pytest.mark.parametrize(("mount", "codec"), [("/h264", "h264"), ("/h265", "hevc")])
def test_rtsp_cameras_decode_on_vdec(
    tmp_path: Path, model_path: Path, rtsp_server: RtspServer, mount: str, codec: str
) -> None:
    om = write_om(tmp_path / "yolox.om", model_path, aipp=YOLOX_AIPP)
    done = run_snippet(CAMERA.format(om=str(om), url=rtsp_server.url(mount)), tmp_path / "r",
                       timeout=180)
    assert done.returncode == 0, done.stderr
    name, frames, cars, shape = done.stdout.split(maxsplit=3)
    assert (name, int(frames)) == (codec, 10)
    assert int(cars) >= 10, done.stdout
    assert shape.strip() == "(720, 1280, 3)"
    report = only_report(tmp_path / "r")
    assert report["violations"] == [] and report["leaks"] == [], report
