"""A real RTSP server for the tests (GStreamer's gst-rtsp-server), started, restarted and stopped.

Runs in the test process; the server itself is tests/support/gst_rtsp_server.py under the system
python (/usr/bin/python3), where Debian's python3-gi and gir1.2-gst-rtsp-server-1.0 live. If the
test dies, the server reads EOF on its stdin and exits. `restart()` keeps the port: a camera that
reboots comes back at the same address.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from edged.bench.broker import terminate
from tests.support.rtsp_media import H264_720, Variant, prepare

# The credentials of the fixture's /secure mount. The password is one a redaction test can grep
# for: it occurs nowhere else.
RTSP_USER = "viewer"
RTSP_PASSWORD = "Pa55-w0rd:in/url?"  # characters that a URL must percent-encode
SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")
INSTALL_HINT = (
    "the test RTSP server needs GStreamer's RTSP server for the system python: run "
    "scripts/setup.sh --dev, or apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
)


@dataclass(frozen=True)
class Mount:
    path: str  # "/traffic"
    variant: Variant = H264_720
    user: str | None = None  # Basic auth on this mount only
    password: str | None = None


class RtspServer:
    """gst-rtsp-server on 127.0.0.1, serving `mounts` (videos from tests/support/rtsp_media.py)."""

    def __init__(self, mounts: list[Mount], media: Path, cache: Path, log: Path) -> None:
        """`media`: the shared footage; `cache`: where the served videos are made (once)."""
        self.mounts = {m.path: m for m in mounts}
        self.port = 0  # chosen by the server on first start, kept on restart
        self._files = {m.path: prepare(m.variant, media, cache) for m in mounts}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = log

    def url(self, path: str, *, user: str | None = None, password: str | None = None) -> str:
        """rtsp://[user:password@]127.0.0.1:port/path (credentials percent-encoded)."""
        auth = ""
        if user is not None:
            auth = quote(user, safe="")
            if password is not None:
                auth += ":" + quote(password, safe="")
            auth += "@"
        return f"rtsp://{auth}127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait until it listens; fails loudly (with how to install it) otherwise."""
        assert self._proc is None, "already running"
        if not os.access(SYSTEM_PYTHON, os.X_OK):
            raise AssertionError(f"{SYSTEM_PYTHON} not found; {INSTALL_HINT}")
        spec = {
            "port": self.port,
            "mounts": [
                {
                    "path": m.path,
                    "file": str(self._files[m.path]),
                    "codec": m.variant.codec,
                    "user": m.user,
                    "password": m.password,
                }
                for m in self.mounts.values()
            ],
        }
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER_SCRIPT), json.dumps(spec)],
                stdin=subprocess.PIPE,  # closed by stop(), or by the kernel if the test dies
                stdout=subprocess.PIPE,
                stderr=log,
            )
        line = self._first_line(timeout)
        if not line.startswith("READY "):
            self._proc.kill()
            self._proc.wait()
            self._proc = None
            raise AssertionError(
                f"the RTSP server did not start ({line or 'no answer in time'}); "
                f"{INSTALL_HINT}\n{self._log.read_text(errors='replace')[-3000:]}"
            )
        self.port = int(line.split()[1])

    def _first_line(self, timeout: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return ""
        return self._proc.stdout.readline().decode(errors="replace").strip()

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and stop listening (a camera switched off)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        terminate(proc, timeout)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def restart(self) -> None:
        """Stop, then start on the same port (a camera that reboots)."""
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except AssertionError:
                # The old socket may linger for a moment after the process exits.
                if time.monotonic() > deadline or _port_in_use(self.port) is False:
                    raise
                time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
