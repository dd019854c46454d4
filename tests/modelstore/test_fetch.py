"""`fetch_model` against a real HTTP server on 127.0.0.1 and real files."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest

from edged.config.paths import resolve_model
from edged.modelstore.catalog import CATALOG
from edged.modelstore.fetch import OFFLINE_HINT, FetchError, fetch_model, is_fetched

from .conftest import FileServer

ENTRY = CATALOG["yolox-nano"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def models_dir_contents(state_dir: Path) -> list[str]:
    folder = state_dir / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def corrupted_copy(model_path: Path, folder: Path) -> Path:
    """The model with a few bytes flipped in the middle: same size, different hash."""
    data = bytearray(model_path.read_bytes())
    for i in range(1000, 1004):
        data[i] ^= 0xFF
    folder.mkdir(parents=True, exist_ok=True)
    bad = folder / "yolox_nano.onnx"
    bad.write_bytes(bytes(data))
    return bad


def test_shared_model_matches_the_catalogue(model_path: Path) -> None:
    # The pin in the catalogue is what the tests below verify against.
    assert sha256(model_path) == ENTRY.sha256
    assert model_path.stat().st_size == ENTRY.size


def test_fetch_from_url(tmp_path: Path, model_server: FileServer) -> None:
    seen: list[tuple[int, int]] = []
    state = tmp_path / "state"

    path = fetch_model(
        "yolox-nano",
        state,
        url=model_server.url("yolox_nano.onnx"),
        progress=lambda done, total: seen.append((done, total)),
    )

    assert path == state / "models" / "yolox_nano.onnx"
    assert sha256(path) == ENTRY.sha256
    assert models_dir_contents(state) == ["yolox_nano.onnx"]
    assert is_fetched("yolox-nano", state)
    # The config's catalogue name now resolves to this file without a problem.
    assert resolve_model("yolox-nano", tmp_path, state) == (str(path), "")
    assert seen[-1] == (ENTRY.size, ENTRY.size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert {t for _, t in seen} == {ENTRY.size}
    # Readable by a daemon running as another user.
    assert path.stat().st_mode & 0o444 == 0o444


def test_hash_mismatch_keeps_nothing(tmp_path: Path, serve: Any, model_path: Path) -> None:
    bad = corrupted_copy(model_path, tmp_path / "www")
    server: FileServer = serve(bad.parent)
    url = server.url("yolox_nano.onnx")
    state = tmp_path / "state"

    with pytest.raises(FetchError) as caught:
        fetch_model("yolox-nano", state, url=url)

    message = str(caught.value)
    assert ENTRY.sha256 in message
    assert sha256(bad) in message
    assert url in message
    assert models_dir_contents(state) == []


def test_truncated_download_keeps_nothing(tmp_path: Path, serve: Any, model_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "yolox_nano.onnx").write_bytes(model_path.read_bytes()[: ENTRY.size // 2])
    server: FileServer = serve(www)
    state = tmp_path / "state"

    with pytest.raises(FetchError) as caught:
        fetch_model("yolox-nano", state, url=server.url("yolox_nano.onnx"))

    assert f"({ENTRY.size // 2} bytes)" in str(caught.value)
    assert models_dir_contents(state) == []


def test_oversized_download_stops_early(tmp_path: Path, serve: Any, model_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "yolox_nano.onnx").write_bytes(model_path.read_bytes() * 2)
    server: FileServer = serve(www)
    state = tmp_path / "state"

    with pytest.raises(FetchError, match="larger than the expected"):
        fetch_model("yolox-nano", state, url=server.url("yolox_nano.onnx"))

    assert models_dir_contents(state) == []


def test_unreachable_url_gives_the_offline_hint(tmp_path: Path, dead_url: str) -> None:
    state = tmp_path / "state"

    with pytest.raises(FetchError) as caught:
        fetch_model("yolox-nano", state, url=dead_url, timeout=5)

    message = str(caught.value)
    assert dead_url in message
    assert "refused" in message.lower()
    assert OFFLINE_HINT in message
    assert "--from FILE" in message
    assert models_dir_contents(state) == []


def test_http_error_names_the_status(tmp_path: Path, model_server: FileServer) -> None:
    url = model_server.url("no_such_model.onnx")

    with pytest.raises(FetchError, match="HTTP 404") as caught:
        fetch_model("yolox-nano", tmp_path / "state", url=url)

    assert url in str(caught.value)


def test_from_file(tmp_path: Path, model_path: Path) -> None:
    state = tmp_path / "state"

    path = fetch_model("yolox-nano", state, from_file=model_path)

    assert sha256(path) == ENTRY.sha256
    assert models_dir_contents(state) == ["yolox_nano.onnx"]


def test_from_corrupted_file_keeps_nothing(tmp_path: Path, model_path: Path) -> None:
    bad = corrupted_copy(model_path, tmp_path / "usb")
    state = tmp_path / "state"

    with pytest.raises(FetchError) as caught:
        fetch_model("yolox-nano", state, from_file=bad)

    assert ENTRY.sha256 in str(caught.value)
    assert sha256(bad) in str(caught.value)
    assert str(bad) in str(caught.value)
    assert models_dir_contents(state) == []


def test_from_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.onnx"

    with pytest.raises(FetchError, match="cannot read") as caught:
        fetch_model("yolox-nano", tmp_path / "state", from_file=missing)

    assert str(missing) in str(caught.value)


def test_refetch_is_a_no_op(tmp_path: Path, model_path: Path, dead_url: str) -> None:
    state = tmp_path / "state"
    path = fetch_model("yolox-nano", state, from_file=model_path)
    before = path.stat()

    # The URL is dead: success proves the network was not touched.
    again = fetch_model("yolox-nano", state, url=dead_url)

    after = again.stat()
    assert again == path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_corrupt_target_is_replaced(tmp_path: Path, model_path: Path, serve: Any) -> None:
    state = tmp_path / "state"
    corrupted_copy(model_path, state / "models")
    assert not is_fetched("yolox-nano", state)
    server: FileServer = serve(model_path.parent)

    path = fetch_model("yolox-nano", state, url=server.url("yolox_nano.onnx"))

    assert sha256(path) == ENTRY.sha256
    assert models_dir_contents(state) == ["yolox_nano.onnx"]


def test_a_failed_fetch_leaves_the_old_file_alone(tmp_path: Path, model_path: Path) -> None:
    state = tmp_path / "state"
    old = corrupted_copy(model_path, state / "models").read_bytes()
    bad = corrupted_copy(model_path, tmp_path / "usb")

    with pytest.raises(FetchError):
        fetch_model("yolox-nano", state, from_file=bad)

    assert (state / "models" / "yolox_nano.onnx").read_bytes() == old
    assert models_dir_contents(state) == ["yolox_nano.onnx"]


def test_unknown_name_lists_known_models(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"unknown model 'yolov99'.*yolox-nano"):
        fetch_model("yolov99", tmp_path)
    assert not (tmp_path / "models").exists()


def test_url_and_file_together_are_refused(tmp_path: Path, model_path: Path) -> None:
    with pytest.raises(FetchError, match="not both"):
        fetch_model("yolox-nano", tmp_path, url="http://127.0.0.1:1/x", from_file=model_path)


def test_a_silent_server_times_out(tmp_path: Path) -> None:
    # Listening but never answering: the kernel completes the connect, no reply ever comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/yolox_nano.onnx"

        with pytest.raises(FetchError) as caught:
            fetch_model("yolox-nano", tmp_path / "state", url=url, timeout=0.3)

    assert "timed out" in str(caught.value)
    assert OFFLINE_HINT in str(caught.value)
    assert models_dir_contents(tmp_path / "state") == []
