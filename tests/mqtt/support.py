"""Test helpers: a reconnecting subscriber that validates every message, fake Results, configs.

The subscriber keeps a persistent MQTT v5 session (fixed id, clean start only the first time,
session expiry), and `persistent_broker` turns on mosquitto persistence, so messages the publisher
delivers while the subscriber is still reconnecting after a broker restart are queued for it, not
lost: what the tests measure is the publisher, not a race between two clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from referencing import Registry, Resource

from edged.config.model import HomeAssistantConfig, MqttConfig, NodeConfig
from edged.mqtt.payloads import load_schema
from edged.protocol import Detection, Result
from tests.support.broker import Broker

SCHEMAS = (
    "detections",
    "availability",
    "state",
    "config",
    "stream_status",
    "count",
    "ha_discovery",
)


def _registry() -> Registry:
    resources = []
    for name in SCHEMAS:
        schema = load_schema(name)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


_REGISTRY = _registry()
_VALIDATORS = {
    name: jsonschema.Draft202012Validator(load_schema(name), registry=_REGISTRY) for name in SCHEMAS
}


def schema_for(topic: str, prefix: str = "edged", discovery: str = "homeassistant") -> str | None:
    """Which shipped schema a topic's payload follows (None: not ours, e.g. HA's own status)."""
    levels = topic.split("/")
    if levels[0] == "test":  # the tests' own markers
        return None
    if levels[0] == discovery:
        return "ha_discovery" if levels[-1] == "config" else None
    if levels[0] != prefix or len(levels) < 3:
        raise AssertionError(f"unexpected topic {topic}")
    rest = levels[2:]
    if rest == ["status"]:
        return "availability"
    if rest == ["config"]:
        return "config"
    if len(rest) == 2 and rest[1] == "detections":
        return "detections"
    if len(rest) == 2 and rest[1] == "status":
        return "stream_status"
    if len(rest) == 3 and rest[1] == "count":
        return "count"
    return "state"


def validate(
    topic: str, payload: bytes, prefix: str = "edged", discovery: str = "homeassistant"
) -> None:
    """Raise unless the payload follows the shipped JSON Schema of its topic."""
    name = schema_for(topic, prefix, discovery)
    if name is None or payload == b"":  # empty retained = delete, allowed on every retained topic
        return
    doc: Any = payload.decode() if name == "availability" else json.loads(payload)
    _VALIDATORS[name].validate(doc)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """Collects every message on `topic_filter`, across broker restarts; validates each one."""

    port: int
    topic_filter: str = "#"
    prefix: str = "edged"
    discovery: str = "homeassistant"
    messages: list[Received] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[str] = field(default_factory=list)
    client_kwargs: dict[str, Any] = field(default_factory=dict)  # TLS, credentials
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client = aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            properties=props,
            max_queued_incoming_messages=0,
            **self.client_kwargs,
        )
        while True:
            try:
                async with client:
                    await client.subscribe(self.topic_filter, qos=1)
                    self.connected.set()
                    async for m in client.messages:
                        payload = (
                            bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
                        )
                        topic = m.topic.value
                        try:
                            validate(topic, payload, self.prefix, self.discovery)
                        except (jsonschema.ValidationError, ValueError, AssertionError) as exc:
                            self.errors.append(f"{topic}: {exc}")
                        self.messages.append(Received(topic, payload, m.retain, time.monotonic()))
                        self._new.set()
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)

    async def wait_for(
        self, pred: Callable[[list[Received]], bool], timeout: float, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), min(left, 0.5))
        assert not self.errors, self.errors

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    def detections(self, stream: str | None = None) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            if m.topic.endswith("/detections"):
                doc = m.json()
                if stream is None or doc["stream"] == stream:
                    out.append(doc)
        return out


@contextlib.asynccontextmanager
async def subscribed(port: int, topic_filter: str = "#", **kw: Any) -> AsyncIterator[Subscriber]:
    sub = Subscriber(port, topic_filter, **kw)
    task = asyncio.create_task(sub.run())
    try:
        await asyncio.wait_for(sub.connected.wait(), 10)
        yield sub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(pred: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll a condition with a deadline (the publisher has no event for every figure)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def persistent_broker(workdir: Path, **kw: Any) -> Broker:
    """A broker that keeps sessions and queued messages across its own restart."""
    store = workdir / "mosq-data"
    store.mkdir(exist_ok=True)
    extra = [*kw.pop("extra_conf", []), "persistence true", f"persistence_location {store}/"]
    return Broker(workdir, extra_conf=extra, **kw)


def result(
    stream: str, frame: int, n_boxes: int = 2, labels: tuple[str, ...] = ("person", "car")
) -> Result:
    dets = tuple(
        Detection(
            labels[i % len(labels)], i % 3, 0.5 + 0.01 * i, (10.0 * i, 20.0, 110.0 + i, 220.5)
        )
        for i in range(n_boxes)
    )
    return Result(stream, frame, time.time(), 1280, 720, 12.5, dets)


def configs(
    url: str, node: str = "edge", ha: bool = False, **mqtt: Any
) -> tuple[MqttConfig, NodeConfig, HomeAssistantConfig]:
    return (
        msgspec.convert({"url": url, **mqtt}, MqttConfig),
        NodeConfig(name=node),
        HomeAssistantConfig(enabled=ha),
    )
