"""`edged bench`, short: parts measured, the real daemon run, sane figures, JSON and PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.bench import run_bench

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_one_stream_writes_sane_figures(tmp_path: Path, assets: Path) -> None:
    out = tmp_path / "out.json"
    env = dict(os.environ, EDGED_TEST_ASSETS=str(assets))
    done = run_bench(
        tmp_path, env, "--streams", "1", "--duration", "5", "--warmup", "2", "--json", str(out),
        "--quiet",
    )
    assert "frames/s" in done.stdout and "ratio" in done.stdout, done.stdout
    # The lines a closing note quotes: the default config, the reference, the overhead.
    assert "the default config" in done.stdout, done.stdout
    assert "decode reference, same run" in done.stdout and "OpenCV read" in done.stdout, done.stdout
    assert "host overhead per frame" in done.stdout, done.stdout
    assert "summary, 1 stream(s) at saturation: ratio to the limit" in done.stdout, done.stdout
    assert "core-ms a MQTT message published" in done.stdout, done.stdout

    doc = json.loads(out.read_text())
    assert doc["machine"]["cores"] >= 1
    # The daemon ran its defaults: "auto" resolved with the daemon's rules on this machine.
    layout = doc["layout"]
    assert layout["threads_auto"] is True and layout["decoder_threads"] is None, layout
    assert layout["threads"] == len(os.sched_getaffinity(0)), layout
    decode = doc["parts"]["decode"]
    assert [Path(d["video"]).name for d in decode] == ["pedestrians-720p.avi", "traffic-720p.mp4"]
    assert all(0 < d["cpu_ms"] < 100 for d in decode), decode
    infer = doc["parts"]["infer"]
    assert 0 < infer["pre_cpu_ms"] < infer["infer_cpu_ms"] < 1000, infer
    assert infer["infer_wall_ms"] > 0

    # Each part measured in two rounds; the limit uses its lowest figure (a disturbance on a
    # shared box only makes a part dearer, which would flatter the ratio).
    rounds = doc["parts"]["rounds"]
    assert len(rounds) == 2, rounds
    for i, kept in enumerate(decode):
        assert kept["cpu_ms"] == min(r["decode"][i]["cpu_ms"] for r in rounds), rounds
    assert infer["cpu_ms"] == min(r["infer"]["pre_cpu_ms"] + r["infer"]["infer_cpu_ms"]
                                  for r in rounds), rounds

    # The parts chained in one thread per core, in each round; the fastest round kept (a
    # disturbance only slows the chain, which would flatter the daemon beside it).
    chained = doc["parts"]["chain"]
    assert chained["threads"] == doc["machine"]["cores"], chained
    assert chained["fps"] == max(r["chain"]["fps"] for r in rounds), rounds
    assert 0 < chained["ratio"] < 1.5 and chained["frames"] > 0, chained
    # Its limit is over the videos its threads play, from the parts kept above.
    played = [decode[i % len(decode)]["cpu_ms"] for i in range(chained["threads"])]
    chain_work = sum(played) / len(played) + infer["cpu_ms"]
    assert abs(chained["limit_fps"] - chained["threads"] * 1000 / chain_work) < 0.05, chained
    assert abs(chained["overhead_ms"] - (chained["cpu_ms"] - chain_work)) < 0.01, chained
    assert "the parts chained, same run" in done.stdout, done.stdout
    assert f"(the parts chained alone: {chained['ratio']:.3f}" in done.stdout, done.stdout

    # A decoder edged does not own, measured in the same run, for each video.
    reference = doc["parts"]["reference"]
    assert [r["video"] for r in reference] == [d["video"] for d in decode]
    assert all(0 < r["cpu_ms"] < 100 for r in reference), reference

    saturation, half = doc["runs"]
    assert (saturation["mode"], half["mode"]) == ("saturation", "half-load")
    for run in (saturation, half):
        assert run["streams"] == 1
        assert run["decoder_threads"] == doc["machine"]["cores"]  # a lone stream gets the cores
        # Host overhead: each process's CPU a frame, the worker's beyond the work it needed,
        # adding up to the total, and agreeing with the run's own CPU figures.
        o = run["overhead_ms"]
        parts_sum = o["worker"] + o["supervisor"] + o["broker"] + o["subscriber"]
        assert abs(o["total"] - parts_sum) < 0.01, o
        cpu = run["cpu_pct"]
        assert abs(o["supervisor"] - cpu["supervisor"] * 10 / run["fps"]) < 0.01, (o, cpu)
        # What the supervisor published, counted by the broker: at least every detections
        # message (the broker's count is read once a second, so a little off the window).
        assert run["published_per_s"] >= 0.8 * run["fps"], run
        per_message = cpu["supervisor"] * 10 / run["published_per_s"]
        assert abs(run["supervisor_ms_per_message"] - per_message) < 0.001, run
        # CPU clocks tick in 10 ms: a quiet process may show none in a short window
        assert o["supervisor"] >= 0 and o["broker"] >= 0 and o["subscriber"] >= 0, o
        assert run["limit_fps"] > 0
        assert run["fps"] > 0 and run["frames"] > 0
        assert 0 < run["ratio"] < 1.5, run["ratio"]
        lat = run["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"], lat
        cpu = run["cpu_pct"]
        assert cpu["supervisor"] >= 0
        workers = [k for k in cpu if k.startswith("worker")]
        assert workers == ["worker cpu0"], cpu
        assert cpu["worker cpu0"] > 10, cpu  # it decoded and detected for the whole window
        rss = run["rss_mb"]
        assert rss["worker cpu0"] > 50 and rss["supervisor"] > 10, rss  # a model and a runtime
        assert all(v > 0 for v in rss.values()), rss
    # The limit is cores x 1000 / work: it agrees with the parts it was computed from.
    work = decode[0]["cpu_ms"] + infer["pre_cpu_ms"] + infer["infer_cpu_ms"]
    assert abs(saturation["limit_fps"] - doc["machine"]["cores"] * 1000 / work) < 0.05
    # At saturation every counted frame needed `work`: the rest of all our CPU is overhead.
    ours = sum(saturation["cpu_pct"].values()) * 10 / saturation["fps"]
    assert abs(saturation["overhead_ms"]["total"] - (ours - work)) < 0.01, saturation
    # The worker's CPU a frame by thread role, from the names its threads carry: the inference
    # loops did at least half their part alone; the source thread demuxed and letterboxed, and
    # with it FFmpeg's decoder threads (a lone stream has several, restarted each time the file
    # loops: those that ended in the window count in "other"); the rest of the worker is
    # "other", so the roles add up to the worker's own CPU a frame.
    w = saturation["in_place_ms"]
    assert w["inference_loops"] > 0.5 * w["inference_alone"] > 0, w
    assert w["sources"] > 0 and w["sources"] + w["other"] > 0.5 * w["sources_alone"], w
    worker_ms = saturation["cpu_pct"]["worker cpu0"] * 10 / saturation["fps"]
    roles = w["sources"] + w["inference_loops"] + w["other"]
    assert abs(roles - worker_ms) < 0.01, (w, worker_ms)
    assert "worker threads, in place (alone): sources" in done.stdout, done.stdout
    assert "in_place_ms" not in half  # realtime: not every decoded frame is detected
    # Half load detects fewer frames than saturation asks for.
    assert half["detect_fps"] > 0 and half["realtime"] is True
    assert half["latency_budget_ms"] > infer["infer_wall_ms"]

    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_the_daemon_runs_the_default_config_unless_a_variant_is_asked_for(tmp_path: Path) -> None:
    from edged.bench.run import RunPlan, StreamPlan, config_text

    streams = (StreamPlan("s0", "a.mp4", 25.0), StreamPlan("s1", "b.mp4", 30.0))
    plan = RunPlan(streams, "m.onnx", 1, None, False, 0.0, "mqtt://127.0.0.1:1", 1.0, 1.0)
    text = config_text(plan, tmp_path / "state")
    assert "threads" not in text and "health_interval" not in text, text
    tuned = RunPlan(
        streams,
        "m.onnx",
        1,
        3,
        False,
        0.0,
        "mqtt://127.0.0.1:1",
        1.0,
        1.0,
        stream_extra=("decoder_threads = 2",),
    )
    text = config_text(tuned, tmp_path / "state")
    assert text.count("threads = 3") == 1 and text.count("decoder_threads = 2") == 2, text


def test_the_no_tracking_variant_turns_tracking_off_in_a_config_the_daemon_accepts(
    tmp_path: Path, assets: Path
) -> None:
    from edged.bench.run import RunPlan, StreamPlan, config_text
    from edged.config.validate import parse_config

    media, model = assets / "media", str(assets / "models" / "yolox_nano.onnx")
    streams = (
        StreamPlan("s0", str(media / "pedestrians-720p.avi"), 25.0),
        StreamPlan("s1", str(media / "traffic-720p.mp4"), 30.0),
    )
    broker = "mqtt://127.0.0.1:1"
    default = RunPlan(streams, model, 1, None, False, 0.0, broker, 1.0, 1.0)
    variant = RunPlan(
        streams, model, 1, None, False, 0.0, broker, 1.0, 1.0,
        stream_extra=("tracking.enabled = false",),
    )
    path = tmp_path / "config.toml"
    on = parse_config(config_text(default, tmp_path / "state"), path)
    off = parse_config(config_text(variant, tmp_path / "state"), path)
    assert [s.tracking.enabled for s in on.streams] == [True, True]  # the default: tracked
    assert [s.tracking.enabled for s in off.streams] == [False, False]


def test_real_rate_work_counts_the_frames_actually_decoded() -> None:
    """A machine too busy to keep a file's rate decodes fewer frames: the work (and so the
    overhead beyond it) is charged for those, not for the file's nominal rate."""
    from types import SimpleNamespace

    from edged.bench.command import _work_pct
    from edged.bench.counter import StreamCount
    from edged.bench.run import RunPlan, StreamPlan

    streams = (StreamPlan("s0", "a.mp4", 25.0, decode_ms=2.0),)
    plan = RunPlan(streams, "m.onnx", 1, None, True, 5.0, "mqtt://127.0.0.1:1", 1.0, 10.0)
    behind = StreamCount(messages=50, first_frame=0, last_frame=100, first_at=0.0, last_at=10.0)
    result = SimpleNamespace(fps=5.0, per_stream={"s0": behind})
    work_ms = 2.0 + 8.0  # decode + letterbox and inference
    # 10 frames/s decoded x 2 ms + 5 detections/s x 8 ms = 60 ms a second = 6 % of a core
    assert abs(_work_pct(result, plan, work_ms) - 6.0) < 1e-9
    unknown = SimpleNamespace(fps=5.0, per_stream={})
    # without two detections to count from, the file's rate: 25 x 2 + 5 x 8 = 90 ms a second
    assert abs(_work_pct(unknown, plan, work_ms) - 9.0) < 1e-9
