"""`edged bench`, short: parts measured, the real daemon run, sane figures, JSON and PNG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_one_stream_writes_sane_figures(tmp_path: Path, assets: Path) -> None:
    out = tmp_path / "out.json"
    env = dict(os.environ, EDGED_TEST_ASSETS=str(assets))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edged",
            "bench",
            "--streams",
            "1",
            "--duration",
            "5",
            "--warmup",
            "2",
            "--json",
            str(out),
            "--quiet",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "frames/s" in done.stdout and "ratio" in done.stdout, done.stdout

    doc = json.loads(out.read_text())
    assert doc["machine"]["cores"] >= 1
    decode = doc["parts"]["decode"]
    assert [Path(d["video"]).name for d in decode] == ["pedestrians-720p.avi", "traffic-720p.mp4"]
    assert all(0 < d["cpu_ms"] < 100 for d in decode), decode
    infer = doc["parts"]["infer"]
    assert 0 < infer["pre_cpu_ms"] < infer["infer_cpu_ms"] < 1000, infer
    assert infer["infer_wall_ms"] > 0

    saturation, half = doc["runs"]
    assert (saturation["mode"], half["mode"]) == ("saturation", "half-load")
    for run in (saturation, half):
        assert run["streams"] == 1
        assert run["limit_fps"] > 0
        assert run["fps"] > 0 and run["frames"] > 0
        assert 0 < run["ratio"] < 1.5, run["ratio"]
        lat = run["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"], lat
        cpu = run["cpu_pct"]
        assert cpu["supervisor"] >= 0
        workers = [k for k in cpu if k.startswith("worker")]
        assert workers == ["worker cpu0"], cpu
        assert cpu["worker cpu0"] > 10, cpu  # it decoded and detected for the whole window
        rss = run["rss_mb"]
        assert rss["worker cpu0"] > 50 and rss["supervisor"] > 10, rss  # a model and a runtime
        assert all(v > 0 for v in rss.values()), rss
    # The limit is cores x 1000 / work: it agrees with the parts it was computed from.
    work = decode[0]["cpu_ms"] + infer["pre_cpu_ms"] + infer["infer_cpu_ms"]
    assert abs(saturation["limit_fps"] - doc["machine"]["cores"] * 1000 / work) < 0.05
    # Half load detects fewer frames than saturation asks for.
    assert half["detect_fps"] > 0 and half["realtime"] is True
    assert half["latency_budget_ms"] > infer["infer_wall_ms"]

    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == PNG_MAGIC
