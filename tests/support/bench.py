"""Runs `python -m edged bench` from a test: a child process, as a person runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_bench(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`edged bench ARGS` in `cwd` with `env`; fails the test unless it exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "edged", "bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done
