"""The supervisor never loads the worker stack: inspected in a RUNNING `edged run`, workers up."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.broker import Broker
from tests.support.daemon import Daemon, cpu_worker, daemon_config, video_stream, wait_until
from tests.support.modules_probe import loaded_after
from tests.support.mqtt import Message, Subscriber

PROBE = Path(__file__).resolve().parent / "support" / "modules_probe.py"

# What a worker loads and the supervisor must not (docs/architecture.md, "Which part may know
# which"): pixels, the inference runtime, and the worker's own packages.
FORBIDDEN_TOP = ("numpy", "cv2", "onnxruntime", "av")
FORBIDDEN_EDGED = ("edged.worker", "edged.backends", "edged.detect")


def forbidden(modules: list[str]) -> list[str]:
    return [
        m
        for m in modules
        if m.split(".")[0] in FORBIDDEN_TOP
        or any(m == p or m.startswith(p + ".") for p in FORBIDDEN_EDGED)
    ]


def test_forbidden_names_what_a_worker_loads() -> None:
    # The filter itself: a fresh interpreter that imports the worker and its CPU backend has
    # them all (so the check below can fail).
    found = forbidden(loaded_after("edged.worker.main", "edged.backends.cpu", "onnxruntime"))
    wanted = ("numpy", "cv2", "onnxruntime", "edged.worker.main", "edged.backends", "edged.detect")
    for name in wanted:
        assert name in found, found


def test_running_supervisor_has_not_loaded_the_worker_stack(
    tmp_path: Path, assets: Path, broker: Broker
) -> None:
    config = daemon_config(
        "probe",
        tmp_path / "state",
        broker.url,
        homeassistant=True,
        workers=[cpu_worker(assets)],
        streams=[video_stream(assets, "street", "pedestrians-720p.avi", loop=True, detect_fps=5)],
    )
    subscriber = Subscriber(broker.port)
    daemon = Daemon(tmp_path, config, entry=(str(PROBE),))
    daemon.start()
    try:
        with daemon.dumped_on_failure():
            # Workers up and results handled by the supervisor (publisher, Home Assistant
            # counts, health): every supervisor code path a detection takes has run.
            def flowing(messages: list[Message]) -> bool:
                return sum(m.topic == "edged/probe/street/detections" for m in messages) >= 3

            subscriber.wait_for(flowing, 90, "3 detection messages from the running daemon")
            daemon.write_stdin("modules?")
            wait_until(lambda: daemon.output().strip() != "", 10, "the probe's answer")
            modules = json.loads(daemon.output().splitlines()[0])
            # It is the supervisor that answered, running its real code.
            assert "edged.supervisor.daemon" in modules
            assert "edged.mqtt.publisher" in modules
            assert "edged.spawn" in modules
            assert forbidden(modules) == []
            assert daemon.stop() == 0
    finally:
        subscriber.close()
        daemon.kill_all()
