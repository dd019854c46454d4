"""The CPU backend on the real model: loads, infers, and refuses what it cannot run, in words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from edged.backends import BackendError, make_backend
from edged.backends.base import ModelInput
from edged.config.model import WorkerConfig


def worker(model: Path, **fields: object) -> WorkerConfig:
    return msgspec.convert({"name": "cpu0", "model": str(model), **fields}, WorkerConfig)


def test_loads_and_infers_the_yolox_output_shape(model_path: Path) -> None:
    backend = make_backend(worker(model_path))
    backend.load()
    assert "CPUExecutionProvider" in backend.providers
    blank = ModelInput(np.full((1, 3, 416, 416), 114, np.float32), 1.0, 416, 416)
    outputs = backend.infer([blank, blank])
    assert [o.shape for o in outputs] == [(1, 3549, 85)] * 2
    backend.close()


def test_input_size_that_does_not_match_the_model_is_refused(model_path: Path) -> None:
    backend = make_backend(worker(model_path, input_size=[640, 640]))
    with pytest.raises(BackendError, match=r"input_size \[640, 640\]"):
        backend.load()


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"definitely not protobuf" * 100)
    with pytest.raises(BackendError, match="cannot load model"):
        make_backend(worker(garbage)).load()


def test_onnx_runtime_writes_no_telemetry_into_home(tmp_path: Path, model_path: Path) -> None:
    # A fresh process: the telemetry store is opened when onnxruntime is first imported.
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import msgspec, sys\n"
        "from edged.backends import make_backend\n"
        "from edged.config.model import WorkerConfig\n"
        "worker = msgspec.convert({'name': 'w', 'model': sys.argv[1]}, WorkerConfig)\n"
        "backend = make_backend(worker)\n"
        "backend.load()\n"
    )
    unset = ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", code, str(model_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
