"""A program written like Huawei's samples (sample_pipeline.py) runs unchanged on the emulator:
VDEC -> VPC crop-and-paste -> static-AIPP YOLOX, in both run modes, without a rule broken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.acl_emulator import (
    EMULATOR_DIR,
    YOLOX_AIPP,
    emulator_env,
    only_report,
    write_om,
)

CAR, TRUCK = 2, 7


@pytest.mark.parametrize(
    ("run_mode", "mode"),
    [("ACL_HOST", "strict"), ("ACL_DEVICE", "strict"), ("ACL_DEVICE", "realistic")],
)
def test_the_sample_pipeline_detects_cars_and_leaves_a_clean_report(
    tmp_path: Path, assets: Path, model_path: Path, run_mode: str, mode: str
) -> None:
    om = write_om(tmp_path / "yolox.om", model_path, gears=(1, 2, 4), aipp=YOLOX_AIPP,
                  soc="Ascend310")
    reports = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, str(EMULATOR_DIR / "sample_pipeline.py"), str(om),
         str(assets / "media" / "traffic-720p.mp4"), "16"],
        env=emulator_env(reports, run_mode=run_mode, mode=mode),
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr
    frames = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(f["frame"] for f in frames) == list(range(16))
    with_cars = [f for f in frames if f["classes"] and str(CAR) in f["classes"]]
    assert len(with_cars) >= 14, frames
    report = only_report(reports)
    assert report["run_mode"] == run_mode
    assert report["violations"] == [] and report["leaks"] == [], report
    # Packets in, model outputs out: the pictures never crossed to the host.
    assert report["bytes_copied"]["host_to_device"] < 300_000
