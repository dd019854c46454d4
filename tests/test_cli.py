"""A newcomer's first run: `edged run --print` shows results without an MQTT client, and a broker
that is not there yet is waited for, not fatal."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.supervisor.test_run_e2e import two_stream_config
from tests.support.broker import Broker, free_port
from tests.support.daemon import Daemon, wait_until
from tests.support.datagram import receiver
from tests.support.mqtt import Subscriber
from tests.systemd.journal_parse import parse_entry


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


def test_a_config_error_at_start_is_logged_as_journal_errors_with_the_key(
    tmp_path: Path,
) -> None:
    # What journald gets from `edged run` under systemd: entries on its native socket (here the
    # test's socket), at error priority, with the key path as a field; and exit code 2, which
    # the unit's RestartPreventExitStatus=2 turns into an immediate failure.
    journal = tmp_path / "journal.sock"
    sock = receiver(str(journal), 0)
    config = tmp_path / "config.toml"
    config.write_text('[node]\nname = "box"\nhealth_interval = "often"\n')
    env = {**os.environ, "EDGED_LOG_FORMAT": "journal", "EDGED_JOURNAL_SOCKET": str(journal)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edged", "run", "--config", str(config)],
            capture_output=True, text=True, timeout=60, env=env,
        )
        entries = []
        with contextlib.suppress(BlockingIOError):
            while True:
                entries.append(parse_entry(sock.recv(65536)))
    finally:
        sock.close()
    assert done.returncode == 2, done.stderr
    rejected = [e for e in entries if e["MESSAGE"].startswith("config rejected")]
    assert [e["EDGED_KEY"] for e in rejected] == ["node.health_interval"], entries
    assert rejected[0]["PRIORITY"] == "3"
    assert rejected[0]["EDGED_FILE"] == str(config)
    assert rejected[0]["EDGED_PROCESS"] == "supervisor"
    summary = [e for e in entries if e["MESSAGE"].startswith("config not accepted")]
    assert summary and summary[0]["PRIORITY"] == "3", entries


def test_check_config_finds_fetched_models_in_the_state_dir_it_is_given(
    tmp_path: Path, assets: Path
) -> None:
    # The operator's `edged check-config` runs as root with no $STATE_DIRECTORY: --state-dir
    # (or node.state_dir in the config) points it where the service finds its models.
    state = tmp_path / "var-lib-edged"
    (state / "models").mkdir(parents=True)
    (state / "models" / "yolox_nano.onnx").symlink_to(assets / "models" / "yolox_nano.onnx")
    config = tmp_path / "config.toml"
    config.write_text(
        '[[workers]]\nname = "cpu0"\nmodel = "yolox-nano"\n\n'
        f'[[streams]]\nname = "cam"\nsource = "{assets / "media" / "traffic-720p.mp4"}"\n'
        'worker = "cpu0"\n'
    )
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "elsewhere")}
    env.pop("STATE_DIRECTORY", None)

    def check(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edged", "check-config", str(config), *extra],
            capture_output=True, text=True, timeout=60, env=env,
        )

    without = check()
    assert without.returncode == 2
    assert "workers[0].model" in without.stderr and "not fetched yet" in without.stderr
    given = check("--state-dir", str(state))
    assert given.returncode == 0, given.stderr
    assert "ok (1 workers, 1 streams)" in given.stdout
