"""One run of the real daemon under load, counted from the far side of a real broker.

Runs in the bench process (a short-lived command). It writes a config into a temporary folder,
starts `python -m edged run` as a child process (the supervisor, which spawns its workers as in
production), and counts the detections that arrive in a time window after a warm-up through the
bench's subscriber (`edged.bench.counter`: a `mosquitto_sub` child, so counting costs the measured
machine little). CPU and RSS of the supervisor, each worker, the broker (when the bench started
it) and the bench itself (with its mosquitto_sub) come from psutil at the window's edges (and,
for the ascend bench, the CPU the pyACL emulator spent standing in for each worker's device,
from a `DeviceClock`). If the bench crashes or is interrupted, `finally` blocks close the
subscriber, and `DaemonRun.stop()` sends SIGTERM to the daemon and SIGKILL to whatever is left
of it after a grace period; nothing outlives the bench.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from edged.bench.counter import NODE, PREFIX, StreamCount, open_counter
from edged.stats import percentiles
from edged.urls import split
from edged.worker.scheduling import FFMPEG_THREAD_PREFIX, ThreadRole


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
    threads: int | None  # None: no `threads` key, the daemon's default ("auto")
    realtime: bool
    detect_fps: float
    broker_url: str
    warmup_s: float
    duration_s: float
    # Extra `key = value` lines (TOML) for every [[workers]] / [[streams]] table: lever trials.
    worker_extra: tuple[str, ...] = ()
    stream_extra: tuple[str, ...] = ()
    mqtt_extra: tuple[str, ...] = ()
    # "cpu" (workers cpu0, cpu1, ...) or "ascend" (workers npu0, ... on devices device, device+1)
    backend: str = "cpu"
    device: int = 0
    # Variables added to the daemon's environment (the pyACL emulator's settings).
    env: tuple[tuple[str, str], ...] = ()


class DeviceClock(Protocol):
    """CPU a worker spent standing in for a device (the pyACL emulator's count), read at the
    counting window's edges: pid -> (when it was counted, monotonic s; CPU seconds so far).
    Workers it knows nothing about are left out."""

    def read(self, pids: Sequence[int]) -> Mapping[int, tuple[float, float]]: ...


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
    pids: dict[str, int] = field(default_factory=dict)  # each process's name above -> its pid
    # CPU seconds each worker spent in the window standing in for its device (DeviceClock);
    # part of its cpu_pct. Only workers the clock knows.
    stand_in_cpu_s: dict[str, float] = field(default_factory=dict)
    # MQTT messages the daemon published a second in the window (detections, events, retained
    # state), from the broker's own count; None with a broker that does not say (--broker).
    published_per_s: float | None = None
    # CPU seconds the workers' threads spent in the window, by the role in their names
    # (`edged.worker.scheduling.ThreadRole` values; "other" for unnamed threads), threads that
    # ended in the window left out (`cpu_by_role`). Empty where the kernel does not show threads.
    thread_cpu_s: dict[str, float] = field(default_factory=dict)


def config_text(plan: RunPlan, state_dir: Path) -> str:
    lines = [
        "[node]",
        f'name = "{NODE}"',
        f'state_dir = "{state_dir}"',
        # Everything else is the default config: health every 30 s (the bench reads the first,
        # sent once the workers are ready, for their names), log level info.
        "",
        "[mqtt]",
        f'url = "{plan.broker_url}"',
        f'topic_prefix = "{PREFIX}"',
        *plan.mqtt_extra,
    ]
    prefix = worker_prefix(plan)
    for w in range(plan.workers):
        lines += [
            "",
            "[[workers]]",
            f'name = "{prefix}{w}"',
            *([] if plan.backend == "cpu" else [f'backend = "{plan.backend}"']),
            *([] if plan.backend == "cpu" else [f"device = {plan.device + w}"]),
            f'model = "{plan.model}"',
            *([] if plan.threads is None else [f"threads = {plan.threads}"]),
            *plan.worker_extra,
        ]
    for i, stream in enumerate(plan.streams):
        lines += [
            "",
            "[[streams]]",
            f'name = "{stream.name}"',
            f'source = "{stream.video}"',
            f'worker = "{prefix}{i % plan.workers}"',
            "loop = true",
            f"realtime = {'true' if plan.realtime else 'false'}",
            f"detect_fps = {plan.detect_fps}",
            "min_score = 0.4",
            *plan.stream_extra,
        ]
    return "\n".join(lines) + "\n"


def worker_prefix(plan: RunPlan) -> str:
    """Worker names: cpu0, cpu1, ... on the CPU; npu0, ... on an accelerator."""
    return "cpu" if plan.backend == "cpu" else "npu"


def _cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            t = process.cpu_times()
        except psutil.Error:
            return float("nan")
        total += float(t.user + t.system)
    return total


def thread_cpu(pids: Sequence[int]) -> dict[int, tuple[str, float]]:
    """Each thread of the processes: thread id -> (its role, CPU seconds so far). The role is
    the start of the thread's name (`src:door` -> "src"; FFmpeg's own decoder threads, `av:...`,
    decode for a source: "src"); a thread without a role in its name has "other". A process or
    thread that ends while it is read is left out; not Linux: empty."""
    roles = {role.value for role in ThreadRole}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, tuple[str, float]] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    stat = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            # pid (comm) state ... : comm may hold spaces and parentheses, so cut at the last ')'.
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            role = comm.split(":", 1)[0]
            if role == FFMPEG_THREAD_PREFIX:
                role = ThreadRole.SOURCE.value
            cpu = (int(fields[11]) + int(fields[12])) / tick
            out[int(tid)] = (role if role in roles else "other", cpu)
    return out


def cpu_by_role(
    first: Mapping[int, tuple[str, float]], last: Mapping[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds by role between two `thread_cpu` readings, of the threads alive at the
    second (one started in between counts from zero). A thread that ended in between is
    missing: its CPU is only in its process's total."""
    out: dict[str, float] = {}
    for tid, (role, cpu) in last.items():
        out[role] = out.get(role, 0.0) + cpu - first.get(tid, (role, 0.0))[1]
    return out


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
        env = dict(os.environ, PYTHONUNBUFFERED="1", **dict(self.plan.env))
        if env.get("PYTHONPATH"):
            # The daemon runs in `workdir`: a relative entry (`tests/emulator`) must still hold.
            entries = env["PYTHONPATH"].split(os.pathsep)
            env["PYTHONPATH"] = os.pathsep.join(str(Path(e).resolve()) for e in entries if e)
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

    def boot_error(self) -> str | None:
        """Why a worker could not start (its "worker cannot start" log event), if one could
        not: the supervisor backs off and retries, so waiting for detections would only time
        out."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if '"worker cannot start"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "worker cannot start":
                return str(event.get("reason", "no reason given"))
        return None

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
    device_clock: DeviceClock | None = None,
) -> RunResult:
    """Start the daemon, warm up, count for `plan.duration_s`, stop it; return the figures.
    With a `device_clock`, the CPU each worker spent standing in for its device is read at the
    window's edges too (`RunResult.stand_in_cpu_s`)."""
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
            if names <= counter.seen:
                return True
            reason = daemon.boot_error()
            if reason is not None:
                raise RuntimeError(f"a worker could not start: {reason}")
            return False

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
        worker_pids = [p[0].pid for name, p in procs.items() if name.startswith("worker pid")]
        stand0 = device_clock.read(worker_pids) if device_clock is not None else {}
        threads0 = thread_cpu(worker_pids)
        rss_peak: dict[str, float] = {}
        while time.time() < end:
            _sleep_until(min(end, time.time() + 1.0), daemon)
            counter.check()
            elapsed = time.time() - start
            frames = counter.frames()
            progress(
                f"{label}: {elapsed:5.1f}/{plan.duration_s:g} s, {frames} frames, "
                f"{frames / max(elapsed, 1e-3):6.1f} frames/s"
            )
            for name, p in procs.items():
                rss_peak[name] = max(rss_peak.get(name, 0.0), _rss_mb(p))
        wall = time.time() - start
        cpu1 = {name: _cpu_seconds(p) for name, p in procs.items()}
        machine1 = psutil.cpu_times()
        stand1 = device_clock.read(worker_pids) if device_clock is not None else {}
        threads1 = thread_cpu(worker_pids)
        counter.settle(end)  # what arrived before the window closed and is not counted yet
        counter.check()
        if counter.bad_lines:
            print(
                f"{label}: skipped {counter.bad_lines} unreadable subscriber message(s)",
                file=sys.stderr,
            )
        per_stream, latency, broker_counts = counter.counted()
        published = _rate_between(broker_counts, start, end)
        frames = sum(c.messages for c in per_stream.values())
        busy = (_busy(machine1) - _busy(machine0)) / wall * 100.0
        health = dict(counter.health)
        names_by_pid = _worker_names(health)
        cpu_pct: dict[str, float] = {}
        rss: dict[str, float] = {}
        pids: dict[str, int] = {}
        stand_in: dict[str, float] = {}
        for name, p in procs.items():
            shown = names_by_pid.get(p[0].pid, name) if name.startswith("worker pid") else name
            cpu_pct[shown] = (cpu1[name] - cpu0[name]) / wall * 100.0
            rss[shown] = rss_peak.get(name, _rss_mb(p))
            pids[shown] = p[0].pid
            if p[0].pid in stand0 and p[0].pid in stand1:
                stand_in[shown] = _in_window(stand0[p[0].pid], stand1[p[0].pid], wall)
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
            pids=pids,
            stand_in_cpu_s=stand_in,
            published_per_s=published,
            thread_cpu_s=cpu_by_role(threads0, threads1),
        )
    finally:
        counter.close()
        code = daemon.stop()
        if code not in (0, None):
            progress(f"{label}: edged exited with {code}")


def _rate_between(samples: list[tuple[float, int]], start: float, end: float) -> float | None:
    """Growth a second of a counter read now and then (time, value), between its first and its
    last reading inside [start, end]; None with fewer than two readings there."""
    inside = [(t, v) for t, v in samples if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (t0, v0), (t1, v1) = inside[0], inside[-1]
    return (v1 - v0) / (t1 - t0)


def _in_window(first: tuple[float, float], last: tuple[float, float], wall: float) -> float:
    """CPU seconds counted between two readings, scaled to the window's length: a clock counts
    at its own instants (every ~0.1 s), a little off the window's edges."""
    (t0, cpu0), (t1, cpu1) = first, last
    if t1 <= t0:
        return float("nan")
    return (cpu1 - cpu0) * wall / (t1 - t0)


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
    parts = split(url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


# Latency samples kept in a run's JSON document (a seeded sample of them past this many).
LATENCY_SAMPLES_KEPT = 2000


def measured(result: RunResult) -> dict[str, Any]:
    """What every bench run document carries from a run, CPU or Ascend: its frames and rate,
    per-stream counts, latency, CPU and memory by process and the rest of the machine's CPU."""
    ours = sum(v for v in result.cpu_pct.values() if not math.isnan(v))
    samples = result.latency_ms
    if len(samples) > LATENCY_SAMPLES_KEPT:
        samples = random.Random(0).sample(samples, LATENCY_SAMPLES_KEPT)
    return {
        "seconds": round(result.seconds, 3),
        "frames": result.frames,
        "fps": round(result.fps, 2),
        "per_stream": {
            name: {"messages": c.messages, "fps": round(c.messages / result.seconds, 2)}
            for name, c in sorted(result.per_stream.items())
        },
        "latency_ms": percentiles(result.latency_ms),
        "latency_samples_ms": [round(s, 2) for s in samples],
        "cpu_pct": {k: round(v, 2) for k, v in result.cpu_pct.items()},
        "rss_mb": {k: round(v, 1) for k, v in result.rss_mb.items()},
        "machine_busy_pct": round(result.machine_busy_pct, 1),
        "others_pct": round(max(0.0, result.machine_busy_pct - ours), 1),
    }
