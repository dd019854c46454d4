"""The bench's subscriber: counts the daemon's detections from the far side of the broker.

Runs in the bench process. The subscriber is a `mosquitto_sub` child process that stamps each
message when it receives it, read by a thread that wakes every `READ_INTERVAL_S`, so counting costs
the measured machine little; without `mosquitto_sub` on PATH (or with `EDGED_BENCH_SUBSCRIBER=paho`)
it is paho on a thread of the bench. `close()` belongs in a `finally`: it terminates the child.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from edged.bench.broker import terminate

# The bench's daemon publishes under PREFIX/NODE (run.config_text writes them into its config).
NODE = "bench"
PREFIX = "edged"


@dataclass
class StreamCount:
    messages: int = 0
    first_frame: int = -1
    last_frame: int = -1
    first_at: float = 0.0
    last_at: float = 0.0


class _Detection(msgspec.Struct):
    """The fields of a detections payload the bench needs; the rest is skipped unparsed."""

    stream: str
    frame: int
    ts_ms: int


_decode_detection = msgspec.json.Decoder(_Detection)

# How often the reader of mosquitto_sub's output wakes: one read of everything the pipe holds
# per wake-up, not one Python wake-up per message. Latency does not depend on it (mosquitto_sub
# stamps each message when it receives it); only how soon the bench sees a count does.
READ_INTERVAL_S = 0.1
PIPE_BYTES = 1 << 20  # room for many intervals of output, so mosquitto_sub never waits on us
SUBSCRIBE_TIMEOUT_S = 10.0
SUBSCRIBER_ENV = "EDGED_BENCH_SUBSCRIBER"
# mosquitto's count of PUBLISH packets received since it started ($SYS, every `sys_interval`).
BROKER_RECEIVED = "$SYS/broker/publish/messages/received"
_BROKER_RECEIVED = BROKER_RECEIVED.encode()  # "paho": count in the bench process, as a fallback

_noted: set[str] = set()  # what was said once on stderr


class Counter:
    """Counts the daemon's detections and keeps its latest health, from the far side of the
    broker. `open_counter` picks the subscriber: `SubprocessCounter` (mosquitto_sub) or
    `PahoCounter` (paho in the bench process). Messages are counted in the window set by
    `count_between`, by the time the subscriber received them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window: tuple[float, float] | None = None
        self.total = 0
        self.seen: set[str] = set()
        self.per_stream: dict[str, StreamCount] = {}
        self.latency_ms: list[float] = []
        self.health: dict[str, Any] = {}
        self.bad_lines = 0  # messages or output lines that could not be read, skipped
        base = f"{PREFIX}/{NODE}"
        self._health_topic = f"{base}/health".encode()
        # What the broker has received in all (the bench's mosquitto says so every second,
        # `bench_broker`): the messages the daemon publishes, events and retained state too.
        self.broker_received: list[tuple[float, int]] = []  # (received at, PUBLISHes so far)
        self._topics = (f"{base}/+/detections", f"{base}/health", BROKER_RECEIVED)

    def _take(self, now: float, topic: bytes, payload: bytes | bytearray) -> None:
        """One message received at `now` (unix seconds); the caller holds `_lock`."""
        if topic == _BROKER_RECEIVED:
            try:
                self.broker_received.append((now, int(payload)))
            except ValueError:
                self.bad_lines += 1
            return
        if topic == self._health_topic:
            try:
                health = msgspec.json.decode(payload)
            except msgspec.DecodeError:
                self.bad_lines += 1
                return
            if isinstance(health, dict):
                self.health = health
            return
        if not topic.endswith(b"/detections"):
            return
        try:
            d = _decode_detection.decode(payload)
        except msgspec.DecodeError:  # ValidationError included
            self.bad_lines += 1
            return
        self.total += 1
        self.seen.add(d.stream)
        window = self._window
        if window is None or not window[0] <= now < window[1]:
            return
        count = self.per_stream.setdefault(d.stream, StreamCount())
        if count.messages == 0:
            count.first_frame, count.first_at = d.frame, now
        count.messages += 1
        count.last_frame, count.last_at = d.frame, now
        self.latency_ms.append(now * 1000.0 - d.ts_ms)

    def count_between(self, start: float, end: float) -> None:
        with self._lock:
            self._window = (start, end)
            self.per_stream.clear()
            self.latency_ms.clear()

    def frames(self) -> int:
        """Detections messages counted in the window so far."""
        with self._lock:
            return sum(c.messages for c in self.per_stream.values())

    def counted(self) -> tuple[dict[str, StreamCount], list[float], list[tuple[float, int]]]:
        """A copy of what was counted: per stream, latencies (ms), the broker's count samples."""
        with self._lock:
            per_stream = {k: StreamCount(**vars(v)) for k, v in self.per_stream.items()}
            return per_stream, list(self.latency_ms), list(self.broker_received)

    def settle(self, until: float, timeout: float = 2.0) -> None:
        """Return once everything received before `until` (unix seconds) has been counted."""

    def processes(self) -> list[psutil.Process]:
        """Processes besides the bench's own that the subscriber runs (their CPU is its CPU)."""
        return []

    def check(self) -> None:
        """Raise if the subscriber has stopped: counts would silently stop growing."""

    def close(self) -> None:
        raise NotImplementedError


def subscriber_binary() -> str | None:
    """mosquitto_sub's path, or None: not on PATH, or paho asked for in $EDGED_BENCH_SUBSCRIBER."""
    if os.environ.get(SUBSCRIBER_ENV, "").strip().lower() == "paho":
        return None
    return shutil.which("mosquitto_sub")


def open_counter(host: str, port: int) -> Counter:
    """A subscribed counter: mosquitto_sub as a child when it is on PATH, else paho."""
    binary = subscriber_binary()
    if binary is not None:
        return SubprocessCounter(binary, host, port)
    if "fallback" not in _noted:
        _noted.add("fallback")
        why = "asked for" if os.environ.get(SUBSCRIBER_ENV) else "mosquitto_sub is not on PATH"
        print(
            f"bench: counting detections with paho in the bench process ({why}); it takes more "
            "CPU from the machine being measured than mosquitto_sub (package mosquitto-clients)",
            file=sys.stderr,
        )
    return PahoCounter(host, port)


class SubprocessCounter(Counter):
    """`mosquitto_sub` as a child process, one line per message: its own receive time (`%U`,
    unix seconds with nanoseconds), the topic and the payload. A thread reads the pipe every
    `READ_INTERVAL_S` and counts what it holds in one go."""

    def __init__(self, binary: str, host: str, port: int) -> None:
        super().__init__()
        self._where = f"{host}:{port}"
        probe = f"{PREFIX}-bench-probe/{os.getpid()}-{secrets.token_hex(4)}"
        self._probe_topic = probe.encode()
        self._probe_seen = threading.Event()
        self._stop = threading.Event()
        self._read_through = 0.0  # everything printed before this time (unix s) is counted
        # Read only to explain a failure; closed in close().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        topics = [arg for topic in (*self._topics, probe) for arg in ("-t", topic)]
        self.proc = subprocess.Popen(
            [binary, "-h", host, "-p", str(port), "-q", "0", *topics, "-F", "%U %t %p"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._process: psutil.Process | None = None
        self._reader: threading.Thread | None = None
        try:
            self._process = psutil.Process(self.proc.pid)
            assert self.proc.stdout is not None
            fd = self.proc.stdout.fileno()
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            os.set_blocking(fd, False)
            self._reader = threading.Thread(
                target=self._read_loop, args=(fd,), name="bench-counter", daemon=True
            )
            self._reader.start()
            self._wait_subscribed(host, port)
        except BaseException:
            self.close()
            raise

    def _wait_subscribed(self, host: str, port: int) -> None:
        """Publish a probe to a topic mosquitto_sub also subscribed to until it prints it: then
        it is connected and subscribed (a QoS 0 message before that reaches no one)."""
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        try:
            client.connect(host, port, keepalive=30)
        except OSError as e:
            raise RuntimeError(f"could not connect to the broker at {self._where}: {e}") from e
        client.loop_start()
        try:
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
            while True:
                client.publish(self._probe_topic.decode(), b"probe", qos=0)
                if self._probe_seen.wait(2 * READ_INTERVAL_S):
                    return
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"mosquitto_sub exited with {self.proc.returncode} before subscribing "
                        f"at {self._where}: {self._errors()}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mosquitto_sub did not receive a probe message within "
                        f"{SUBSCRIBE_TIMEOUT_S:g} s: not subscribed at {self._where}? "
                        f"{self._errors()}"
                    )
        finally:
            client.disconnect()  # first: it wakes the loop, which loop_stop() waits for
            client.loop_stop()

    def _errors(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read()[-2000:].decode(errors="replace").strip() or "(no output)"
        except (OSError, ValueError):
            return "(no output)"

    def _read_loop(self, fd: int) -> None:
        tail = b""
        while True:
            started = time.time()
            chunks: list[bytes] = []
            eof = False
            while True:
                try:
                    chunk = os.read(fd, PIPE_BYTES)
                except BlockingIOError:
                    break
                except OSError:
                    eof = True
                    break
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
            if chunks:
                lines = (tail + b"".join(chunks)).split(b"\n")
                tail = lines.pop()  # an incomplete last line waits for the next read
                self._take_lines(lines)
            self._read_through = started
            if eof or self._stop.wait(READ_INTERVAL_S):
                return

    def _take_lines(self, lines: list[bytes]) -> None:
        with self._lock:
            for line in lines:
                parts = line.split(b" ", 2)
                if len(parts) != 3:
                    self.bad_lines += 1
                    continue
                stamp, topic, payload = parts
                try:
                    now = float(stamp)
                except ValueError:
                    self.bad_lines += 1
                    continue
                if topic == self._probe_topic:
                    self._probe_seen.set()
                else:
                    self._take(now, topic, payload)

    def settle(self, until: float, timeout: float = 2.0) -> None:
        # A message received before `until` was printed right away: a read that began a little
        # after it has taken it.
        deadline = time.monotonic() + timeout
        while self._read_through < until + 0.02 and time.monotonic() < deadline:
            if self._reader is None or not self._reader.is_alive():
                return
            time.sleep(0.02)

    def processes(self) -> list[psutil.Process]:
        return [] if self._process is None else [self._process]

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"mosquitto_sub (at {self._where}) exited with {self.proc.returncode} during the "
                f"run: {self._errors()}"
            )

    def close(self) -> None:
        terminate(self.proc)
        self._stop.set()
        if self._reader is not None and self._reader.is_alive():
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class PahoCounter(Counter):
    """The fallback: a paho subscriber on its own thread of the bench process."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._subscribed = threading.Event()
        self._paho = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self._paho.on_connect = self._on_connect
        self._paho.on_subscribe = lambda *a: self._subscribed.set()
        self._paho.on_message = self._on_message
        self._paho.connect(host, port, keepalive=30)
        self._paho.loop_start()
        if not self._subscribed.wait(SUBSCRIBE_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"could not subscribe to the broker at {host}:{port}")

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        # QoS 0: no acknowledgement per message, so the counting costs the machine less; on
        # a local connection nothing is lost (and a loss would only lower the count).
        client.subscribe([(topic, 0) for topic in self._topics])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.time()
        with self._lock:
            self._take(now, msg.topic.encode(), msg.payload)

    def close(self) -> None:
        self._paho.disconnect()  # first: it wakes the loop, which loop_stop() waits for
        self._paho.loop_stop()
