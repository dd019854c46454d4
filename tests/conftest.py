"""Fixtures shared by the whole suite: the real assets, a real broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.acl_emulator import YOLOX_AIPP, write_om
from tests.support.broker import Broker
from tests.support.rtsp import RTSP_PASSWORD, RTSP_USER, Mount, RtspServer
from tests.support.rtsp_media import H264_720, H265_720

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
def om(tmp_path: Path, model_path: Path) -> Path:
    """The example model as an offline model for the pyACL emulator (tests/emulator/acl): batch
    gears 1, 2 and 4, YOLOX's AIPP."""
    return write_om(tmp_path / "yolox.om", model_path, gears=(1, 2, 4), aipp=YOLOX_AIPP)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto on a free port, stopped after the test."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def rtsp_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the RTSP server's videos are made, once per session (tests/support/rtsp_media.py)."""
    return tmp_path_factory.mktemp("rtsp-media")


@pytest.fixture
def rtsp_server(assets: Path, rtsp_cache: Path, tmp_path: Path) -> Iterator[RtspServer]:
    """A real RTSP server (gst-rtsp-server) on a free port: H.264 on /h264, H.265 on /h265, and
    H.264 behind Basic auth (RTSP_USER / RTSP_PASSWORD) on /secure; stopped after the test."""
    mounts = [
        Mount("/h264", H264_720),
        Mount("/h265", H265_720),
        Mount("/secure", H264_720, user=RTSP_USER, password=RTSP_PASSWORD),
    ]
    with RtspServer(mounts, assets / "media", rtsp_cache, tmp_path / "rtsp-server.log") as server:
        yield server
