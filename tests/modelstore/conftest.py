"""A real HTTP server on 127.0.0.1 for the fetch tests, and a port where nothing listens."""

from __future__ import annotations

import functools
import http.server
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading early (the oversized-download test) is expected here;
        # anything else still prints its traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FileServer:
    """Serves one folder over HTTP from a thread; `url(name)` is the address of a file in it."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._server = _Server(("127.0.0.1", 0), handler)
        # A short poll interval: shutdown() waits up to one interval, at every test's teardown.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{name}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def serve() -> Iterator[Any]:
    """`serve(folder)` starts a server on that folder; all are stopped after the test."""
    servers: list[FileServer] = []

    def start(root: Path) -> FileServer:
        server = FileServer(root)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def model_server(serve: Any, model_path: Path) -> FileServer:
    """The shared model folder served read-only, as the release server would."""
    server: FileServer = serve(model_path.parent)
    return server


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A URL on a port that is bound but not listening: connecting is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}/yolox_nano.onnx"
    sock.close()
