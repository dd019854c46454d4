"""The native journal sender and renderer against a real AF_UNIX datagram socket in tmp_path."""

from __future__ import annotations

import array
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from edged.systemd.journal import (
    JournalRenderer,
    JournalSender,
    encode_field,
    field_name,
    stderr_is_journal,
)
from tests.support.datagram import receiver
from tests.systemd.journal_parse import parse_entry, parse_fields


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[socket.socket, JournalSender]]:
    path = str(tmp_path / "journal.sock")
    sock = receiver(path, 10)
    sender = JournalSender(path)
    yield sock, sender
    sender.close()
    sock.close()


def test_renderer_sends_fields_and_drops_the_event(
    journal: tuple[socket.socket, JournalSender],
) -> None:
    sock, sender = journal
    renderer = JournalRenderer(sender)
    event = {
        "event": "stream started",
        "level": "info",
        "logger": "edged.supervisor",
        "process": "supervisor",
        "pid": 42,
        "timestamp": "2026-01-01T00:00:00Z",
        "stream": "cam1",
        "worker": "cpu0",
        "config-gen": 7,
        "url": "rtsp://cam1/live main",
        "pathname": "/opt/edged/supervisor.py",
        "lineno": 12,
        "func_name": "start",
        "skipped": None,
    }
    with pytest.raises(structlog.DropEvent):
        renderer(None, "info", event)
    entry = parse_entry(sock.recv(65536))
    assert entry == {
        "MESSAGE": "stream started stream=cam1 worker=cpu0 config-gen=7 "
        "url='rtsp://cam1/live main' skipped=None",
        "PRIORITY": "6",
        "SYSLOG_IDENTIFIER": "edged",
        "CODE_FILE": "/opt/edged/supervisor.py",
        "CODE_LINE": "12",
        "CODE_FUNC": "start",
        "EDGED_LOGGER": "edged.supervisor",
        "EDGED_PROCESS": "supervisor",
        "EDGED_STREAM": "cam1",
        "EDGED_WORKER": "cpu0",
        "EDGED_CONFIG_GEN": "7",
        "EDGED_URL": "rtsp://cam1/live main",
    }


def test_multiline_values_use_the_binary_form(journal: tuple[socket.socket, JournalSender]) -> None:
    sock, sender = journal
    renderer = JournalRenderer(sender)
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad'
    with pytest.raises(structlog.DropEvent):
        renderer(None, "error", {"event": "worker died", "level": "error", "exception": tb})
    raw = sock.recv(65536)
    assert b"MESSAGE\n" in raw  # binary form: KEY, newline, u64 length
    entry = parse_entry(raw)
    assert entry["MESSAGE"] == "worker died\n" + tb
    assert entry["EDGED_EXCEPTION"] == tb
    assert entry["PRIORITY"] == "3"


def test_encode_field_forms() -> None:
    assert encode_field("A", "b") == b"A=b\n"
    assert encode_field("A", "b\nc") == b"A\n" + (3).to_bytes(8, "little") + b"b\nc\n"
    assert parse_fields(encode_field("X", "=\n=") + encode_field("Y", "")) == [
        ("X", "=\n="),
        ("Y", ""),
    ]


def test_field_names_are_what_journald_accepts() -> None:
    assert field_name("stream") == "EDGED_STREAM"
    assert field_name("edged_stream") == "EDGED_STREAM"
    assert field_name("fps.in") == "EDGED_FPS_IN"
    assert len(field_name("x" * 100)) == 64


def test_oversized_entry_goes_through_a_sealed_memfd(
    journal: tuple[socket.socket, JournalSender],
) -> None:
    sock, sender = journal
    big = "x" * (4 * 1024 * 1024)  # larger than any default AF_UNIX datagram limit
    assert sender.send([("MESSAGE", big), ("PRIORITY", "6")])
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
    assert data == b""
    level, kind, payload = ancdata[0]
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fds.frombytes(payload[: fds.itemsize])
    fd = fds[0]
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK
        size = os.fstat(fd).st_size
        entry = parse_entry(os.pread(fd, size, 0))
    finally:
        os.close(fd)
    assert entry["MESSAGE"] == big


def test_unreachable_journal_falls_back_to_a_prefixed_line(tmp_path: Path) -> None:
    renderer = JournalRenderer(JournalSender(str(tmp_path / "no-journald-here")))
    line = renderer(None, "warning", {"event": "slow\nstream", "level": "warning", "fps": 3})
    # every line keeps the syslog prefix, so the journal stream still gets the priority
    assert line == "<4>slow\n<4>stream fps=3"


def test_stderr_is_journal_matches_dev_and_inode(tmp_path: Path) -> None:
    target = tmp_path / "stream"
    other = tmp_path / "other"
    other.write_bytes(b"")
    with target.open("wb") as f:
        st = os.fstat(f.fileno())
        fd = f.fileno()
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, fd=fd)
        o = os.stat(other)
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{o.st_dev}:{o.st_ino}"}, fd=fd)
        assert not stderr_is_journal({}, fd=fd)
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, fd=fd)
