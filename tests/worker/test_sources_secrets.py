"""A camera's password never leaves the box, and every failing camera says why.

A real `edged run` with cameras on the real RTSP server: one with the right password (it must
detect), one with a wrong password, one with none, a missing mount, a refused port and a silent
server. Everything edged wrote is then searched for both passwords (plain and percent-encoded):
its log and stdout, every MQTT message a `#` subscriber saw and the retained ones a late
subscriber is sent, and the files in its state directory; a camera that drops the connection
mid-stream (and is reopened) puts its URL through the error path too. While a failing camera is
retried its status stays offline with its reason. The log must be JSON lines only (FFmpeg's own
messages included, with the stream's name), and the status and health of each camera must carry
its reason.
"""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from urllib.parse import quote

from tests.support.broker import Broker
from tests.support.daemon import Daemon, cpu_worker, daemon_config
from tests.support.mqtt import Message, Subscriber
from tests.support.rtsp import RTSP_PASSWORD, RTSP_USER, RtspServer
from tests.support.rtsp_faults import Proxy, SilentServer

NODE = "cams"
WRONG_PASSWORD = "Wr0ng:pa55/word"
HEALTH = f"edged/{NODE}/health"
EXPECTED = {
    "wrongpass": "unauthorized",
    "nopass": "unauthorized",
    "missing": "not_found",
    "refused": "connection_refused",
    "silent": "no_answer",
}


def leaks(text: str) -> list[str]:
    forms = [RTSP_PASSWORD, quote(RTSP_PASSWORD, safe=""), WRONG_PASSWORD]
    forms += [quote(WRONG_PASSWORD, safe="")]
    # and as an RTSP Basic Authorization header carries them
    forms += [base64.b64encode(f"{RTSP_USER}:{p}".encode()).decode() for p in forms[::2]]
    return [f for f in forms if f in text]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def published(messages: list[Message], stream: str) -> list[dict]:  # type: ignore[type-arg]
    """A camera's status messages as edged published them (not retained copies)."""
    topic = f"edged/{NODE}/{stream}/status"
    return [m.json() for m in messages if m.topic == topic and not m.retain]


def config(assets: Path, broker: Broker, state: Path, cameras: dict[str, str]) -> str:
    return daemon_config(
        NODE,
        state,
        broker.url,
        health_interval=0.5,
        workers=[cpu_worker(assets)],
        streams=[
            {
                "name": name,
                "source": url,
                "worker": "cpu0",
                "detect_fps": 5,
                "open_timeout": 2,
                "reconnect_delay": 1,
            }
            for name, url in cameras.items()
        ],
    )


def test_passwords_stay_in_and_failing_cameras_say_why(
    tmp_path: Path, assets: Path, broker: Broker, rtsp_server: RtspServer
) -> None:
    with SilentServer() as silent, Proxy(rtsp_server.port, close_after_bytes=400_000) as dropping:
        userinfo = f"{RTSP_USER}:{quote(RTSP_PASSWORD, safe='')}"
        cameras = {
            "good": rtsp_server.url("/secure", user=RTSP_USER, password=RTSP_PASSWORD),
            "dropping": dropping.url("/secure", userinfo),
            "wrongpass": rtsp_server.url("/secure", user=RTSP_USER, password=WRONG_PASSWORD),
            "nopass": rtsp_server.url("/secure"),
            "missing": rtsp_server.url("/missing"),
            "refused": f"rtsp://{RTSP_USER}:{quote(WRONG_PASSWORD, safe='')}@127.0.0.1:"
            f"{closed_port()}/cam",
            "silent": silent.url(),
        }
        subscriber = Subscriber(broker.port)
        daemon = Daemon(tmp_path, config(assets, broker, tmp_path / "state", cameras))
        daemon.start()
        try:
            with daemon.dumped_on_failure():

                def settled(messages: list[Message]) -> bool:
                    health = [m.json() for m in messages if m.topic == HEALTH]
                    detected = any(m.topic == f"edged/{NODE}/good/detections" for m in messages)
                    # each failing camera retried at least once, the dropping one reopened
                    retried = all(
                        sum(s["status"] == "offline" for s in published(messages, n)) >= 2
                        for n in EXPECTED
                    )
                    reopened = [s["status"] for s in published(messages, "dropping")]
                    return (
                        detected
                        and retried
                        and "offline" in reopened
                        and "online" in reopened[reopened.index("offline") :]
                        and any(
                            all(h["streams"][n]["reason"] == r for n, r in EXPECTED.items())
                            for h in health
                        )
                    )

                messages = subscriber.wait_for(settled, 60, "detections and every reason")
            assert daemon.stop() == 0
            late = Subscriber(broker.port)
            try:
                topics = {f"edged/{NODE}/{n}/status" for n in cameras}
                retained = late.wait_for(
                    lambda ms: topics <= {m.topic for m in ms}, 10, "retained statuses"
                )
            finally:
                late.close()
        finally:
            subscriber.close()
            daemon.kill_all()

    health = [m.json() for m in messages if m.topic == HEALTH][-1]
    for name, reason in EXPECTED.items():
        stream = health["streams"][name]
        assert (stream["status"], stream["reason"]) == ("offline", reason), stream
        assert stream["detail"], stream
    for name, reason in EXPECTED.items():
        # once offline, every status published says why (the retained one at any moment does)
        statuses = published(messages, name)
        first = next(i for i, s in enumerate(statuses) if s["status"] == "offline")
        assert {(s["status"], s["reason"]) for s in statuses[first:]} == {("offline", reason)}
        assert all(s["detail"] for s in statuses[first:]), statuses

    everything = subscriber.snapshot() + retained
    for message in everything:
        assert not leaks(message.topic + message.payload.decode(errors="replace")), message
    log = daemon.log_path.read_text()
    written = log + daemon.out_path.read_text()
    assert not leaks(written)
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert not leaks(path.read_bytes().decode(errors="replace")), path
    # The log is JSON lines only; FFmpeg's own messages among them, with the camera's name.
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    ffmpeg = [r for r in records if r.get("event") == "ffmpeg"]
    assert any(r.get("stream") == "wrongpass" for r in ffmpeg), ffmpeg[:10]
    # The URL is shown, its password masked.
    offline = [r for r in records if r.get("event") == "stream offline"]
    assert any(f"{RTSP_USER}:***@" in r.get("source", "") for r in offline), offline[:5]
