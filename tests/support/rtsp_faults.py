"""Misbehaving cameras the tests write themselves: plain sockets, each in its own thread.

Runs in the test process. `SilentServer` accepts TCP connections and never answers (a camera
that hangs while opening). `Proxy` forwards to a real RTSP server and can misbehave on demand:
`freeze()` stops passing the camera's data but keeps every socket open (a frozen camera),
`cut()` closes every connection mid-stream, and `close_after_bytes` closes each connection by
itself once that much video went through (a camera that drops its clients).
"""

from __future__ import annotations

import contextlib
import socket
import threading


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


class SilentServer:
    """Accepts every connection, reads nothing, writes nothing, closes nothing until `close()`."""

    def __init__(self) -> None:
        self._listener = _listener()
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def url(self, path: str = "/stream") -> str:
        return f"rtsp://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.accepted.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Proxy:
    """A TCP proxy in front of `upstream_port` (RTSP over TCP carries the video through it)."""

    def __init__(self, upstream_port: int, close_after_bytes: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.close_after_bytes = close_after_bytes
        self.bytes_down = 0  # camera -> client, over every connection so far
        self.connections = 0
        self._listener = _listener()
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept, name="proxy", daemon=True)
        self._accept_thread.start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"rtsp://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    def freeze(self) -> None:
        """Stop passing the camera's data; every socket stays open."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """Close every open connection now (both sides), mid-stream."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _close(client)
            _close(upstream)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()  # the camera behind is down: so is this one
                continue
            with self._lock:
                self.connections += 1
                self._pairs.append((client, upstream))
            for args in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        source.settimeout(0.1)
        sent = 0
        try:
            while not self._closed.is_set():
                if downstream and not self._flowing.is_set():
                    self._flowing.wait(0.1)  # frozen: leave the camera's data unread
                    continue
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                sink.sendall(data)
                if downstream:
                    sent += len(data)
                    with self._lock:
                        self.bytes_down += len(data)
                    if self.close_after_bytes is not None and sent >= self.close_after_bytes:
                        break
        except OSError:
            pass
        _close(source)
        _close(sink)

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.cut()
        self._accept_thread.join(5)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
