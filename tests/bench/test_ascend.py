"""`edged bench --backend ascend` on the pyACL emulator (strict mode, as the suite runs it): the
real daemon with an Ascend worker, frames counted, and the emulator's stand-in device CPU read
from its stats files and left out of the host's CPU per frame."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from edged.bench import ascend, report
from edged.cli import main
from tests.support.acl_emulator import emulator_env
from tests.support.bench import run_bench


def test_ascend_bench_leaves_the_emulated_device_out_of_the_host_cpu(
    tmp_path: Path, assets: Path, om: Path
) -> None:
    acl_dir = tmp_path / "acl"
    out = tmp_path / "out.json"
    env = emulator_env(acl_dir)  # the emulator on PYTHONPATH, strict mode
    env["EDGED_TEST_ASSETS"] = str(assets)
    done = run_bench(
        tmp_path, env, "--backend", "ascend", "--model", str(om), "--streams", "1",
        "--duration", "4", "--warmup", "1", "--json", str(out), "--quiet",
    )
    print(done.stdout)
    assert "acl: the pyACL emulator (strict mode, ACL_HOST, Ascend310)" in done.stdout, done.stdout
    (line,) = [s for s in done.stdout.splitlines() if s.startswith("ascend host CPU per frame:")]
    assert "emulated device" in line and "left out" in line, line
    assert "summary, ascend, 1 stream(s) at saturation" in done.stdout, done.stdout

    doc = json.loads(out.read_text())
    assert doc["backend"] == "ascend" and doc["acl"]["kind"] == "emulator", doc["acl"]
    (run,) = doc["runs"]
    assert run["frames"] > 0 and run["fps"] > 0, run
    assert run["limit_fps"] is None and run["ratio"] is None
    assert run["emulated"] is True, run
    assert list(run["cpu_pct"]) == ["supervisor", "worker npu0", "mosquitto", "bench (subscriber)"]
    h = run["host_cpu_ms"]
    # The worker's CPU as measured is the one psutil saw; the emulator's part of it came from
    # its stats file, and the host figure is what is left.
    assert abs(h["worker_total"] - run["cpu_pct"]["worker npu0"] * 10 / run["fps"]) < 0.01, h
    assert 0 < h["emulated_device"] < h["worker_total"], h
    assert 0 < h["worker"] < h["worker_total"], h
    assert abs(h["worker"] + h["emulated_device"] - h["worker_total"]) < 0.01, h
    # Decode, resize and inference are the device's: the stand-in costs more than the glue.
    assert h["emulated_device"] > h["worker"], h
    parts = h["worker"] + h["supervisor"] + h["broker"] + h["subscriber"]
    assert abs(h["total"] - parts) < 0.01, h
    lat = run["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"], lat

    # The emulator wrote the stats the bench read and, at the worker's clean stop, a report
    # with no rule broken and nothing leaked (strict mode would have failed the call anyway).
    (emulator,) = run["emulator_reports"]
    assert (acl_dir / f"acl-{emulator['pid']}.stats.json").is_file()
    assert emulator["mode"] == "strict" and emulator["finalized"], emulator
    assert emulator["violations"] == 0 and emulator["leaks"] == 0, emulator
    assert "0 rule violation(s), 0 leaked resource(s)" in done.stdout, done.stdout


def test_without_the_emulator_the_worker_cpu_is_reported_as_measured() -> None:
    """Real pyACL writes no stats file: nothing is subtracted and the line says so."""
    cpu = {"supervisor": 2.0, "worker npu0": 8.0, "mosquitto": 0.5, "bench (subscriber)": 1.0}
    result = SimpleNamespace(frames=100, fps=10.0, cpu_pct=cpu, stand_in_cpu_s={})
    h = ascend.host_cpu_ms(result)
    assert h["emulated_device"] == 0 and h["worker"] == h["worker_total"] == 8.0, h
    assert h["total"] == 8.0 + 2.0 + 0.5 + 1.0, h
    run = {"host_cpu_ms": h, "emulated": False, "emulator_reports": [], "streams": 1,
           "mode": "saturation", "frames": 100}
    line = report.ascend_line(run)
    assert line.startswith("ascend host CPU per frame: worker 8.00 core-ms (as measured"), line
    assert "real pyACL" in line, line
    assert ascend.acl_kind([run]) == "pyACL"
    gone = SimpleNamespace(**{**vars(result), "cpu_pct": {"worker npu0": math.nan}})
    assert ascend.host_cpu_ms(gone)["total"] is None


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ((), "--model FILE.om is required"),
        (("--model", "m.om", "--capacity"), "--capacity needs the limit"),
    ],
)
def test_ascend_bench_refuses_what_it_cannot_measure(
    extra: tuple[str, ...], says: str
) -> None:
    with pytest.raises(SystemExit, match=says):
        main(["bench", "--backend", "ascend", *extra])
