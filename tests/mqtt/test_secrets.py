"""The MQTT password never leaves the box: not in a log line, not in any MQTT message.

A real `edged run` logs in to a mosquitto that requires a password (from `mqtt.password_file`),
publishes health (which names the broker), then is reloaded with the password written into
`mqtt.url` (refused: check-config and the reload both name `mqtt.url`; the daemon keeps the old
config and stays connected). Everything edged wrote is then searched for the password: its log
and stdout, the check-config output, every message a `#` subscriber saw, and the retained ones a
late subscriber is sent.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from tests.mqtt.test_security import USER, make_passwords
from tests.support.broker import Broker
from tests.support.daemon import Daemon, daemon_config
from tests.support.mqtt import Message, Subscriber

NODE = "sec"
# Characters a URL must percent-encode: the encoded form is searched for too.
PASSWORD = "s3cret/Pa55@word"
CONFIG = f"edged/{NODE}/config"
HEALTH = f"edged/{NODE}/health"


def config(broker: Broker, state: Path, password_file: Path, url: str) -> str:
    return daemon_config(
        NODE,
        state,
        url,
        health_interval=0.5,
        mqtt={"username": USER, "password_file": password_file},
    )


def leaks(text: str) -> list[str]:
    return [form for form in (PASSWORD, quote(PASSWORD, safe="")) if form in text]


def test_the_password_is_in_no_log_line_and_no_message(tmp_path: Path) -> None:
    _, pw_conf = make_passwords(tmp_path, PASSWORD)
    # Anonymous subscribers may read; edged logs in (a wrong password is still refused).
    broker = Broker(tmp_path, extra_conf=pw_conf)
    broker.start()
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")
    state = tmp_path / "state"
    good = config(broker, state, secret, broker.url)
    in_url = f"mqtt://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{broker.port}"
    bad = config(broker, state, secret, in_url)

    bad_file = tmp_path / "bad.toml"
    bad_file.write_text(bad)
    check = subprocess.run(
        [sys.executable, "-m", "edged", "check-config", str(bad_file)],
        capture_output=True,
        text=True,
    )
    assert check.returncode != 0
    assert "mqtt.url" in check.stdout + check.stderr, check.stdout + check.stderr

    subscriber = Subscriber(broker.port)
    daemon = Daemon(tmp_path, good)
    daemon.start()
    try:
        with daemon.dumped_on_failure():
            subscriber.wait_for(
                lambda ms: any(m.topic == HEALTH and m.json()["mqtt"]["connected"] for m in ms),
                30,
                "a health message from a logged-in daemon",
            )
            daemon.config.write_text(bad)
            daemon.signal(signal.SIGHUP)
            messages = subscriber.wait_for(
                lambda ms: any(m.topic == CONFIG and not m.json()["ok"] for m in ms),
                20,
                "the refused reload's config state",
            )
            refused = [m for m in messages if m.topic == CONFIG][-1].json()
            assert any(e.startswith(f"{daemon.config}: mqtt.url:") for e in refused["errors"])
            # Still running on the old config, still connected: health keeps coming.
            since = len(messages)
            subscriber.wait_for(
                lambda ms: any(
                    m.topic == HEALTH and m.json()["mqtt"]["connected"] for m in ms[since:]
                ),
                10,
                "health after the refused reload",
            )
        assert daemon.stop() == 0
        late = Subscriber(broker.port)
        try:
            retained = late.wait_for(
                lambda ms: {CONFIG, HEALTH} <= {m.topic for m in ms}, 10, "retained state"
            )
        finally:
            late.close()
    finally:
        subscriber.close()
        daemon.kill_all()
        broker.stop()

    everything: list[Message] = subscriber.snapshot() + retained
    assert len(everything) > 5
    for message in everything:
        assert not leaks(message.topic + message.payload.decode(errors="replace")), message
    written = daemon.log_path.read_text() + daemon.out_path.read_text()
    assert "mqtt_connected" in written
    assert not leaks(written)
    assert not leaks(check.stdout + check.stderr)
