"""One run of the real daemon under load, counted from the far side of a real broker.

Runs in the bench process (a short-lived command). It writes a config into a temporary folder,
starts `python -m edged run` as a child process (the supervisor, which spawns its workers as in
production), subscribes to the detections and counts what arrives in a time window after a
warm-up. The subscriber is a `mosquitto_sub` child process that stamps each message when it
receives it, read by a thread that wakes every `READ_INTERVAL_S`, so counting costs the measured
machine little; without `mosquitto_sub` on PATH it is paho on a thread of the bench. CPU and RSS of
the supervisor, each worker, the broker (when the bench started it) and the bench itself (with its
mosquitto_sub) come from psutil at the window's edges. If the bench crashes or is interrupted,
`finally` blocks terminate mosquitto_sub, and `DaemonRun.stop()` sends SIGTERM to the daemon and
SIGKILL to whatever is left of it after a grace period; nothing outlives the bench.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

NODE = "bench"
PREFIX = "edged"


@dataclass(frozen=True)
class StreamPlan:
    name: str
    video: str
    fps: float  # the file's rate (what realtime playback paces to)
    decode_ms: float = 0.0  # its measured decode cost, core-ms a frame


@dataclass(frozen=True)
class RunPlan:
    """What one daemon run carries: its streams, their mode, and how work maps to processes."""

    streams: tuple[StreamPlan, ...]
    model: str
    workers: int
    threads: int
    realtime: bool
    detect_fps: float
    broker_url: str
    warmup_s: float
    duration_s: float
    # Extra `key = value` lines (TOML) for every [[workers]] / [[streams]] table: lever trials.
    worker_extra: tuple[str, ...] = ()
    stream_extra: tuple[str, ...] = ()
    mqtt_extra: tuple[str, ...] = ()


@dataclass
class StreamCount:
    messages: int = 0
    first_frame: int = -1
    last_frame: int = -1
    first_at: float = 0.0
    last_at: float = 0.0


@dataclass
class RunResult:
    streams: int
    seconds: float
    frames: int
    fps: float
    latency_ms: list[float]
    per_stream: dict[str, StreamCount]
    cpu_pct: dict[str, float]  # % of one core over the window
    rss_mb: dict[str, float]
    machine_busy_pct: float  # all processes on the box, % of one core (cores x 100 = all busy)
    log_tail: str = ""
    health: dict[str, Any] = field(default_factory=dict)


def config_text(plan: RunPlan, state_dir: Path) -> str:
    lines = [
        "[node]",
        f'name = "{NODE}"',
        f'state_dir = "{state_dir}"',
        "health_interval = 1.0",
        'log_level = "warning"',
        "",
        "[mqtt]",
        f'url = "{plan.broker_url}"',
        f'topic_prefix = "{PREFIX}"',
        *plan.mqtt_extra,
    ]
    for w in range(plan.workers):
        lines += [
            "",
            "[[workers]]",
            f'name = "cpu{w}"',
            f'model = "{plan.model}"',
            f"threads = {plan.threads}",
            *plan.worker_extra,
        ]
    for i, stream in enumerate(plan.streams):
        lines += [
            "",
            "[[streams]]",
            f'name = "{stream.name}"',
            f'source = "{stream.video}"',
            f'worker = "cpu{i % plan.workers}"',
            "loop = true",
            f"realtime = {'true' if plan.realtime else 'false'}",
            f"detect_fps = {plan.detect_fps}",
            "min_score = 0.4",
            *plan.stream_extra,
        ]
    return "\n".join(lines) + "\n"


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
SUBSCRIBER_ENV = "EDGED_BENCH_SUBSCRIBER"  # "paho": count in the bench process, as a fallback

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
        self._topics = (f"{base}/+/detections", f"{base}/health")

    def _take(self, now: float, topic: bytes, payload: bytes | bytearray) -> None:
        """One message received at `now` (unix seconds); the caller holds `_lock`."""
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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
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
        self._client.disconnect()  # first: it wakes the loop, which loop_stop() waits for
        self._client.loop_stop()


def _cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            t = process.cpu_times()
        except psutil.Error:
            return float("nan")
        total += float(t.user + t.system)
    return total


def _rss_mb(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            total += float(process.memory_info().rss) / 2**20
        except psutil.Error:
            return float("nan")
    return total


class DaemonRun:
    """`python -m edged run` on a written config, in `workdir`."""

    def __init__(self, workdir: Path, plan: RunPlan) -> None:
        self.workdir = workdir
        self.plan = plan
        self.config = workdir / "config.toml"
        self.config.write_text(config_text(plan, workdir / "state"))
        self.log_path = workdir / "edged.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edged", "run", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.workdir,
            )

    def processes(self) -> dict[str, psutil.Process]:
        """The supervisor and its spawned workers, named as the health message names them."""
        assert self.proc is not None
        supervisor = psutil.Process(self.proc.pid)
        found = {"supervisor": supervisor}
        try:
            children = supervisor.children(recursive=False)
        except psutil.Error:
            children = []
        for child in children:
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "spawn_main" in cmdline:
                found[f"worker pid {child.pid}"] = child
        return found

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        for child in descendants:
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    child.kill()
            except psutil.Error:
                pass
        return code


Progress = Callable[[str], None]


def _wait(predicate: Callable[[], bool], timeout: float, what: str, daemon: DaemonRun) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if not daemon.alive():
            raise RuntimeError(f"edged exited while waiting for {what}:\n{daemon.log_tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}:\n{daemon.log_tail()}")


def run_daemon(
    workdir: Path,
    plan: RunPlan,
    progress: Progress,
    *,
    broker_process: psutil.Process | None = None,
) -> RunResult:
    """Start the daemon, warm up, count for `plan.duration_s`, stop it; return the figures."""
    host, port = _host_port(plan.broker_url)
    workdir.mkdir(parents=True, exist_ok=True)
    daemon = DaemonRun(workdir, plan)
    counter = open_counter(host, port)  # closed in the `finally` below, whatever happens
    mode = f"realtime at {plan.detect_fps:g} detections/s" if plan.realtime else "saturation"
    label = f"{len(plan.streams)} stream(s), {mode}"
    try:
        daemon.start()
        names = {s.name for s in plan.streams}
        progress(f"{label}: starting the daemon")

        def every_stream_seen() -> bool:
            counter.check()
            return names <= counter.seen

        _wait(every_stream_seen, 120, "detections from every stream", daemon)
        warm_end = time.time() + plan.warmup_s
        while time.time() < warm_end:
            progress(f"{label}: warming up, {warm_end - time.time():4.1f} s left")
            _sleep_until(min(warm_end, time.time() + 1.0), daemon)
        procs = {name: [p] for name, p in daemon.processes().items()}
        if broker_process is not None:
            procs["mosquitto"] = [broker_process]
        # The bench process and the subscriber it runs (mosquitto_sub), counted together.
        procs["bench (subscriber)"] = [psutil.Process(), *counter.processes()]
        start = time.time()
        end = start + plan.duration_s
        counter.count_between(start, end)
        cpu0 = {name: _cpu_seconds(p) for name, p in procs.items()}
        machine0 = psutil.cpu_times()
        rss_peak: dict[str, float] = {}
        while time.time() < end:
            _sleep_until(min(end, time.time() + 1.0), daemon)
            counter.check()
            elapsed = time.time() - start
            with counter._lock:
                frames = sum(c.messages for c in counter.per_stream.values())
            progress(
                f"{label}: {elapsed:5.1f}/{plan.duration_s:g} s, {frames} frames, "
                f"{frames / max(elapsed, 1e-3):6.1f} frames/s"
            )
            for name, p in procs.items():
                rss_peak[name] = max(rss_peak.get(name, 0.0), _rss_mb(p))
        wall = time.time() - start
        cpu1 = {name: _cpu_seconds(p) for name, p in procs.items()}
        machine1 = psutil.cpu_times()
        counter.settle(end)  # what arrived before the window closed and is not counted yet
        counter.check()
        if counter.bad_lines:
            print(
                f"{label}: skipped {counter.bad_lines} unreadable subscriber message(s)",
                file=sys.stderr,
            )
        with counter._lock:
            per_stream = {k: StreamCount(**vars(v)) for k, v in counter.per_stream.items()}
            latency = list(counter.latency_ms)
        frames = sum(c.messages for c in per_stream.values())
        busy = (_busy(machine1) - _busy(machine0)) / wall * 100.0
        health = dict(counter.health)
        names_by_pid = _worker_names(health)
        cpu_pct: dict[str, float] = {}
        rss: dict[str, float] = {}
        for name, p in procs.items():
            shown = names_by_pid.get(p[0].pid, name) if name.startswith("worker pid") else name
            cpu_pct[shown] = (cpu1[name] - cpu0[name]) / wall * 100.0
            rss[shown] = rss_peak.get(name, _rss_mb(p))
        return RunResult(
            streams=len(plan.streams),
            seconds=wall,
            frames=frames,
            fps=frames / wall,
            latency_ms=latency,
            per_stream=per_stream,
            cpu_pct=cpu_pct,
            rss_mb=rss,
            machine_busy_pct=busy,
            health=health,
        )
    finally:
        counter.close()
        code = daemon.stop()
        if code not in (0, None):
            progress(f"{label}: edged exited with {code}")


def _busy(t: Any) -> float:
    """CPU seconds spent by everything on the machine (not idle, not waiting for I/O)."""
    idle = float(t.idle) + float(getattr(t, "iowait", 0.0))
    return (
        float(sum(t))
        - idle
        - float(getattr(t, "guest", 0.0))
        - float(getattr(t, "guest_nice", 0.0))
    )


def _worker_names(health: dict[str, Any]) -> dict[int, str]:
    workers = health.get("workers", {})
    return {
        int(w["pid"]): f"worker {name}"
        for name, w in workers.items()
        if isinstance(w, dict) and w.get("pid")
    }


def _sleep_until(deadline: float, daemon: DaemonRun) -> None:
    while time.time() < deadline:
        if not daemon.alive():
            raise RuntimeError(f"edged exited during the run:\n{daemon.log_tail()}")
        time.sleep(min(0.1, max(0.0, deadline - time.time())))


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host:
        return rest, 1883
    return host.strip("[]"), int(port)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}
