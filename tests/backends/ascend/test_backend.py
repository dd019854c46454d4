"""The Ascend backend on the pyACL emulator: same detections as the CPU path, clean teardown,
boot errors a person can act on, batches on the model's gears, float models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.acl_emulator import (
    YOLOX_AIPP,
    emulator_env,
    only_report,
    run_snippet,
    write_om,
)
from tests.support.agreement import agree

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("run_mode", ["ACL_HOST", "ACL_DEVICE"])
def test_vdec_vpc_aipp_detections_match_the_cpu_path(
    tmp_path: Path, assets: Path, model_path: Path, om: Path, run_mode: str
) -> None:
    reports = tmp_path / "reports"
    env = emulator_env(reports, run_mode=run_mode)
    env["PYTHONPATH"] += f":{REPO}"
    done = subprocess.run(
        [sys.executable, "-m", "tests.backends.ascend.paths", str(om), str(model_path),
         str(assets / "media" / "traffic-720p.mp4"), "24"],
        env=env, capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    agreement = agree(result["cpu"], result["ascend"])
    figures = result["figures"]
    frames = figures["frames"]
    print(f"{run_mode}: {agreement.line()}")
    per_frame = {k: v // frames for k, v in figures["bytes_copied"].items()}
    print(f"{run_mode}: host bytes copied a frame (one snapshot included) {per_frame}; host CPU "
          f"{1000 * figures['host_cpu_s'] / frames:.2f} ms a frame, emulated device "
          f"{1000 * figures['device_cpu_s'] / frames:.2f} ms a frame ({frames} frames)")
    # Same objects, boxes a few pixels apart at most (the NV12 round trip and VPC's resize).
    assert agreement.reference > 100
    assert agreement.matched >= 0.95 * agreement.reference, agreement.line()
    assert agreement.mean_iou > 0.95, agreement.line()
    # Packets in, outputs out: no picture crossed to the host but the one snapshot.
    output_bytes = 3549 * 85 * 4
    snapshot = 1280 * 720 * 3 // 2
    to_host = figures["bytes_copied"]["device_to_host"]
    assert to_host <= frames * output_bytes + snapshot, figures
    assert figures["bytes_copied"]["host_to_device"] < frames * 20_000, figures
    assert figures["snapshot_shape"] == [720, 1280, 3]
    report = only_report(reports)
    assert report["violations"] == [] and report["leaks"] == [], report


BACKEND = """
from edged.backends.ascend import AscendBackend
from edged.backends.base import BackendError
from edged.config.model import WorkerConfig
"""


def test_no_pyacl_is_a_boot_error_that_says_what_to_install(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BACKEND + """
w = WorkerConfig(name="npu", model="x.om", backend="ascend")
try:
    AscendBackend(w).load()
except BackendError as exc:
    print(exc)
"""], capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "CANN toolkit" in done.stdout and "set_env.sh" in done.stdout


def test_a_failed_call_is_a_typed_error_and_a_failed_load_leaks_nothing(
    tmp_path: Path, model_path: Path
) -> None:
    wrong_soc = write_om(tmp_path / "p3.om", model_path, aipp=YOLOX_AIPP, soc="Ascend310P3")
    cases = (
        (wrong_soc, 0, "acl.mdl.load_from_file 100014 |", "Ascend310P3"),
        ("/missing.om", 0, "acl.mdl.load_from_file 100003 |", "/missing.om"),
        ("x.om", 3, "acl.rt.set_device 107001 |", "device 3"),
    )
    for i, (model, device, start, detail) in enumerate(cases):
        # One process each: acl.init is once per process.
        done = run_snippet((BACKEND, f"""
            from edged.backends.ascend.runtime import AclError
            w = WorkerConfig(name="npu", model={str(model)!r}, backend="ascend", device={device})
            try:
                AscendBackend(w).load()
            except AclError as exc:
                print(exc.call, exc.code, "|", exc.detail)
            """), tmp_path / str(i))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(start) and detail in done.stdout, done.stdout
        # The failed load released what it had opened, in reverse order, and finalized.
        report = only_report(tmp_path / str(i))
        assert report["leaks"] == [] and report["finalized"], report


def test_several_inputs_run_as_one_batch_on_a_gear(tmp_path: Path, assets: Path, om: Path) -> None:
    done = run_snippet((BACKEND, f"""
        import av, numpy as np
        from edged.config.model import StreamConfig
        w = WorkerConfig(name="npu", model={str(om)!r}, backend="ascend", batch=4)
        b = AscendBackend(w); b.load(); b.warm_up()
        video = {str(assets / "media" / "traffic-720p.mp4")!r}
        c = av.open(video); s = c.streams.video[0]
        path = b.media_path(s, StreamConfig(name="s", source=video, worker="npu"))
        inputs = []
        for p in c.demux(s):
            for f in path.decode(p):
                if len(inputs) < 3:
                    inputs.append(path.prepare(f))
            if len(inputs) == 3:
                break
        together = b.infer(inputs)
        alone = [b.infer([i])[0] for i in inputs]
        assert len(together) == 3
        for a, t in zip(alone, together):
            assert a.shape == t.shape == (1, 3549, 85)
            assert np.allclose(a, t, atol=1e-5)
        assert not np.allclose(together[0], together[2])
        for i in inputs:
            path.release(i)
        path.close(); b.close()
        """), tmp_path / "r")
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path / "r")
    assert report["violations"] == [] and report["leaks"] == []


def test_a_float_model_without_aipp_and_a_wrong_input_kind(
    tmp_path: Path, assets: Path, model_path: Path
) -> None:
    plain = write_om(tmp_path / "plain.om", model_path)
    done = run_snippet((BACKEND, f"""
        w = WorkerConfig(name="npu", model={str(plain)!r}, backend="ascend")
        try:
            AscendBackend(w).load()
        except BackendError as exc:
            print(exc)
        """), tmp_path / "wrong")
    assert done.returncode == 0, done.stderr
    assert 'the model takes float input (input_kind = "float")' in done.stdout
    assert only_report(tmp_path / "wrong")["leaks"] == []
    done = run_snippet((BACKEND, f"""
        import numpy as np
        from edged.backends.base import ModelInput
        import av
        from edged.config.model import StreamConfig
        from edged.worker.detector import Detector
        w = WorkerConfig(name="npu", model={str(plain)!r}, backend="ascend", input_kind="float")
        b = AscendBackend(w); b.load(); b.warm_up()
        (out,) = b.infer([ModelInput(np.full((1, 3, 416, 416), 114, np.float32), 1.0, 416, 416)])
        assert out.shape == (1, 3549, 85), out.shape
        # Frames decoded and letterboxed on the host, the tensor copied to the device.
        video = {str(assets / "media" / "traffic-720p.mp4")!r}
        detector, cars, frames = Detector(w), 0, 0
        with av.open(video) as c:
            s = c.streams.video[0]
            path = b.media_path(s, StreamConfig(name="s", source=video, worker="npu"))
            for p in c.demux(s):
                for f in path.decode(p):
                    mi = path.prepare(f)
                    (o,) = b.infer([mi])
                    path.release(mi)
                    found = detector.postprocess(o, mi.scale, mi.width, mi.height, 0.4)
                    cars += sum(label == "car" for label, _, _, _ in found)
                    frames += 1
                if frames >= 5:
                    break
            path.close()
        assert type(path).__name__ == "HostMediaPath" and cars >= 10, (type(path), cars)
        b.close()
        """), tmp_path / "r")
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path / "r")
    assert report["violations"] == [] and report["leaks"] == []
