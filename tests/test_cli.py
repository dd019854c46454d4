"""A newcomer's first run: `edged run --print` shows results without an MQTT client, and a broker
that is not there yet is waited for, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

from tests.supervisor.test_run_e2e import two_stream_config
from tests.support.broker import Broker, free_port
from tests.support.daemon import Daemon, wait_until
from tests.support.mqtt import Subscriber


def printed(daemon: Daemon, stream: str) -> list[dict]:  # type: ignore[type-arg]
    lines = daemon.out_path.read_text(errors="replace").splitlines()
    topic = f"edged/e2e/{stream}/detections"
    return [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith(topic + " ")]


def test_print_without_a_broker_then_the_broker_comes(tmp_path: Path, assets: Path) -> None:
    broker = Broker(tmp_path, port=free_port())  # not started yet
    daemon = Daemon(
        tmp_path, two_stream_config(assets, broker, tmp_path / "state"), args=("--print",)
    )
    daemon.start()
    try:
        with daemon.dumped_on_failure():
            wait_until(lambda: len(printed(daemon, "street")) >= 3, 60, "printed detections")
            first = printed(daemon, "street")[0]
            assert first["stream"] == "street" and first["width"] == 1280
            assert daemon.proc is not None and daemon.proc.poll() is None  # still running
            assert "mqtt" in daemon.log()  # the failed connection is reported

            broker.start()
            subscriber = Subscriber(broker.port)
            try:
                subscriber.wait_for(
                    lambda ms: sum(m.topic == "edged/e2e/road/detections" for m in ms) >= 3,
                    90,
                    "detections once the broker is up",
                )
            finally:
                subscriber.close()
    finally:
        code = daemon.stop(timeout=10)
        broker.stop()
    assert code == 0
