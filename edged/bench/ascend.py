"""`edged bench --backend ascend`: the real daemon with Ascend workers, and the host's own CPU.

Runs in the bench process (a short-lived command). For each stream count it runs the daemon as
the CPU bench does (`run.run_daemon`: a written config, `edged run`, a real broker, the same
subscriber counting the same window), with `backend = "ascend"` workers on `--device` (one
worker a device). There is no limit: the device's decode, resize and inference cannot be timed
on the host, so it reports frames/s, latency and the CPU each of our processes spends per frame.

The workers' `acl` may be the emulator of the tests (`tests/emulator` on PYTHONPATH,
docs/ascend.md), which spends host CPU standing in for the device. The bench never imports it:
it adds `ACL_EMU_STATS_INTERVAL` and `ACL_EMU_REPORT_DIR` to the daemon's environment (unless
they are set already; the real pyACL ignores them), and where a worker's
`acl-<pid>.stats.json` appears, reads it at both edges of the counting window and leaves the
stand-in CPU out of the worker's figure. Without that file the worker runs the real pyACL and
its CPU is reported as measured. After each run the emulator's own reports (`acl-<pid>.json`,
written at the workers' `acl.finalize`) give its mode and any broken rule or leak. A crash or
Ctrl-C stops the daemon and the broker as in the CPU bench; the temporary folder (and the
emulator's files in it, unless ACL_EMU_REPORT_DIR named another) is removed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edged import __version__

STATS_ENV = "ACL_EMU_STATS_INTERVAL"
REPORT_DIR_ENV = "ACL_EMU_REPORT_DIR"
# How often the emulator writes its stats file when the bench asks for it: each window edge
# waits for the next write, so the edges are at most this far off.
STATS_INTERVAL_S = 0.1
VDEC_CODECS = ("h264", "hevc")


class StatsFiles:
    """The emulator's `acl-<pid>.stats.json` files in `report_dir`: the device stand-in CPU of
    each worker so far (a `run.DeviceClock`)."""

    def __init__(self, report_dir: Path, interval_s: float) -> None:
        self.report_dir = report_dir
        self.interval_s = interval_s

    def path(self, pid: int) -> Path:
        return self.report_dir / f"acl-{pid}.stats.json"

    def read(self, pids: Sequence[int]) -> Mapping[int, tuple[float, float]]:
        """(when, monotonic s; stand-in CPU s) of each worker with a stats file, from a write
        after this call began (waiting up to a few intervals for it; a busy worker may write
        late, and then its latest write is taken). Workers without a file are left out."""
        asked = time.monotonic()
        deadline = asked + 3 * self.interval_s + 1.0
        found: dict[int, tuple[float, float]] = {}
        pending = list(pids)
        while True:
            for pid in list(pending):
                sample = self._sample(pid)
                if sample is None:
                    pending.remove(pid)  # written atomically: no file means no emulator
                    continue
                found[pid] = sample
                if sample[0] >= asked:
                    pending.remove(pid)
            if not pending or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)

    def _sample(self, pid: int) -> tuple[float, float] | None:
        try:
            stats = json.loads(self.path(pid).read_text())
            return float(stats["time"]), float(stats["device_cpu_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def emulator_reports(report_dir: Path, pids: Sequence[int]) -> list[dict[str, Any]]:
    """What the emulator's report of each worker says (its settings, rules broken, leaks);
    workers without one (the real pyACL, or a worker that did not stop cleanly) are left out."""
    out = []
    for pid in pids:
        try:
            report = json.loads((report_dir / f"acl-{pid}.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict):
            continue
        out.append(
            {
                "pid": pid,
                "mode": report.get("mode"),
                "soc": report.get("soc"),
                "run_mode": report.get("run_mode"),
                "finalized": report.get("finalized"),
                "violations": len(report.get("violations") or []),
                "leaks": len(report.get("leaks") or []),
            }
        )
    return out


def host_cpu_ms(result: Any) -> dict[str, float | None]:
    """Core-ms per counted frame: the workers' CPU as measured (`worker_total`), the part the
    emulator spent standing in for the device (`emulated_device`, 0 without its stats), the
    workers' own (`worker` = the difference), the supervisor's, the broker's, the subscriber's
    (the bench with its mosquitto_sub) and the host's `total` (worker + the three). NaN CPU
    figures (a process gone) give None."""
    keys = ("worker_total", "emulated_device", "worker", "supervisor", "broker", "subscriber")
    if result.frames <= 0:
        return {k: None for k in (*keys, "total")}
    cpu = result.cpu_pct
    # % of one core x 10 / frames a second = core-ms a frame
    per_frame = 10.0 / float(result.fps)
    workers = sum(v for k, v in cpu.items() if k.startswith("worker")) * per_frame
    device = sum(result.stand_in_cpu_s.values()) * 1000.0 / result.frames
    figures = {
        "worker_total": workers,
        "emulated_device": device,
        "worker": workers - device,
        "supervisor": cpu.get("supervisor", math.nan) * per_frame,
        "broker": cpu.get("mosquitto", math.nan) * per_frame,
        "subscriber": cpu.get("bench (subscriber)", math.nan) * per_frame,
    }
    parts = [figures[k] for k in ("worker", "supervisor", "broker", "subscriber")]
    out: dict[str, float | None] = {
        k: None if math.isnan(v) else round(v, 3) for k, v in figures.items()
    }
    out["total"] = None if any(math.isnan(v) for v in parts) else round(sum(parts), 3)
    return out


def acl_kind(runs: list[dict[str, Any]]) -> str:
    """Which `acl` the workers ran: "emulator" (its stats files were read), "emulator without
    stats" (it wrote reports, not stats: ACL_EMU_STATS_INTERVAL was set to 0), or "pyACL"."""
    if runs and all(r["emulated"] for r in runs):
        return "emulator"
    if any(r["emulator_reports"] for r in runs):
        return "emulator without stats"
    return "pyACL"


def bench(args: argparse.Namespace) -> int:
    """`edged bench --backend ascend`: saturation runs on each stream count, then the report."""
    from edged.bench import parts, report, run
    from edged.bench.broker import bench_broker
    from edged.bench.command import counts_from, machine_doc, videos_from
    from edged.bench.tracking import time_tracking
    from edged.config import auto
    from edged.config.model import WorkerConfig

    if args.model is None:
        raise SystemExit(
            "edged bench --backend ascend: --model FILE.om is required (an ATC model; on the "
            "emulator an emulator .om, docs/ascend.md)"
        )
    if args.capacity:
        raise SystemExit(
            "edged bench --backend ascend: --capacity needs the limit, which only the cpu "
            "backend has"
        )
    videos = videos_from(args)
    model = str(Path(args.model).resolve())
    for path in (*videos, model):
        if not Path(path).is_file():
            raise SystemExit(f"edged bench: {path} not found (see --video, --model)")
    if Path(model).suffix != ".om":
        raise SystemExit(f"edged bench --backend ascend: {model} is not an ATC .om model")
    fps_by_video = {v: _probe(v, args.input_kind or "yuv420sp") for v in videos}
    counts = counts_from(args)
    n_cores = parts.cores()
    workers = max(1, args.workers)
    worker = WorkerConfig(name="bench", model=model, backend="ascend")
    threads = args.threads or auto.inference_threads(worker, n_cores=n_cores)  # 1: one loop
    warmup = args.warmup if args.warmup is not None else max(2.0, args.duration / 4)
    json_path = Path(args.json)
    plot_path = Path(args.plot) if args.plot else json_path.with_suffix(".png")
    progress = report.Progress(quiet=args.quiet)
    worker_extra = (
        *(() if args.batch is None else (f"batch = {args.batch}",)),
        *(() if args.input_kind is None else (f'input_kind = "{args.input_kind}"',)),
    )
    stream_extra = (
        () if args.decoder_threads is None else (f"decoder_threads = {args.decoder_threads}",)
    )
    mqtt_extra = () if args.mqtt_linger_ms is None else (f"linger_ms = {args.mqtt_linger_ms}",)
    progress("parts: tracking + events")
    tracking_costs = [time_tracking(n) for n in (30, 50)]

    doc: dict[str, Any] = {
        "version": __version__,
        "backend": "ascend",
        "machine": machine_doc(n_cores),
        "layout": {
            "backend": "ascend",
            "model": model,
            "workers": workers,
            "device": args.device,
            "batch": args.batch,  # None: no key written, the config's default (1)
            "input_kind": args.input_kind,  # None: the default, "yuv420sp"
            "threads": threads,
            "threads_auto": args.threads is None,
            "decoder_threads": args.decoder_threads,
            "mqtt_linger_ms": 0.0 if args.mqtt_linger_ms is None else args.mqtt_linger_ms,
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as tmp:
        workdir = Path(tmp)
        report_dir = Path(os.environ.get(REPORT_DIR_ENV) or workdir / "acl")
        interval = _interval(os.environ.get(STATS_ENV))
        # Set for the daemon only (its workers inherit them); a value the caller set is kept.
        env = {
            REPORT_DIR_ENV: str(report_dir),
            STATS_ENV: os.environ.get(STATS_ENV) or str(interval),
        }
        clock = StatsFiles(report_dir, interval)
        with bench_broker(workdir, args.broker, progress) as (broker_url, broker_process):
            for n in counts:
                played = [videos[i % len(videos)] for i in range(n)]
                streams = tuple(
                    run.StreamPlan(f"s{i}", v, fps_by_video[v]) for i, v in enumerate(played)
                )
                plan = run.RunPlan(
                    streams,
                    model,
                    min(workers, n),
                    args.threads,
                    False,
                    0.0,
                    broker_url,
                    warmup,
                    args.duration,
                    worker_extra=worker_extra,
                    stream_extra=stream_extra,
                    mqtt_extra=mqtt_extra,
                    backend="ascend",
                    device=args.device,
                    env=tuple(env.items()),
                )
                result = run.run_daemon(
                    workdir / f"sat-{n}",
                    plan,
                    progress,
                    broker_process=broker_process,
                    device_clock=clock,
                )
                doc["runs"].append(_run_doc(result, plan, report_dir))
    progress.done()
    doc["acl"] = _acl_doc(doc["runs"])
    report.finish(doc, report.ascend_table(doc), tracking_costs, json_path, plot_path)
    return 0


def _interval(value: str | None) -> float:
    """The stats interval the emulator will use: the environment's, or the bench's."""
    if value is None or not value.strip():
        return STATS_INTERVAL_S
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"edged bench: {STATS_ENV}={value!r} is not a number of seconds") from None


def _probe(video: str, input_kind: str) -> float:
    """The video's frame rate; a SystemExit when VDEC cannot decode it (H.264 and H.265 only;
    a "float" model decodes on the host)."""
    import av

    with av.open(video) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        rate = stream.average_rate
    if input_kind != "float" and codec not in VDEC_CODECS:
        raise SystemExit(
            f"edged bench --backend ascend: {video} is {codec}; VDEC decodes H.264 and H.265"
        )
    return float(rate) if rate else 0.0


def _run_doc(result: Any, plan: Any, report_dir: Path) -> dict[str, Any]:
    """One run's figures: the CPU bench's where they apply (no limit), plus the host CPU."""
    from edged.bench.run import measured

    worker_names = [k for k in result.pids if k.startswith("worker")]
    return {
        "streams": result.streams,
        "mode": "saturation",
        "realtime": plan.realtime,
        "detect_fps": plan.detect_fps,
        "limit_fps": None,  # the device's work is not measured on the host
        "ratio": None,
        **measured(result),
        # Every worker's stand-in CPU was read: the host figures leave the emulator out.
        "emulated": bool(worker_names) and all(k in result.stand_in_cpu_s for k in worker_names),
        "stand_in_cpu_pct": {
            k: round(v / result.seconds * 100.0, 2) for k, v in result.stand_in_cpu_s.items()
        },
        "host_cpu_ms": host_cpu_ms(result),
        "emulator_reports": emulator_reports(report_dir, [result.pids[k] for k in worker_names]),
    }


def _acl_doc(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The `acl` the workers ran, with the emulator's settings when it was the emulator."""
    found = [r for run in runs for r in run["emulator_reports"]]
    first = found[0] if found else {}
    return {
        "kind": acl_kind(runs),
        "mode": first.get("mode"),
        "soc": first.get("soc"),
        "run_mode": first.get("run_mode"),
        "violations": sum(r["violations"] for r in found),
        "leaks": sum(r["leaks"] for r in found),
        "reports": len(found),
    }
