"""The bench's results as a table on stdout, a JSON document and a PNG plot.

Runs in the bench process (a short-lived command) after the measurements. matplotlib (the `bench`
extra) is imported only to draw, with the Agg backend (no display needed); if it is missing the
plot is skipped with a message, and the table and the JSON are still written.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


class Progress:
    """One status line on a terminal, overwritten in place; every few seconds in a log."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._quiet = quiet
        self._last = 0.0
        self._phase = ""

    def __call__(self, line: str) -> None:
        if self._quiet:
            return
        phase = line.split(":", 1)[0]
        now = time.monotonic()
        if self._tty:
            self._stream.write("\r\033[K" + line[:150])
            self._stream.flush()
        elif phase != self._phase or now - self._last >= 5.0:
            self._stream.write(line + "\n")
            self._stream.flush()
            self._last = now
        self._phase = phase

    def done(self) -> None:
        if self._tty and not self._quiet:
            self._stream.write("\r\033[K")
            self._stream.flush()


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _run_figures(
    run: dict[str, Any],
) -> tuple[dict[str, float], float, float, dict[str, float | None]]:
    """What both tables print of a run: CPU % by process, the workers' total, the RSS total
    (MB) and the latency percentiles."""
    cpu = run["cpu_pct"]
    workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
    rss = sum(v for v in run["rss_mb"].values() if not math.isnan(v))
    return cpu, workers, rss, run["latency_ms"]


def _each(values: list[str]) -> str:
    """One figure per run, in order, as the summary lines print them: '0.892 / 0.890'."""
    return " / ".join(values)


def _per_run(
    doc: dict[str, Any], key: str, words: Callable[[Any, dict[str, Any]], str]
) -> list[str]:
    """One line per run that has `key`: '  N stream(s) mode      : ' and `words(value, run)`."""
    return [
        f"  {run['streams']} stream(s) {run['mode']:<10}: {words(run[key], run)}"
        for run in doc["runs"]
        if run.get(key) is not None
    ]


def table(doc: dict[str, Any]) -> str:
    """The human summary of a bench document (what `edged bench` prints)."""
    out: list[str] = []
    parts = doc["parts"]
    decodes = ", ".join(f"{Path(d['video']).name} {d['cpu_ms']:.2f}" for d in parts["decode"])
    infer = parts["infer"]
    layout = doc["layout"]
    threads_from = " (auto)" if layout.get("threads_auto") else ""
    per_run = sorted({(r["streams"], r.get("decoder_threads")) for r in doc["runs"]})
    resolved = ", ".join(f"{t} at {n} stream(s)" for n, t in per_run if t is not None)
    decoder = layout["decoder_threads"]
    decoder_text = "auto" if decoder is None else str(decoder)
    tracking = layout.get("tracking", True)
    default = layout.get("threads_auto") and decoder is None and tracking
    config = "the default config" if default else "tuned"
    out.append(
        f"machine: {doc['machine']['cores']} cores ({doc['machine']['cpu']}); {config}: "
        f"{layout['workers']} worker(s) x {layout['threads']} inference thread(s){threads_from}, "
        f"decoder_threads {decoder_text}" + (f" ({resolved})" if resolved else "") + ", "
        f"mqtt linger_ms={layout.get('mqtt_linger_ms', 0.0):g}"
        + ("" if tracking else ", tracking off (detections only)")
    )
    out.append(
        f"parts (core-ms/frame): decode {decodes} (1 thread); letterbox "
        f"{infer['pre_cpu_ms']:.2f}; inference {infer['infer_cpu_ms']:.2f} (wall "
        f"{infer['infer_wall_ms']:.2f}); boxes+NMS {infer['post_cpu_ms']:.2f} (overhead, not in "
        "the limit)"
    )
    references = parts.get("reference") or []
    if references:
        pre = infer["pre_cpu_ms"]
        by_video = {d["video"]: d["cpu_ms"] for d in parts["decode"]}
        refs = ", ".join(f"{Path(r['video']).name} {r['cpu_ms']:.2f}" for r in references)
        ratios = ", ".join(
            f"{(by_video[r['video']] + pre) / r['cpu_ms']:.2f}x"
            for r in references
            if r["video"] in by_video and r["cpu_ms"] > 0
        )
        out.append(
            f"decode reference, same run (core-ms/frame, file to model input): "
            f"{references[0]['name']} {refs}; edged's decode + letterbox is {ratios} of it"
        )
    chained = parts.get("chain")
    if chained:
        out.append(
            f"the parts chained, same run ({chained['threads']} thread(s), one per core, each "
            "decoding, letterboxing, inferring and decoding boxes of its own video in turn; no "
            f"board, tracking, pipe, supervisor or MQTT): {chained['fps']:.1f} frames/s, "
            f"{chained['ratio']:.3f} of the limit ({chained['limit_fps']:.1f}/s), "
            f"{chained['cpu_ms']:.2f} core-ms a frame, {chained['overhead_ms']:.2f} beyond "
            "decode + letterbox + inference: parts that share a core evict each other's caches, "
            "so this is as near the limit as a daemon built from them gets here"
        )
    out.append("")
    head = (
        f"{'streams':>7} {'mode':<10} {'limit/s':>8} {'frames/s':>8} {'ratio':>6} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'sup %':>6} {'workers %':>9} "
        f"{'broker %':>8} {'bench %':>7} {'others %':>8} {'RSS MB':>7} {'eff':>5} {'r/free':>6} "
        f"{'ovh ms':>6}"
    )
    out.append(head)
    out.append("-" * len(head))
    for run in doc["runs"]:
        cpu, workers, rss, lat = _run_figures(run)
        out.append(
            f"{run['streams']:>7} {run['mode']:<10} {_f(run['limit_fps']):>8} "
            f"{_f(run['fps']):>8} {_f(run['ratio'], 3):>6} {_f(lat['p50']):>7} "
            f"{_f(lat['p95']):>7} {_f(lat['p99']):>7} {_f(cpu.get('supervisor')):>6} "
            f"{_f(workers):>9} {_f(cpu.get('mosquitto')):>8} "
            f"{_f(cpu.get('bench (subscriber)')):>7} {_f(run['others_pct']):>8} {rss:>7.0f} "
            f"{_f(run['cpu_efficiency'], 2):>5} {_f(run['ratio_to_free_cores'], 3):>6} "
            f"{_f(run.get('overhead_ms', {}).get('total'), 2):>6}"
        )
    out.append("")
    out.append(
        "ratio = frames/s / limit; limit = cores x 1000 / (decode + letterbox + inference "
        "core-ms), measured above in this run. CPU % is of one core over the counting window; "
        "'others' is CPU used on this machine by processes that are not part of the run. "
        "eff = the CPU the frames' work needed / the CPU the run's processes spent (1.0 = no "
        "overhead); r/free = an estimate: the ratio against the cores others left free; ovh ms = "
        "host overhead, core-ms a frame beyond decode + letterbox + inference (below)."
    )
    out.append("")
    out.append(
        "host overhead per frame (core-ms: CPU of each process per frame beyond decode + "
        "letterbox + inference, all charged to the worker):"
    )
    out += _per_run(
        doc,
        "overhead_ms",
        lambda o, run: f"worker {_f(o['worker'], 2)} + supervisor {_f(o['supervisor'], 2)} + "
        f"broker {_f(o['broker'], 2)} + subscriber {_f(o['subscriber'], 2)} = "
        f"{_f(o['total'], 2)}",
    )
    out += _per_run(
        doc,
        "in_place_ms",
        lambda w, run: f"worker threads, in place (alone): sources {_f(w['sources'], 2)} "
        f"({_f(w['sources_alone'], 2)} decode + letterbox), inference loops "
        f"{_f(w['inference_loops'], 2)} ({_f(w['inference_alone'], 2)} inference + boxes/NMS; "
        f"tracking and results have no figure alone), other {_f(w['other'], 2)} (main thread, "
        "threads that ended in the window)",
    )
    out += _per_run(
        doc,
        "supervisor_ms_per_message",
        lambda ms, run: f"supervisor {_f(ms, 3)} core-ms a MQTT message published "
        f"({_f(run['published_per_s'])} messages/s: detections, events, retained state)",
    )
    for run in doc["runs"]:
        if run["mode"] == "half-load":
            verdict = "ok" if run["latency_ok"] else "OVER"
            out.append(
                f"half load, {run['streams']} stream(s) at detect_fps {run['detect_fps']:.1f}: "
                f"median latency {_f(run['latency_ms']['p50'])} ms vs budget "
                f"{run['latency_budget_ms']:.1f} ms (decode + letterbox + inference wall + 5): "
                f"{verdict}"
            )
    cap = doc.get("capacity")
    if cap:
        out.append("")
        out.append(
            f"capacity at real rates (detect_fps {cap['detect_fps']:g}): {cap['streams']} "
            f"stream(s) sustained; limit {cap['limit_streams']:.2f} streams; ratio "
            f"{cap['ratio']:.3f}"
        )
        for trial in cap["trials"]:
            verdict = "sustained" if trial["sustained"] else "behind"
            out.append(
                f"  {trial['streams']:>3} streams: {verdict}"
                f" (decode pace {trial['pace']:.3f} of native, detections "
                f"{trial['detect_rate']:.3f} of wanted, others {trial['others_pct']:.0f} %)"
            )
    out.append("")
    out.append(summary(doc))
    return "\n".join(out)


def summary(doc: dict[str, Any]) -> str:
    """One line with the figures a closing note quotes: ratio, overhead and supervisor CPU per
    stream count at saturation, and the capacity at real rates."""
    saturation = [r for r in doc["runs"] if r["mode"] == "saturation"]
    counts = "/".join(str(r["streams"]) for r in saturation)

    line = (
        f"summary, {counts} stream(s) at saturation: ratio to the limit "
        f"{_each([_f(r['ratio'], 3) for r in saturation])}{_chained(doc)}; host overhead "
        f"{_each([_f(r.get('overhead_ms', {}).get('total'), 2) for r in saturation])} core-ms a "
        f"frame; supervisor {_each([_f(r['cpu_pct'].get('supervisor')) for r in saturation])} % "
        f"of a core, {_each([_f(r.get('supervisor_ms_per_message'), 3) for r in saturation])} "
        f"core-ms a message at {_each([_f(r.get('published_per_s')) for r in saturation])} "
        f"messages/s; others {_each([_f(r['others_pct'], 0) for r in saturation])} %"
    )
    cap = doc.get("capacity")
    if cap:
        line += (
            f"; capacity at detect_fps {cap['detect_fps']:g}: {cap['streams']} stream(s), "
            f"{cap['ratio']:.3f} of the limit"
        )
    return line


def _chained(doc: dict[str, Any]) -> str:
    """The summary's note of what the parts chained alone reached, where it was measured."""
    chained = doc["parts"].get("chain")
    if not chained:
        return ""
    return (
        f" (the parts chained alone: {chained['ratio']:.3f}, {chained['overhead_ms']:.2f} "
        "core-ms a frame beyond them)"
    )


def ascend_table(doc: dict[str, Any]) -> str:
    """The human summary of an `edged bench --backend ascend` document: the CPU bench's lines
    where they apply (no parts, no limit), and the host's own CPU per frame."""
    out: list[str] = []
    layout = doc["layout"]
    acl = doc["acl"]
    config = "the default config" if layout.get("threads_auto") else "tuned"
    batch = layout["batch"] if layout["batch"] is not None else "1 (default)"
    kind = layout["input_kind"] or "yuv420sp (default)"
    settings = f"{acl['mode']} mode, {acl['run_mode']}, {acl['soc']}"
    if acl["kind"] == "pyACL":
        runtime = "pyACL (no emulator stats file: the real runtime; worker CPU as measured)"
    elif acl["kind"] == "emulator":
        runtime = (
            f"the pyACL emulator ({settings}); the CPU it spent standing in for the device is "
            "left out of the host figures"
        )
    else:
        runtime = (
            f"the pyACL emulator ({settings}) without stats files (ACL_EMU_STATS_INTERVAL=0): "
            "its stand-in device CPU is in the worker's figure"
        )
    out.append(
        f"machine: {doc['machine']['cores']} cores ({doc['machine']['cpu']}); {config}: "
        f"{layout['workers']} ascend worker(s) from device {layout['device']}, "
        f"{Path(layout['model']).name}, batch {batch}, input {kind}, {layout['threads']} "
        f"inference loop(s), mqtt linger_ms={layout.get('mqtt_linger_ms', 0.0):g}"
    )
    out.append(f"acl: {runtime}")
    out.append("")
    head = (
        f"{'streams':>7} {'mode':<10} {'frames/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'sup %':>6} {'workers %':>9} {'device %':>8} {'broker %':>8} {'bench %':>7} "
        f"{'others %':>8} {'RSS MB':>7} {'host ms':>7}"
    )
    out.append(head)
    out.append("-" * len(head))
    for run in doc["runs"]:
        cpu, workers, rss, lat = _run_figures(run)
        device = sum(run["stand_in_cpu_pct"].values()) if run["emulated"] else None
        out.append(
            f"{run['streams']:>7} {run['mode']:<10} {_f(run['fps']):>8} {_f(lat['p50']):>7} "
            f"{_f(lat['p95']):>7} {_f(lat['p99']):>7} {_f(cpu.get('supervisor')):>6} "
            f"{_f(workers):>9} {_f(device):>8} {_f(cpu.get('mosquitto')):>8} "
            f"{_f(cpu.get('bench (subscriber)')):>7} {_f(run['others_pct']):>8} {rss:>7.0f} "
            f"{_f(run['host_cpu_ms']['total'], 2):>7}"
        )
    out.append("")
    out.append(
        "No limit: the device's decode, resize and inference are not measured on the host. CPU % "
        "is of one core over the counting window; 'device' is the part of the workers' CPU the "
        "emulator spent standing in for the device; host ms = the host's own CPU a frame (worker "
        "without the emulated device, supervisor, broker, subscriber), core-ms."
    )
    out.append("")
    for run in doc["runs"]:
        out.append(ascend_line(run))
    reports = [r for run in doc["runs"] for r in run["emulator_reports"]]
    if reports:
        out.append(
            f"emulator reports of the workers ({acl['reports']}, written at acl.finalize): "
            f"{acl['violations']} rule violation(s), {acl['leaks']} leaked resource(s)"
        )
    out.append("")
    out.append(ascend_summary(doc))
    return "\n".join(out)


def ascend_line(run: dict[str, Any]) -> str:
    """The host's CPU per frame of one ascend run, by process."""
    h = run["host_cpu_ms"]
    if run["emulated"]:
        worker = (
            f"worker {_f(h['worker'], 2)} core-ms (emulated device "
            f"{_f(h['emulated_device'], 2)} core-ms left out)"
        )
    elif run["emulator_reports"]:
        worker = (
            f"worker {_f(h['worker'], 2)} core-ms (as measured: the emulator wrote no stats "
            "file, so its stand-in device CPU is in it)"
        )
    else:
        worker = (
            f"worker {_f(h['worker'], 2)} core-ms (as measured: no emulator stats file, so the "
            "real pyACL, its runtime's host threads included)"
        )
    return (
        f"ascend host CPU per frame: {worker}, supervisor {_f(h['supervisor'], 2)}, broker "
        f"{_f(h['broker'], 2)}, subscriber {_f(h['subscriber'], 2)}, total {_f(h['total'], 2)} "
        f"({run['streams']} stream(s), {run['mode']}, {run['frames']} frames)"
    )


def ascend_summary(doc: dict[str, Any]) -> str:
    """One line with the figures a closing note quotes, per stream count."""
    runs = doc["runs"]
    counts = "/".join(str(r["streams"]) for r in runs)

    left_out = " (emulated device left out)" if doc["acl"]["kind"] == "emulator" else ""
    return (
        f"summary, ascend, {counts} stream(s) at saturation: "
        f"{_each([_f(r['fps']) for r in runs])} frames/s; host CPU "
        f"{_each([_f(r['host_cpu_ms']['total'], 2) for r in runs])} core-ms a frame, worker "
        f"{_each([_f(r['host_cpu_ms']['worker'], 2) for r in runs])}{left_out}; supervisor "
        f"{_each([_f(r['cpu_pct'].get('supervisor')) for r in runs])} % of a core; others "
        f"{_each([_f(r['others_pct'], 0) for r in runs])} %"
    )


def finish(doc: dict[str, Any], text: str, costs: list[Any], json_path: Path,
           plot_path: Path) -> None:
    """Print a bench's table and its tracking costs, write its JSON and draw its plot."""
    doc["tracking"] = [vars(c) for c in costs]
    print(text)
    for c in costs:
        print(
            f"tracking + events, {c.boxes} boxes: {c.median_ms:.3f} ms a frame "
            f"(p95 {c.p95_ms:.3f}, CPU time, {c.frames} frames)"
        )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(doc, json_path)
    drawn = plot(doc, plot_path)
    print(f"\nwrote {json_path}" + (f" and {plot_path}" if drawn else ""))


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=2, allow_nan=False, default=_nan_to_none) + "\n")


def _nan_to_none(value: Any) -> Any:
    return None


def plot(doc: dict[str, Any], path: Path) -> bool:
    """Frames/s, limit and ratio against streams; the latency distribution of each run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'edged[bench]'): no plot", file=sys.stderr)
        return False
    saturation = [r for r in doc["runs"] if r["mode"] == "saturation"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    streams = [r["streams"] for r in saturation]
    # An ascend bench has no limit (the device's work is not measured on the host).
    limited = all(r["limit_fps"] is not None for r in saturation)
    if limited:
        left.plot(streams, [r["limit_fps"] for r in saturation], "k--", marker="o", label="limit")
    left.plot(streams, [r["fps"] for r in saturation], "b-", marker="o", label="edged")
    left.set_xlabel("streams")
    left.set_ylabel("frames/s")
    left.set_xticks(streams)
    left.set_ylim(bottom=0)
    lines = left.get_legend_handles_labels()
    if limited:
        ratio_axis = left.twinx()
        ratio_axis.plot(streams, [r["ratio"] for r in saturation], "g:", marker="s", label="ratio")
        ratio_axis.axhline(0.9, color="g", linewidth=0.5)
        ratio_axis.set_ylim(0, 1.1)
        ratio_axis.set_ylabel("ratio to the limit")
        more = ratio_axis.get_legend_handles_labels()
        lines = (lines[0] + more[0], lines[1] + more[1])
    left.legend(lines[0], lines[1], loc="lower right")
    backend = f", {doc['backend']}" if doc.get("backend") else ""
    left.set_title(f"throughput, {doc['machine']['cores']} cores{backend}")
    for run in doc["runs"]:
        samples = run.get("latency_samples_ms") or []
        if samples:
            ordered = sorted(samples)
            ys = [i / (len(ordered) - 1 or 1) for i in range(len(ordered))]
            right.plot(ordered, ys, label=f"{run['streams']} stream(s), {run['mode']}")
    right.set_xlabel("capture -> subscriber latency, ms")
    right.set_ylabel("fraction of frames")
    right.set_xscale("log")
    right.grid(True, which="both", linewidth=0.3)
    right.legend(loc="lower right", fontsize="small")
    right.set_title("latency distribution")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
