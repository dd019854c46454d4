"""The resource tracker that `spawn` starts is ended by the supervisor before it exits.

Each case runs in a child Python process (the tracker belongs to whoever spawned first; the test
process's own tracker is left alone).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, multiprocessing, sys
import psutil
from edged.supervisor.tracker import stop_resource_tracker

def tracker_children():
    return [p.pid for p in psutil.Process().children()
            if "resource_tracker" in " ".join(p.cmdline())]

if __name__ == "__main__":
    spawned = sys.argv[1] == "spawn"
    if spawned:
        process = multiprocessing.get_context("spawn").Process(target=print, args=("child",))
        process.start()
        process.join(30)
    before = tracker_children()
    ok = stop_resource_tracker()
    print(json.dumps({"before": before, "ok": ok, "after": tracker_children(),
                      "alive": [pid for pid in before if psutil.pid_exists(pid)]}))
"""


def run_child(mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_the_tracker_spawn_started_is_gone_and_reaped_before_we_return() -> None:
    result = run_child("spawn")
    assert len(result["before"]) == 1, result  # type: ignore[arg-type]
    # Reaped by us, not left as a zombie or an orphan for systemd to SIGKILL.
    assert result == {"before": result["before"], "ok": True, "after": [], "alive": []}


def test_without_a_tracker_nothing_is_started() -> None:
    assert run_child("none") == {"before": [], "ok": True, "after": [], "alive": []}
