"""Running code against the pyACL emulator (tests/emulator/acl) from the tests.

The emulator's state is per process, so every check runs a fresh Python (a snippet, a sample
program, or `edged run` with its spawned workers) with the emulator's folder on PYTHONPATH, and
then reads the JSON reports it wrote (one `acl-<pid>.json` per process that used ACL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

EMULATOR_DIR = Path(__file__).resolve().parent.parent / "emulator"

# ATC's AIPP matrix for BT.601 narrow-range YUV -> BGR (the rows of the default YUV -> RGB
# matrix, pyacl.md 9a.11, in B, G, R order): YOLOX wants BGR 0..255, no normalisation.
YOLOX_AIPP: dict[str, Any] = {
    "aipp_mode": "static",
    "input_format": "YUV420SP_U8",
    "src_image_size_w": 416,
    "src_image_size_h": 416,
    "csc_switch": True,
    "rbuv_swap_switch": False,
    "matrix_r0c0": 298, "matrix_r0c1": 516, "matrix_r0c2": 0,
    "matrix_r1c0": 298, "matrix_r1c1": -100, "matrix_r1c2": -208,
    "matrix_r2c0": 298, "matrix_r2c1": 0, "matrix_r2c2": 409,
    "input_bias_0": 16, "input_bias_1": 128, "input_bias_2": 128,
}


def write_om(
    path: Path,
    onnx: Path,
    *,
    gears: tuple[int, ...] = (),
    aipp: dict[str, Any] | None = None,
    soc: str | None = None,
) -> Path:
    """An emulator `.om` standing for `atc --model=onnx [--insert_op_conf] [--dynamic_batch]`."""
    spec: dict[str, Any] = {"edged_acl_emulator_om": 1, "onnx": str(onnx)}
    if gears:
        spec["dynamic_batch_size"] = list(gears)
    if aipp is not None:
        spec["aipp"] = aipp
    if soc is not None:
        spec["soc_version"] = soc
    path.write_text(json.dumps(spec, indent=1))
    return path


def emulator_env(report_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a process (and its spawned children) that imports the emulator."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(EMULATOR_DIR), env.get("PYTHONPATH", "")) if p
    )
    env["ACL_EMU_REPORT_DIR"] = str(report_dir)
    env.setdefault("ACL_EMU_MODE", "strict")
    for key, value in settings.items():
        env[f"ACL_EMU_{key.upper()}"] = value
    return env


def run_snippet(
    code: str | tuple[str, ...], report_dir: Path, *, timeout: float = 120, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run Python `code` (or parts of it, each dedented) in a fresh process on the emulator."""
    parts = (code,) if isinstance(code, str) else code
    with tempfile.TemporaryDirectory() as folder:
        # A file, not -c: spawned children must be able to import the snippet's functions.
        script = Path(folder) / "snippet.py"
        script.write_text("\n".join(textwrap.dedent(p) for p in parts))
        return subprocess.run(
            [sys.executable, str(script)],
            env=emulator_env(report_dir, **settings),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def reports(report_dir: Path) -> list[dict[str, Any]]:
    """Every report written under report_dir, oldest first."""
    paths = sorted(
        (p for p in report_dir.glob("acl-*.json") if not p.name.endswith(".stats.json")),
        key=lambda p: p.stat().st_mtime,
    )
    return [json.loads(p.read_text()) for p in paths]


def only_report(report_dir: Path) -> dict[str, Any]:
    found = reports(report_dir)
    assert len(found) == 1, f"expected one emulator report in {report_dir}, found {len(found)}"
    return found[0]


def rules(report: dict[str, Any]) -> set[str]:
    return set(report["violation_counts"])


# The start of a snippet: a device, an explicit context and a stream, as every sample opens.
PRELUDE = """
import acl, numpy as np
def ok(ret):
    assert ret == 0, (ret, acl.get_recent_err_msg())
ok(acl.init())
ok(acl.rt.set_device(0))
ctx, ret = acl.rt.create_context(0); ok(ret)
stream, ret = acl.rt.create_stream(); ok(ret)
"""

# The end of a clean snippet, in the reverse order.
TEARDOWN = """
ok(acl.rt.destroy_stream(stream))
ok(acl.rt.destroy_context(ctx))
ok(acl.rt.reset_device(0))
ok(acl.finalize())
"""


def stand_in_cpu_s(report_dir: Path, pid: int) -> float:
    """The device stand-in CPU a running process has spent so far (ACL_EMU_STATS_INTERVAL)."""
    path = report_dir / f"acl-{pid}.stats.json"
    return float(json.loads(path.read_text())["device_cpu_s"])
