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


def table(doc: dict[str, Any]) -> str:
    """The human summary of a bench document (what `edged bench` prints)."""
    out: list[str] = []
    parts = doc["parts"]
    decodes = ", ".join(f"{Path(d['video']).name} {d['cpu_ms']:.2f}" for d in parts["decode"])
    infer = parts["infer"]
    out.append(
        f"machine: {doc['machine']['cores']} cores ({doc['machine']['cpu']}); "
        f"layout: {doc['layout']['workers']} worker(s) x {doc['layout']['threads']} "
        f"inference thread(s), decoder_threads={doc['layout']['decoder_threads']}, "
        f"mqtt linger_ms={doc['layout'].get('mqtt_linger_ms', 0.0):g}"
    )
    out.append(
        f"parts (core-ms/frame): decode {decodes}; letterbox {infer['pre_cpu_ms']:.2f}; "
        f"inference {infer['infer_cpu_ms']:.2f} (wall {infer['infer_wall_ms']:.2f}); "
        f"boxes+NMS {infer['post_cpu_ms']:.2f} (overhead, not in the limit)"
    )
    out.append("")
    head = (
        f"{'streams':>7} {'mode':<10} {'limit/s':>8} {'frames/s':>8} {'ratio':>6} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'sup %':>6} {'workers %':>9} "
        f"{'broker %':>8} {'bench %':>7} {'others %':>8} {'RSS MB':>7} {'eff':>5} {'r/free':>6}"
    )
    out.append(head)
    out.append("-" * len(head))
    for run in doc["runs"]:
        cpu = run["cpu_pct"]
        workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
        rss = sum(v for v in run["rss_mb"].values() if not math.isnan(v))
        lat = run["latency_ms"]
        out.append(
            f"{run['streams']:>7} {run['mode']:<10} {_f(run['limit_fps']):>8} "
            f"{_f(run['fps']):>8} {_f(run['ratio'], 3):>6} {_f(lat['p50']):>7} "
            f"{_f(lat['p95']):>7} {_f(lat['p99']):>7} {_f(cpu.get('supervisor')):>6} "
            f"{_f(workers):>9} {_f(cpu.get('mosquitto')):>8} "
            f"{_f(cpu.get('bench (subscriber)')):>7} {_f(run['others_pct']):>8} {rss:>7.0f} "
            f"{_f(run['cpu_efficiency'], 2):>5} {_f(run['ratio_to_free_cores'], 3):>6}"
        )
    out.append("")
    out.append(
        "ratio = frames/s / limit; limit = cores x 1000 / (decode + letterbox + inference "
        "core-ms), measured above in this run. CPU % is of one core over the counting window; "
        "'others' is CPU used on this machine by processes that are not part of the run. "
        "eff = the CPU the frames' work needed / the CPU the run's processes spent (1.0 = no "
        "overhead); r/free = an estimate: the ratio against the cores others left free."
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
    return "\n".join(out)


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
    left.plot(streams, [r["limit_fps"] for r in saturation], "k--", marker="o", label="limit")
    left.plot(streams, [r["fps"] for r in saturation], "b-", marker="o", label="edged")
    left.set_xlabel("streams")
    left.set_ylabel("frames/s")
    left.set_xticks(streams)
    left.set_ylim(bottom=0)
    ratio_axis = left.twinx()
    ratio_axis.plot(streams, [r["ratio"] for r in saturation], "g:", marker="s", label="ratio")
    ratio_axis.axhline(0.9, color="g", linewidth=0.5)
    ratio_axis.set_ylim(0, 1.1)
    ratio_axis.set_ylabel("ratio to the limit")
    lines = left.get_legend_handles_labels()
    more = ratio_axis.get_legend_handles_labels()
    left.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right")
    left.set_title(f"throughput, {doc['machine']['cores']} cores")
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
