"""`edged probe`: cpu always; ascend only where `acl` imports, with its devices, SoC, run mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.acl_emulator import emulator_env

REPO = Path(__file__).resolve().parent.parent


def probe(env: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", "probe", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )


def test_without_pyacl_ascend_is_unavailable_and_says_what_to_install() -> None:
    done = probe()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cpu: available: onnxruntime")
    assert lines[1].startswith("ascend: not available:")
    assert "CANN toolkit" in lines[1] and "set_env.sh" in lines[1]


@pytest.mark.parametrize(("soc", "run_mode"), [("Ascend310", "ACL_HOST"),
                                               ("Ascend310B1", "ACL_DEVICE")])
def test_with_pyacl_it_lists_devices_soc_and_run_mode(
    tmp_path: Path, soc: str, run_mode: str
) -> None:
    env = emulator_env(tmp_path, soc=soc, run_mode=run_mode, devices="2")
    done = probe(env, "--json")
    assert done.returncode == 0, done.stderr
    ascend = json.loads(done.stdout)["ascend"]
    assert ascend["available"] and ascend["soc"] == soc and ascend["run_mode"] == run_mode
    assert [d["device"] for d in ascend["devices"] if d["ok"]] == [0, 1]
    text = probe(env).stdout
    assert f"ascend: available: {soc}, device 0, device 1; run mode {run_mode}" in text
    # Each probe ran ACL in its own child and released everything there.
    reports = [json.loads(p.read_text()) for p in tmp_path.glob("acl-*.json")]
    assert len(reports) == 2
    for report in reports:
        assert report["violations"] == [] and report["leaks"] == []
