"""Fixtures shared by the whole suite: the real assets, a real broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker

REPO = Path(__file__).resolve().parent.parent


def assets_dir() -> Path:
    """The shared model and media, from $EDGED_TEST_ASSETS (default ../shared)."""
    root = Path(os.environ.get("EDGED_TEST_ASSETS", REPO.parent / "shared"))
    model = root / "models" / "yolox_nano.onnx"
    if not model.is_file():
        raise RuntimeError(
            f"test assets not found at {root} (no {model}); set EDGED_TEST_ASSETS to the folder "
            "holding models/yolox_nano.onnx and media/"
        )
    return root


@pytest.fixture(scope="session")
def assets() -> Path:
    return assets_dir()


@pytest.fixture(scope="session")
def model_path(assets: Path) -> Path:
    return assets / "models" / "yolox_nano.onnx"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto on a free port, stopped after the test."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()
