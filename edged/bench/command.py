"""`edged bench`: measure the parts, compute the machine's limit, run the real daemon against it.

Runs in the bench process (a short-lived command started by a person or a test). In one run it
(a) decodes each video and (b) letterboxes and infers its frames through the worker's own code to
get core-ms per frame, computes the limit (cores x 1000 / (a + b) frames/s), then (c) runs the real
daemon (`edged run`: supervisor, spawned workers, a real broker) on N looping streams played as
fast as they decode (`realtime = false`), counts processed frames from an MQTT subscriber and
reports frames/s against the limit, capture-to-subscriber latency, and CPU and RSS per process.
Optionally it finds the number of real-rate streams the box sustains (`--capacity`). With
`--backend ascend` the workers run on an Ascend NPU (`edged.bench.ascend`): no parts and no
limit, but frames/s, latency and the host's own CPU per frame. A crash or Ctrl-C stops the
daemon and the broker it started (see `run.DaemonRun.stop`) and removes the temporary folder.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import psutil

from edged import __version__
from edged.stats import percentiles

if TYPE_CHECKING:
    from edged.bench.parts import ChainCost, DecodeCost, InferCost, ReferenceCost

DEFAULT_STREAMS = "1,2,4"
SUSTAINED_PACE = 0.97  # decode keeps at least this share of the file's native rate
SUSTAINED_DETECT = 0.90  # and delivers at least this share of the wanted detections
LATENCY_SLACK_MS = 5.0
# Times each part is measured; the lowest figure is kept (`_bench`).
PARTS_ROUNDS = 2
# Seconds the chained parts are counted in each round (at most half of --duration).
CHAIN_S = 5.0


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="measure throughput against the machine's limit",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    bench.add_argument(
        "--streams", default=DEFAULT_STREAMS, help="stream counts to run, comma separated (1,2,4)"
    )
    bench.add_argument(
        "--video",
        action="append",
        help="a video file; streams cycle through the videos given (default: the two 720p "
        "clips under $EDGED_TEST_ASSETS/media)",
    )
    bench.add_argument(
        "--model",
        help="cpu: an ONNX model (YOLOX layout) (default: $EDGED_TEST_ASSETS/models/"
        "yolox_nano.onnx); ascend: the ATC .om (required)",
    )
    bench.add_argument(
        "--backend",
        choices=("cpu", "ascend"),
        default="cpu",
        help="the workers' backend (cpu); ascend runs saturation only and reports frames/s, "
        "latency and host CPU per frame (docs/ascend.md)",
    )
    bench.add_argument(
        "--device",
        type=int,
        default=0,
        help="ascend: the first worker's device (0); each further worker takes the next",
    )
    bench.add_argument(
        "--batch", type=int, help="ascend: the workers' batch key (default none written: 1)"
    )
    bench.add_argument(
        "--input-kind",
        choices=("yuv420sp", "float"),
        help="ascend: the workers' input_kind key (default none written: yuv420sp)",
    )
    bench.add_argument("--duration", type=float, default=20.0, help="seconds counted per run")
    bench.add_argument("--warmup", type=float, help="seconds before counting (default 1/4 of it)")
    bench.add_argument("--json", default="bench.json", help="where to write the figures")
    bench.add_argument("--plot", help="where to draw the PNG (default: the JSON path, .png)")
    bench.add_argument("--broker", help="mqtt://host:port of a broker (default: start mosquitto)")
    bench.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    bench.add_argument(
        "--threads",
        type=int,
        help="inference threads per worker, written into the config (default: none written, "
        'the daemon\'s "auto": cores / workers)',
    )
    bench.add_argument(
        "--decoder-threads",
        type=int,
        help="the streams' decoder_threads key, written into the config (default: none "
        'written, the daemon\'s "auto": cores / streams on the worker)',
    )
    bench.add_argument(
        "--mqtt-linger-ms",
        type=float,
        default=None,
        help="the daemon's [mqtt] linger_ms (default: the config default, 0)",
    )
    bench.add_argument(
        "--no-tracking",
        action="store_true",
        help="a variant: the streams' [streams.tracking] enabled = false (detections only: no "
        "tracker, events, counts or snapshots), to show what they cost beside the default run",
    )
    bench.add_argument(
        "--no-half-load", action="store_true", help="skip the latency run at half load"
    )
    bench.add_argument(
        "--capacity",
        action="store_true",
        help="also find the most real-rate streams sustained at --detect-fps",
    )
    bench.add_argument("--detect-fps", type=float, default=5.0, help="for --capacity (5)")
    bench.add_argument("--quiet", action="store_true", help="no progress display")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from edged.bench import parts, report, run
    from edged.bench.broker import bench_broker
    from edged.bench.tracking import time_tracking
    from edged.config import auto
    from edged.config.model import StreamConfig, WorkerConfig
    from edged.worker.scheduling import opencv_in_caller_thread

    if args.backend == "ascend":
        from edged.bench import ascend

        return ascend.bench(args)
    assets = Path(os.environ.get("EDGED_TEST_ASSETS", "../shared"))
    videos = videos_from(args)
    model = str(Path(args.model or assets / "models" / "yolox_nano.onnx").resolve())
    for path in (*videos, model):
        if not Path(path).is_file():
            raise SystemExit(f"edged bench: {path} not found (see --video, --model)")
    counts = counts_from(args)
    n_cores = parts.cores()
    workers = max(1, args.workers)
    # The daemon runs its default config: the bench writes a thread key only when asked to, and
    # reports what "auto" resolves to with the daemon's own rules.
    threads = args.threads or auto.inference_threads(
        WorkerConfig(name="bench", model=model), cpu_workers=workers, n_cores=n_cores
    )
    warmup = args.warmup if args.warmup is not None else max(2.0, args.duration / 4)
    json_path = Path(args.json)
    plot_path = Path(args.plot) if args.plot else json_path.with_suffix(".png")
    progress = report.Progress(quiet=args.quiet)

    # (a), (b): the parts, through the worker's own code. Decoding is measured with one FFmpeg
    # thread, its cheapest CPU per frame: the limit is what the machine could do, whatever
    # thread counts the daemon picks. Each part is measured PARTS_ROUNDS times and its lowest
    # figure kept: on a shared box a disturbance can only make a part look dearer, and a dearer
    # part would raise the limit's cost and flatter the ratio.
    worker = WorkerConfig(name="bench", model=model, threads=threads)
    # As a worker runs OpenCV: in the calling thread, no pool (edged/worker/scheduling.py).
    opencv_in_caller_thread()
    rounds: list[PartsRound] = []
    samples: list[Any] = []
    # The chained parts need a few seconds to settle into a rate; a short bench gets a short one.
    chain_s = min(CHAIN_S, args.duration / 2)
    for r in range(PARTS_ROUNDS):
        decodes, references = [], []
        for video in videos:
            progress(f"parts {r + 1}/{PARTS_ROUNDS}: decoding {Path(video).name}")
            cost, frames = parts.measure_decode(video, 200, 1)
            decodes.append(cost)
            if r == 0:
                samples += frames
            progress(f"parts {r + 1}/{PARTS_ROUNDS}: reference decode of {Path(video).name}")
            references.append(parts.measure_reference(video, 200))
        progress(f"parts {r + 1}/{PARTS_ROUNDS}: letterbox + inference")
        letterbox_infer = parts.measure_infer(worker, samples, 60)
        progress(f"parts {r + 1}/{PARTS_ROUNDS}: the parts chained, {n_cores} thread(s)")
        chained = parts.measure_chain(worker, videos, n_cores, chain_s)
        rounds.append(PartsRound(decodes, references, letterbox_infer, chained))
    decodes = [min(per, key=_cpu_ms) for per in zip(*(r.decodes for r in rounds), strict=True)]
    references = [
        min(per, key=_cpu_ms) for per in zip(*(r.references for r in rounds), strict=True)
    ]
    infer = min((r.infer for r in rounds), key=_cpu_ms)
    # The fastest round: a disturbance only slows the chain, and a slower chain would flatter
    # the daemon beside it.
    chain = max((r.chain for r in rounds), key=lambda c: c.fps)
    chain_limit = parts.saturation_limit(
        n_cores, [decodes[i % len(decodes)] for i in range(n_cores)], infer
    )
    progress("parts: tracking + events")
    tracking_costs = [time_tracking(n) for n in (30, 50)]

    def streams_for(n: int) -> tuple[run.StreamPlan, ...]:
        return tuple(
            run.StreamPlan(
                f"s{i}",
                decodes[i % len(decodes)].video,
                decodes[i % len(decodes)].fps,
                decodes[i % len(decodes)].cpu_ms,
            )
            for i in range(n)
        )

    def decoder(n: int) -> int:
        """The decoder threads a stream of an n-stream run gets (streams spread over workers)."""
        stream = StreamConfig(name="s", source="v", worker="w")
        if args.decoder_threads is not None:
            stream = msgspec.structs.replace(stream, decoder_threads=args.decoder_threads)
        per_worker = math.ceil(n / min(workers, n))
        return auto.decoder_threads(stream, per_worker, n_cores)

    mqtt_extra = () if args.mqtt_linger_ms is None else (f"linger_ms = {args.mqtt_linger_ms}",)

    stream_extra = (
        () if args.decoder_threads is None else (f"decoder_threads = {args.decoder_threads}",)
    ) + (("tracking.enabled = false",) if args.no_tracking else ())

    def plan_for(n: int, *, realtime: bool, detect_fps: float) -> run.RunPlan:
        return run.RunPlan(
            streams_for(n),
            model,
            min(workers, n),
            args.threads,
            realtime,
            detect_fps,
            broker_url,
            warmup,
            args.duration,
            stream_extra=stream_extra,
            mqtt_extra=mqtt_extra,
        )

    doc: dict[str, Any] = {
        "version": __version__,
        "machine": machine_doc(n_cores),
        "layout": {
            "workers": workers,
            "threads": threads,
            "threads_auto": args.threads is None,
            # None: the config's default, "auto" (per run: `decoder_threads` in each run)
            "decoder_threads": args.decoder_threads,
            "mqtt_linger_ms": 0.0 if args.mqtt_linger_ms is None else args.mqtt_linger_ms,
            "tracking": not args.no_tracking,
        },
        "parts": {
            "decode": [vars(d) for d in decodes],
            "infer": {**vars(infer), "cpu_ms": infer.cpu_ms},
            "reference": [vars(r) for r in references],
            "chain": {
                **vars(chain),
                "limit_fps": round(chain_limit.fps, 2),
                "ratio": round(chain.fps / chain_limit.fps, 4),
                "overhead_ms": round(chain.cpu_ms - chain_limit.work_ms, 3),
            },
            # every round as measured; the figures above are each part's lowest (the
            # chain's: its fastest)
            "rounds": [
                {
                    "decode": [vars(d) for d in r.decodes],
                    "reference": [vars(f) for f in r.references],
                    "infer": vars(r.infer),
                    "chain": vars(r.chain),
                }
                for r in rounds
            ],
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as tmp:
        workdir = Path(tmp)
        with bench_broker(workdir, args.broker, progress) as (broker_url, broker_process):
            for n in counts:
                used = [decodes[i % len(decodes)] for i in range(n)]
                limit = parts.saturation_limit(n_cores, used, infer)
                plan = plan_for(n, realtime=False, detect_fps=0.0)
                result = run.run_daemon(
                    workdir / f"sat-{n}", plan, progress, broker_process=broker_process
                )
                entry = _run_doc(
                    result, "saturation", plan, limit.fps, limit.work_ms, decoder(n)
                )
                entry["in_place_ms"] = _in_place_ms(result, limit.decode_ms, infer)
                doc["runs"].append(entry)
                if not args.no_half_load:
                    d = _half_load_detect_fps(n_cores, used, infer)
                    plan = plan_for(n, realtime=True, detect_fps=d)
                    result = run.run_daemon(
                        workdir / f"half-{n}", plan, progress, broker_process=broker_process
                    )
                    entry = _run_doc(
                        result, "half-load", plan, limit.fps, limit.work_ms, decoder(n)
                    )
                    decode_wall = sum(u.wall_ms for u in used) / len(used)
                    budget = decode_wall + infer.pre_cpu_ms + infer.infer_wall_ms
                    entry["latency_budget_ms"] = round(budget + LATENCY_SLACK_MS, 2)
                    p50 = entry["latency_ms"]["p50"]
                    entry["latency_ok"] = p50 is not None and p50 <= budget + LATENCY_SLACK_MS
                    doc["runs"].append(entry)
            if args.capacity:
                doc["capacity"] = _capacity(
                    args.detect_fps,
                    n_cores,
                    decodes,
                    infer,
                    plan_for,
                    workdir,
                    progress,
                    broker_process,
                )
    progress.done()
    report.finish(doc, report.table(doc), tracking_costs, json_path, plot_path)
    return 0


class PartsRound(NamedTuple):
    """One round of the parts (`_bench` measures PARTS_ROUNDS of them and keeps the best)."""

    decodes: list[DecodeCost]
    references: list[ReferenceCost]
    infer: InferCost
    chain: ChainCost


def _cpu_ms(cost: DecodeCost | ReferenceCost | InferCost) -> float:
    return cost.cpu_ms


def videos_from(args: argparse.Namespace) -> list[str]:
    """The videos the streams cycle through, as absolute paths (checked by the caller)."""
    assets = Path(os.environ.get("EDGED_TEST_ASSETS", "../shared"))
    videos = args.video or [
        str(assets / "media" / "pedestrians-720p.avi"),
        str(assets / "media" / "traffic-720p.mp4"),
    ]
    return [str(Path(v).resolve()) for v in videos]


def counts_from(args: argparse.Namespace) -> list[int]:
    """The stream counts of --streams, sorted; a SystemExit that says why if they are not."""
    try:
        counts = sorted({int(s) for s in args.streams.split(",") if s.strip()})
    except ValueError:
        raise SystemExit(
            f"edged bench: --streams wants numbers like 1,2,4, got {args.streams}"
        ) from None
    if not counts or counts[0] < 1:
        raise SystemExit("edged bench: --streams wants positive numbers")
    return counts


def _run_doc(
    result: Any, mode: str, plan: Any, limit_fps: float, work_ms: float, decoder_threads: int
) -> dict[str, Any]:
    from edged.bench.run import measured

    ours = sum(v for v in result.cpu_pct.values() if not math.isnan(v))
    work_pct = _work_pct(result, plan, work_ms)
    return {
        "streams": result.streams,
        "mode": mode,
        "realtime": plan.realtime,
        "detect_fps": plan.detect_fps,
        "decoder_threads": decoder_threads,
        "limit_fps": round(limit_fps, 2),
        "ratio": round(result.fps / limit_fps, 4),
        **measured(result),
        # An estimate for a shared, noisy machine: the ratio against the part of the cores that
        # other processes left free during the window. The ratio above is the measured one.
        "ratio_to_free_cores": _ratio_to_free(result, limit_fps, ours),
        # work the frames needed / CPU our processes spent: 1.0 means no overhead at all
        "cpu_efficiency": round(work_pct / ours, 4) if ours > 0 else None,
        "overhead_ms": _overhead_ms(result, work_pct),
        **_per_message(result),
    }


def _per_message(result: Any) -> dict[str, float | None]:
    """The supervisor's CPU per MQTT message it published (detections, events, retained state),
    core-ms, and those messages a second; None where the broker did not count them."""
    rate = result.published_per_s
    supervisor = result.cpu_pct.get("supervisor", math.nan)
    if not rate or math.isnan(supervisor):
        return {"published_per_s": None, "supervisor_ms_per_message": None}
    # % of one core x 10 / messages a second = core-ms a message
    return {
        "published_per_s": round(rate, 1),
        "supervisor_ms_per_message": round(supervisor * 10.0 / rate, 3),
    }


def _overhead_ms(result: Any, work_pct: float) -> dict[str, float | None]:
    """Host overhead, core-ms per processed frame: what each of the run's processes spent beyond
    the work the frames needed (decode + letterbox + inference, measured alone, all charged to
    the worker). `total` is the sum; NaN CPU figures (a process gone) give None."""
    fps = float(result.fps)
    if fps <= 0:
        return {k: None for k in ("worker", "supervisor", "broker", "subscriber", "total")}
    cpu = result.cpu_pct
    workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
    # % of one core x 10 / frames a second = core-ms a frame
    figures = {
        "worker": (workers - work_pct) * 10.0 / fps,
        "supervisor": cpu.get("supervisor", math.nan) * 10.0 / fps,
        "broker": cpu.get("mosquitto", math.nan) * 10.0 / fps,
        "subscriber": cpu.get("bench (subscriber)", math.nan) * 10.0 / fps,
    }
    known = [v for v in figures.values() if not math.isnan(v)]
    out: dict[str, float | None] = {
        k: None if math.isnan(v) else round(v, 3) for k, v in figures.items()
    }
    out["total"] = round(sum(known), 3) if len(known) == len(figures) else None
    return out


def _in_place_ms(result: Any, decode_ms: float, infer: InferCost) -> dict[str, float] | None:
    """The workers' CPU a frame at saturation by thread role, core-ms, beside what the same work
    cost measured alone: where the worker's host overhead sits. A source thread decodes and
    letterboxes (alone: decode + letterbox); an inference loop infers and decodes boxes (alone:
    inference + boxes/NMS), then tracks and writes results, which have no figure alone. `other`
    is the rest of the workers' CPU: their main and metrics threads, and threads that ended in
    the window (a looping file's FFmpeg decoder threads, when a stream has several). None
    where the kernel did not show the threads."""
    threads = result.thread_cpu_s
    if result.frames <= 0 or not threads:
        return None
    workers_s = sum(v for k, v in result.cpu_pct.items() if k.startswith("worker")) / 100.0
    workers_s *= result.seconds
    sources, inference = threads.get("src", 0.0), threads.get("infer", 0.0)
    per_frame = 1000.0 / result.frames
    return {
        "sources": round(sources * per_frame, 3),
        "sources_alone": round(decode_ms + infer.pre_cpu_ms, 3),
        "inference_loops": round(inference * per_frame, 3),
        "inference_alone": round(infer.infer_cpu_ms + infer.post_cpu_ms, 3),
        "other": round((workers_s - sources - inference) * per_frame, 3),
    }


def _work_pct(result: Any, plan: Any, work_ms: float) -> float:
    """% of one core the counted frames needed: at real rates every frame is decoded, few are
    detected, so decoding is charged per frame decoded and the rest per detected frame."""
    if not plan.realtime:
        return float(result.fps) * work_ms / 10.0
    decoding: float = sum(_decoded_fps(result, s) * s.decode_ms for s in plan.streams)
    detecting = float(result.fps) * (work_ms - _mean_decode_ms(plan))
    return (decoding + detecting) / 10.0


def _decoded_fps(result: Any, stream: Any) -> float:
    """Frames a second the stream decoded in the window: its detections carry the decoder's
    frame index, so the index's advance between the first and the last one counts them (a
    machine too busy to keep the file's rate decodes fewer). The file's rate without two."""
    count = result.per_stream.get(stream.name)
    if count is None or count.messages < 2 or count.last_at <= count.first_at:
        return float(stream.fps)
    return float((count.last_frame - count.first_frame) / (count.last_at - count.first_at))


def _mean_decode_ms(plan: Any) -> float:
    return float(sum(s.decode_ms for s in plan.streams) / len(plan.streams))


def _ratio_to_free(result: Any, limit_fps: float, ours: float) -> float | None:
    total = parts_cores() * 100.0
    busy: float = result.machine_busy_pct
    free = total - max(0.0, busy - ours)
    if free <= 0:
        return None
    return round(float(result.fps) / (limit_fps * free / total), 4)


def parts_cores() -> int:
    from edged.bench.parts import cores

    return cores()


def _half_load_detect_fps(n_cores: int, used: list[DecodeCost], infer: InferCost) -> float:
    """The detect rate per stream that, with every frame decoded, uses half of the cores."""
    decode = sum(u.fps * u.cpu_ms for u in used)
    d = (n_cores * 500.0 - decode) / (len(used) * infer.cpu_ms)
    return round(max(0.5, min(d, *(u.fps for u in used))), 2)


def _capacity(
    detect_fps: float,
    n_cores: int,
    decodes: list[Any],
    infer: Any,
    plan_for: Any,
    workdir: Path,
    progress: Any,
    broker_process: psutil.Process | None,
) -> dict[str, Any]:
    """The largest number of real-rate streams that keep pace: search around 0.9 x the limit."""
    from edged.bench import parts, run

    limit = parts.realtime_limit(n_cores, decodes, infer, detect_fps)
    trials: dict[int, dict[str, Any]] = {}

    def trial(n: int) -> bool:
        plan = plan_for(n, realtime=True, detect_fps=detect_fps)
        result = run.run_daemon(workdir / f"cap-{n}", plan, progress, broker_process=broker_process)
        pace, detect = 1.0, 1.0
        for stream in plan.streams:
            count = result.per_stream.get(stream.name)
            if count is None or count.messages < 2:
                pace = detect = 0.0
                continue
            span = count.last_at - count.first_at
            pace = min(pace, (count.last_frame - count.first_frame) / (span * stream.fps))
            detect = min(detect, count.messages / (detect_fps * result.seconds))
        ours = sum(v for v in result.cpu_pct.values() if not math.isnan(v))
        ok = pace >= SUSTAINED_PACE and detect >= SUSTAINED_DETECT
        trials[n] = {
            "streams": n,
            "sustained": ok,
            "pace": round(pace, 4),
            "detect_rate": round(detect, 4),
            "fps": round(result.fps, 2),
            "latency_ms": percentiles(result.latency_ms),
            "cpu_pct": {k: round(v, 2) for k, v in result.cpu_pct.items()},
            "others_pct": round(max(0.0, result.machine_busy_pct - ours), 1),
        }
        return ok

    n = max(1, math.floor(limit * 0.9))
    if trial(n):
        while n + 1 <= math.ceil(limit) + 1 and trial(n + 1):
            n += 1
        best = n
    else:
        best = 0
        while n > 1:
            n -= 1
            if trial(n):
                best = n
                break
    return {
        "detect_fps": detect_fps,
        "streams": best,
        "limit_streams": round(limit, 3),
        "ratio": round(best / limit, 4),
        "trials": [trials[k] for k in sorted(trials)],
    }


def machine_doc(n_cores: int) -> dict[str, Any]:
    """The machine a bench ran on, for its JSON and its first line."""
    return {
        "cores": n_cores,
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
