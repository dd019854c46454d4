"""configure_logging in its three modes, each in a real child process with a real stderr."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.logs import configure_logging
from tests.support.datagram import receiver
from tests.systemd.journal_parse import parse_entry

CHILD = """
import logging, sys
from edged.logs import configure_logging, get_logger, log_mode
log = get_logger("edged.test", stream="cam1")
configure_logging(sys.argv[1], process="worker:cpu0")
log.debug("filtered out")
log.info("hello", fps=12.5)
logging.getLogger("asyncio").warning("from stdlib %d", 7)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("boom")
log.warning("mode", mode=log_mode())
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "EDGED_LOG_FORMAT")}
    env.update(extra)
    return env


def _stderr_of(code: str, *args: str, **env: str) -> str:
    """What a child running `code` (stdin empty, stderr a pipe, `env` added) wrote to stderr;
    fails if it exits non-zero or runs past 60 s."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=60,
        check=True,
    ).stderr


def test_pipe_gives_json_lines() -> None:
    stderr = _stderr_of(CHILD, "info")
    events = [json.loads(line) for line in stderr.splitlines()]
    assert [e["event"] for e in events] == ["hello", "from stdlib 7", "boom", "mode"]
    hello = events[0]
    assert hello["level"] == "info"
    assert hello["logger"] == "edged.test"
    assert hello["process"] == "worker:cpu0"
    assert isinstance(hello["pid"], int)
    assert hello["stream"] == "cam1"
    assert hello["fps"] == 12.5
    assert hello["timestamp"].endswith("Z")  # ISO 8601, UTC
    assert events[1]["logger"] == "asyncio"
    assert events[1]["level"] == "warning"
    assert "ZeroDivisionError" in events[2]["exception"]
    assert events[3]["mode"] == "json"


def test_debug_level_lets_debug_through() -> None:
    stderr = _stderr_of(CHILD, "DEBUG")
    assert json.loads(stderr.splitlines()[0])["event"] == "filtered out"


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("verbose", process="test")


def test_terminal_gives_console_lines() -> None:
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "info"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=sub,
        env=_env(NO_COLOR="1"),
    )
    os.close(sub)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    assert "\x1b[" not in text  # NO_COLOR honoured
    hello = next(line for line in text.splitlines() if "hello" in line)
    assert "[info" in hello
    assert "fps=12.5" in hello
    assert "stream=cam1" in hello
    assert "ZeroDivisionError: division by zero" in text
    assert "mode=console" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(hello)


@pytest.fixture
def journal_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "journal.sock")
    sock = receiver(path, 30)
    yield sock, path
    sock.close()


def test_journal_stream_gives_native_entries(
    journal_socket: tuple[socket.socket, str], tmp_path: Path
) -> None:
    sock, path = journal_socket
    # What systemd does: stderr is a stream whose dev:ino is announced in $JOURNAL_STREAM.
    stderr_file = tmp_path / "stderr"
    with stderr_file.open("wb") as err:
        st = os.fstat(err.fileno())
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, "info"],
            stdin=subprocess.DEVNULL,
            stderr=err,
            env=_env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", EDGED_JOURNAL_SOCKET=path),
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, stderr_file.read_text()
    assert stderr_file.read_text() == ""  # everything went to the journal socket
    entries = [parse_entry(sock.recv(1 << 20)) for _ in range(4)]
    hello, stdlib, boom, mode = entries
    assert hello["MESSAGE"] == "hello stream=cam1 fps=12.5"
    assert hello["PRIORITY"] == "6"
    assert hello["SYSLOG_IDENTIFIER"] == "edged"
    assert hello["EDGED_STREAM"] == "cam1"
    assert hello["EDGED_FPS"] == "12.5"
    assert hello["EDGED_PROCESS"] == "worker:cpu0"
    assert hello["EDGED_LOGGER"] == "edged.test"
    assert hello["CODE_FILE"] == "<string>"
    assert hello["CODE_LINE"] == "7"
    assert hello["CODE_FUNC"] == "<module>"
    assert stdlib["MESSAGE"] == "from stdlib 7"
    assert stdlib["PRIORITY"] == "4"
    assert stdlib["CODE_LINE"] == "8"  # the caller of logging, not the bridge
    assert boom["PRIORITY"] == "3"
    assert "ZeroDivisionError" in boom["MESSAGE"]
    assert "ZeroDivisionError" in boom["EDGED_EXCEPTION"]
    assert mode["EDGED_MODE"] == "journal"


def test_journal_stream_of_another_file_is_not_the_journal(
    journal_socket: tuple[socket.socket, str], tmp_path: Path
) -> None:
    _, path = journal_socket
    other = tmp_path / "other"
    other.write_bytes(b"")
    st = os.stat(other)
    # $JOURNAL_STREAM is inherited, but stderr was redirected elsewhere: JSON, not the journal.
    stderr = _stderr_of(
        CHILD, "info", JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", EDGED_JOURNAL_SOCKET=path
    )
    assert json.loads(stderr.splitlines()[-1])["mode"] == "json"


RELEVEL = """
import logging, structlog
from edged.logs import configure_logging
module_log = structlog.get_logger("edged.module")  # like every module's `log`
configure_logging("warning", process="supervisor")
bound = structlog.get_logger("edged.handle", worker="cpu0")  # like a handle's `_log`
module_log.info("hidden 1")
bound.info("hidden 2")
logging.getLogger("aiomqtt").info("hidden 3")
configure_logging("debug", process="supervisor")  # a reload changed node.log_level
module_log.debug("shown 1")
bound.debug("shown 2")
logging.getLogger("aiomqtt").debug("shown 3")
configure_logging("error", process="supervisor")
module_log.warning("hidden 4")
bound.error("shown 4")
"""


def test_a_new_level_reaches_loggers_created_and_used_before() -> None:
    stderr = _stderr_of(RELEVEL)
    events = [json.loads(line) for line in stderr.splitlines()]
    assert [e["event"] for e in events] == ["shown 1", "shown 2", "shown 3", "shown 4"]
    assert events[1]["worker"] == "cpu0" and events[3]["worker"] == "cpu0"
