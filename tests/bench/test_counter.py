"""The bench's detection counter against a real broker: mosquitto_sub as a child, paho as the
fallback; the same counts, stamps, health and bad-message handling from both."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import msgspec
import paho.mqtt.client as paho
import psutil
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edged.bench import counter as bench_counter
from tests.support.broker import Broker, free_port


def _needs_sub() -> None:
    # Not a skip: a missing mosquitto_sub is a broken install (scripts/setup.sh --dev installs it).
    assert shutil.which("mosquitto_sub"), "no mosquitto_sub: apt-get install mosquitto-clients"


def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _detection(stream: str, frame: int) -> tuple[str, bytes]:
    payload = {"stream": stream, "frame": frame, "ts_ms": time.time_ns() // 1_000_000, "x": []}
    topic = f"{bench_counter.PREFIX}/{bench_counter.NODE}/{stream}/detections"
    return topic, msgspec.json.encode(payload)


def _counts_and_skips(counter: bench_counter.Counter, port: int) -> None:
    topic = f"{bench_counter.PREFIX}/{bench_counter.NODE}"
    _publish_all(port, [_detection("s0", 1)])  # before the window: seen, not counted
    _until(lambda: counter.seen == {"s0"})
    start = time.time()
    counter.count_between(start, start + 60)
    messages = [_detection("s0", f) for f in (2, 3, 4)] + [_detection("s1", 7)]
    messages += [
        (f"{topic}/s0/detections", b"not json"),
        (f"{topic}/s1/detections", b'{"stream":\n"s1"}'),  # a newline: two bad lines
        (f"{topic}/health", b'{"workers": {"cpu0": {"pid": 12}}}'),
    ]
    _publish_all(port, messages)
    _until(lambda: counter.total == 5 and bool(counter.health))
    counter.settle(time.time())
    per_stream, latency_ms, _ = counter.counted()
    assert counter.frames() == 4
    assert {k: v.messages for k, v in per_stream.items()} == {"s0": 3, "s1": 1}
    s0 = per_stream["s0"]
    assert (s0.first_frame, s0.last_frame) == (2, 4)
    assert start <= s0.first_at <= s0.last_at <= time.time()
    assert len(latency_ms) == 4
    # Milliseconds (not seconds), and no message took longer than the test has run.
    longest = (time.time() - start) * 1000.0
    assert all(-5 < ms <= longest for ms in latency_ms), (latency_ms, longest)
    assert counter.health == {"workers": {"cpu0": {"pid": 12}}}
    assert counter.bad_lines >= 2


def test_mosquitto_sub_counts_with_its_own_stamps_and_is_stopped(broker: Broker) -> None:
    _needs_sub()
    counter = bench_counter.open_counter("127.0.0.1", broker.port)
    try:
        assert isinstance(counter, bench_counter.SubprocessCounter)
        (child,) = counter.processes()
        assert child.name() == "mosquitto_sub"
        _counts_and_skips(counter, broker.port)
        assert counter.bad_lines == 3  # bad JSON, and the two halves of the broken line
    finally:
        counter.close()
    assert counter.proc.returncode is not None
    assert not child.is_running()


def test_paho_fallback_counts_the_same(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(bench_counter.SUBSCRIBER_ENV, "paho")
    counter = bench_counter.open_counter("127.0.0.1", broker.port)
    try:
        assert isinstance(counter, bench_counter.PahoCounter)
        assert counter.processes() == []
        _counts_and_skips(counter, broker.port)
        assert counter.bad_lines == 2
    finally:
        counter.close()


def test_no_broker_is_a_clear_error_and_leaves_no_child() -> None:
    _needs_sub()
    before = {p.pid for p in psutil.Process().children()}
    with pytest.raises(RuntimeError, match="could not connect to the broker"):
        bench_counter.open_counter("127.0.0.1", free_port())
    after = psutil.Process().children()
    assert [p for p in after if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE] == []


def test_a_subscriber_that_dies_is_an_error_not_a_low_count(broker: Broker) -> None:
    _needs_sub()
    counter = bench_counter.open_counter("127.0.0.1", broker.port)
    try:
        counter.check()
        assert isinstance(counter, bench_counter.SubprocessCounter)
        counter.proc.kill()
        counter.proc.wait(5)
        with pytest.raises(RuntimeError, match=r"mosquitto_sub .* exited with -9"):
            counter.check()
        counter.settle(time.time())  # returns: nothing is left to read
    finally:
        counter.close()
