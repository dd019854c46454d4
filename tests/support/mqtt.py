"""A real MQTT subscriber for tests (paho, its own network thread), collecting every message."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float  # time.time()

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    def __init__(
        self,
        port: int,
        topics: tuple[str, ...] = ("#",),
        protocol: int = paho.MQTTv5,
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._topics = topics
        self._paho = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self._paho.on_connect = self._on_connect
        self._paho.on_message = self._on_message
        self._paho.on_subscribe = lambda *a: self._subscribed.set()
        if username is not None:
            self._paho.username_pw_set(username, password)
        self._paho.connect("127.0.0.1", port, keepalive=10)
        self._paho.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"could not subscribe on 127.0.0.1:{port}")

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, msg.payload, bool(msg.retain), time.time()))

    def snapshot(self, topic_filter: Callable[[str], bool] = lambda t: True) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if topic_filter(m.topic)]

    def on(self, topic: str) -> list[Message]:
        return self.snapshot(lambda t: t == topic)

    def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout: float, what: str
    ) -> list[Message]:
        """Wait until `predicate(all messages)` holds; fail with `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.snapshot()
            if predicate(messages):
                return messages
            time.sleep(0.05)
        topics = sorted({m.topic for m in self.snapshot()})
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; topics: {topics}")

    def window(self, seconds: float) -> tuple[float, list[Message]]:
        """When a window of `seconds` began (time.time()) and every message so far at its end.
        The window is a scenario's length to count over, not a wait on a condition."""
        start = time.time()
        time.sleep(seconds)
        return start, self.snapshot()

    def close(self) -> None:
        self._paho.loop_stop()
        self._paho.disconnect()
