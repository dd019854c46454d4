"""`edged models fetch|list` through argparse, in-process, against a real HTTP server."""

from __future__ import annotations

import argparse
import hashlib
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from edged.modelstore.catalog import CATALOG
from edged.modelstore.command import register
from tests.conftest import REPO

from .conftest import FileServer

ENTRY = CATALOG["yolox-nano"]


def run(argv: list[str]) -> int:
    """Parse as the main CLI will (its parser plus `register`) and run the handler."""
    parser = argparse.ArgumentParser(prog="edged")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_prints_the_path(
    tmp_path: Path, model_server: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    url = model_server.url("yolox_nano.onnx")

    code = run(["models", "fetch", "yolox-nano", "--url", url, "--state-dir", str(state)])

    out, err = capsys.readouterr()
    target = state / "models" / "yolox_nano.onnx"
    assert code == 0
    assert out == f"{target}\n"
    assert url in err
    assert sha256(target) == ENTRY.sha256


def test_second_fetch_says_already_fetched(
    tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert (
        run(["models", "fetch", "yolox-nano", "--from", str(model_path), "--state-dir", str(state)])
        == 0
    )
    capsys.readouterr()

    code = run(["models", "fetch", "yolox-nano", "--state-dir", str(state)])

    out, err = capsys.readouterr()
    assert code == 0
    assert "already fetched" in err
    assert out == f"{state / 'models' / 'yolox_nano.onnx'}\n"


def test_mismatch_exits_1(
    tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.onnx"
    data = bytearray(model_path.read_bytes())
    data[-1] ^= 0x01
    bad.write_bytes(bytes(data))
    state = tmp_path / "state"

    code = run(["models", "fetch", "yolox-nano", "--from", str(bad), "--state-dir", str(state)])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert ENTRY.sha256 in err
    assert sha256(bad) in err
    assert list((state / "models").iterdir()) == []


def test_unreachable_exits_1_with_hint(
    tmp_path: Path, dead_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["models", "fetch", "yolox-nano", "--url", dead_url, "--state-dir", str(tmp_path)])

    _, err = capsys.readouterr()
    assert code == 1
    assert "--from FILE" in err
    assert dead_url in err


def test_unknown_name_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["models", "fetch", "yolov99", "--state-dir", str(tmp_path)])

    _, err = capsys.readouterr()
    assert code == 1
    assert "yolox-nano" in err


def test_state_dir_from_a_config_with_other_errors(
    tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    # Invalid for the daemon (a bad MQTT URL, a model not yet fetched) but node.state_dir is fine.
    config.write_text(
        '[node]\nstate_dir = "../var"\n\n[mqtt]\nurl = 5\n\n'
        '[[workers]]\nname = "w"\nmodel = "yolox-nano"\n',
        encoding="utf-8",
    )

    code = run(
        ["models", "fetch", "yolox-nano", "--from", str(model_path), "--config", str(config)]
    )

    out, _ = capsys.readouterr()
    assert code == 0
    expected = (tmp_path / "var" / "models" / "yolox_nano.onnx").resolve()
    assert out == f"{expected}\n"
    assert sha256(expected) == ENTRY.sha256


def test_state_dir_default_without_config(
    tmp_path: Path,
    model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The real environment lookup of resolve_state_dir: $STATE_DIRECTORY wins over XDG.
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd-state"))

    code = run(["models", "fetch", "yolox-nano", "--from", str(model_path)])

    out, _ = capsys.readouterr()
    assert code == 0
    assert out == f"{tmp_path / 'systemd-state' / 'models' / 'yolox_nano.onnx'}\n"


@pytest.mark.parametrize(
    ("text", "why"),
    [("[node\n", "not valid TOML"), ("[node]\nstate_dir = 3\n", "node.state_dir")],
)
def test_unusable_config_exits_2(
    tmp_path: Path, text: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")

    code = run(["models", "fetch", "yolox-nano", "--config", str(config)])

    _, err = capsys.readouterr()
    assert code == 2
    assert why in err


def test_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["models", "list", "--config", str(tmp_path / "nope.toml")])

    _, err = capsys.readouterr()
    assert code == 2
    assert "cannot read" in err


def test_url_and_from_together_is_a_usage_error(tmp_path: Path, model_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        run(["models", "fetch", "yolox-nano", "--url", "http://x/", "--from", str(model_path)])
    assert caught.value.code == 2


def test_list(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    target = state / "models" / "yolox_nano.onnx"

    assert run(["models", "list", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.split() == ["yolox-nano", "missing", str(target)]

    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a model")
    assert run(["models", "list", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.split() == ["yolox-nano", "corrupt", str(target)]

    run(["models", "fetch", "yolox-nano", "--from", str(model_path), "--state-dir", str(state)])
    capsys.readouterr()
    assert run(["models", "list", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.split() == ["yolox-nano", "fetched", str(target)]


def test_progress_line_on_a_terminal(tmp_path: Path, model_server: FileServer) -> None:
    """With stderr on a real pseudo-terminal the percentage is drawn; stdout stays the path."""
    state = tmp_path / "state"
    script = (
        "import argparse, sys\n"
        "from edged.modelstore.command import register\n"
        "p = argparse.ArgumentParser(prog='edged')\n"
        "register(p.add_subparsers(dest='command', required=True))\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "sys.exit(a.func(a))\n"
    )
    argv = ["models", "fetch", "yolox-nano", "--url", model_server.url("yolox_nano.onnx")]
    argv += ["--state-dir", str(state)]
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        stdout=subprocess.PIPE,
        stderr=terminal,
        cwd=REPO,
    ) as proc:
        os.close(terminal)
        seen = b""
        # Read while it runs (a full pty buffer would block the child); EIO once it has exited.
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:
                break
            if not data:
                break
            seen += data
        os.close(controller)
        out = proc.stdout.read() if proc.stdout else b""
        code = proc.wait(timeout=60)

    text = seen.decode()
    assert code == 0, text
    assert "100%" in text
    assert "\r" in text
    assert out.decode().strip() == str(state / "models" / "yolox_nano.onnx")
