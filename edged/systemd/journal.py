"""journald's native protocol in pure Python, and a structlog renderer that uses it.

Runs in every edged process that logs while its stderr is the journal: the supervisor and each
spawned worker open their own datagram socket (journald adds `_PID`, so a line is attributed to
the process that wrote it). Nothing here raises into the caller: if journald is gone or refuses a
datagram, the renderer hands back a plain `<priority>` line instead, which the logger writes to
stderr, and stderr is the journal stream. A crash of journald therefore costs structured fields,
never the daemon and never the line.

Protocol (systemd docs/JOURNAL_NATIVE_PROTOCOL.md): one datagram per entry to
/run/systemd/journal/socket, each field `KEY=value\\n`, or `KEY\\n<u64 LE length><bytes>\\n` for a
value holding a newline; an entry too big for one datagram goes as a sealed memfd passed with
SCM_RIGHTS.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import re
import socket
import struct
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# Override of the socket path: tests, and units with LogNamespace=<ns>, whose journald listens on
# /run/systemd/journal.<ns>/socket (set it with Environment= in a drop-in).
JOURNAL_SOCKET_ENV = "EDGED_JOURNAL_SOCKET"
SYSLOG_IDENTIFIER = "edged"
FIELD_PREFIX = "EDGED_"

# structlog level name -> syslog priority (journald's PRIORITY field, also the `<N>` line prefix).
PRIORITIES: Mapping[str, int] = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

# Keys of the event dict that become journald's own fields, or that journald already records
# itself (timestamp, pid), so they are not repeated as EDGED_* fields.
_RESERVED = frozenset(
    {"event", "level", "timestamp", "pid", "exception", "pathname", "lineno", "func_name"}
)
_FIELD_BAD_CHARS = re.compile(r"[^A-Z0-9_]")
_JOURNAL_FIELD_MAX = 64


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """True when `fd` is the stream systemd connected to the journal ($JOURNAL_STREAM=dev:ino).

    Checking the device and inode, not just the variable's presence, matters: the variable is
    inherited by anything edged starts and survives `edged run 2>file` inside a unit, where the
    file, not the journal, is what the operator asked for.
    """
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def field_name(key: str) -> str:
    """A custom field name journald accepts: upper case, [A-Z0-9_], EDGED_ prefix, <= 64 chars."""
    name = _FIELD_BAD_CHARS.sub("_", key.upper())
    if not name.startswith(FIELD_PREFIX):
        name = FIELD_PREFIX + name
    return name[:_JOURNAL_FIELD_MAX]


def encode_field(key: str, value: str | bytes) -> bytes:
    """One field in the native format; the binary form when the value holds a newline."""
    data = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
    name = key.encode("ascii")
    if b"\n" in data:
        return name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name + b"=" + data + b"\n"


def encode_entry(fields: Iterable[tuple[str, str | bytes]]) -> bytes:
    return b"".join(encode_field(key, value) for key, value in fields)


class JournalSender:
    """Sends entries to journald's native socket; `send` returns False instead of raising.

    One unconnected socket per process, created on first use: `sendto` names the path every
    time, so a journald restart (new socket inode at the same path) needs no reconnect.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get(JOURNAL_SOCKET_ENV) or JOURNAL_SOCKET
        self._sock: socket.socket | None = None

    def send(self, fields: Iterable[tuple[str, str | bytes]]) -> bool:
        data = encode_entry(fields)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                self._sock.sendto(data, self.path)
            except OSError as exc:
                # A long traceback can exceed the socket's maximum datagram size; the protocol's
                # answer is a sealed memfd carrying the entry.
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self._send_memfd(self._sock, data)
        except OSError:
            return False
        return True

    def _send_memfd(self, sock: socket.socket, data: bytes) -> None:
        fd = os.memfd_create("edged-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            # journald only accepts a memfd that can no longer change under it.
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = array.array("i", [fd]).tobytes()
            sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _text(value: object) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    return str(value)


def _kv(value: object) -> str:
    text = str(value)
    # Quote only what would be ambiguous when read back by eye or by `key=value` tooling.
    if text == "" or any(c in text for c in ' "=\n'):
        return repr(text)
    return text


def message_line(event_dict: Mapping[str, Any]) -> str:
    """`event key=value ...`: what `journalctl` shows, readable without `-o verbose`."""
    parts = [str(event_dict.get("event", ""))]
    parts += [
        f"{key}={_kv(value)}"
        for key, value in event_dict.items()
        if key not in _RESERVED and key not in ("logger", "process")
    ]
    line = " ".join(parts)
    exception = event_dict.get("exception")
    if exception:
        line += "\n" + str(exception)
    return line


class JournalRenderer:
    """Final structlog processor: sends the entry to journald, then drops the event.

    If the send fails it returns a `<priority>message` line instead, so the logger writes it to
    stderr (the journal stream under systemd, where the prefix still sets the priority).
    Expects `level` (structlog.processors.add_log_level) and, when present, `pathname`,
    `lineno`, `func_name` (structlog.processors.CallsiteParameterAdder) and `exception`
    (structlog.processors.format_exc_info).
    """

    def __init__(
        self,
        sender: JournalSender | None = None,
        *,
        identifier: str = SYSLOG_IDENTIFIER,
    ) -> None:
        self.sender = sender if sender is not None else JournalSender()
        self.identifier = identifier

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> str:
        level = str(event_dict.get("level", method_name)).lower()
        priority = PRIORITIES.get(level, 6)
        message = message_line(event_dict)
        fields: list[tuple[str, str | bytes]] = [
            ("MESSAGE", message),
            ("PRIORITY", str(priority)),
            ("SYSLOG_IDENTIFIER", self.identifier),
        ]
        for key, journal_key in (
            ("pathname", "CODE_FILE"),
            ("lineno", "CODE_LINE"),
            ("func_name", "CODE_FUNC"),
        ):
            if event_dict.get(key) is not None:
                fields.append((journal_key, _text(event_dict[key])))
        if event_dict.get("exception"):
            fields.append((FIELD_PREFIX + "EXCEPTION", _text(event_dict["exception"])))
        fields += [
            (field_name(key), _text(value))
            for key, value in event_dict.items()
            if key not in _RESERVED and value is not None
        ]
        if self.sender.send(fields):
            raise structlog.DropEvent
        # Every line gets the prefix: journald splits the stream at newlines, and a traceback's
        # lines would otherwise land at the default priority.
        return "\n".join(f"<{priority}>{line}" for line in message.split("\n"))
