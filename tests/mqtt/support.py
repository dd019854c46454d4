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
from edged.mqtt.publisher import Publisher
from edged.protocol import Detection, Result, detections_json
from tests.support.broker import Broker

SCHEMAS = (
    "detections",
    "availability",
    "state",
    "config",
    "stream_status",
    "count",
    "ha_discovery",
    "event",
    "zone_count",
    "line_count",
    "detection",
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
    if rest == ["events"] or (len(rest) == 2 and rest[1] == "events"):
        return "event"
    if len(rest) == 3 and rest[1] == "snapshot":
        return None  # a JPEG
    if len(rest) == 4 and rest[1] == "zone":
        return "zone_count"
    if len(rest) == 4 and rest[1] == "line":
        return "line_count"
    if len(rest) == 2 and rest[1] == "detection":
        return "detection"
    if len(rest) == 3 and rest[1:] == ["detection", "set"]:
        return None  # a command: ON or OFF from Home Assistant, Node-RED or a script
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
    closing: bool = False
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        identifier = f"test-sub-{uuid.uuid4().hex[:8]}"
        first = True
        while True:
            # A fresh client per connection (reusing one across a broker restart can leave
            # aiomqtt's connect lock held under uvloop); the session is resumed explicitly.
            client = aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=identifier,
                protocol=aiomqtt.ProtocolVersion.V5,
                properties=props,
                clean_start=first,
                max_queued_incoming_messages=0,
                **self.client_kwargs,
            )
            try:
                async with client:
                    first = False
                    await client.subscribe(self.topic_filter, qos=1)
                    self.connected.set()
                    async for m in client.messages:
                        self._receive(m)
            except aiomqtt.MqttError:
                self.connected.clear()
                if self.closing:
                    # A cancel during aiomqtt's DISCONNECT can surface as MqttError: honour it.
                    return
                await asyncio.sleep(0.05)

    def _receive(self, m: aiomqtt.Message) -> None:
        payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
        topic = m.topic.value
        try:
            validate(topic, payload, self.prefix, self.discovery)
        except (jsonschema.ValidationError, ValueError, AssertionError) as exc:
            self.errors.append(f"{topic}: {exc}")
        self.messages.append(Received(topic, payload, m.retain, time.monotonic()))
        self._new.set()

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
        sub.closing = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running(pub: Publisher) -> AsyncIterator[Publisher]:
    """The publisher's connection task for the block; stopped, and awaited, on the way out."""
    task = asyncio.create_task(pub.run(), name="mqtt")
    try:
        yield pub
    finally:
        await pub.stop()
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
    dets = [
        Detection(
            labels[i % len(labels)], i % 3, 0.5 + 0.01 * i, (10.0 * i, 20.0, 110.0 + i, 220.5)
        )
        for i in range(n_boxes)
    ]
    return Result(stream, frame, time.time(), 1280, 720, 12.5, detections_json(dets))


def configs(
    url: str, node: str = "edge", ha: bool = False, **mqtt: Any
) -> tuple[MqttConfig, NodeConfig, HomeAssistantConfig]:
    return (
        msgspec.convert({"url": url, **mqtt}, MqttConfig),
        NodeConfig(name=node),
        HomeAssistantConfig(enabled=ha),
    )


class ProcessSubscriber(Subscriber):
    """The same collector, but the MQTT client is `mosquitto_sub` in its own process.

    Used across broker restarts: two aiomqtt clients on one event loop can disturb each other
    there (aiomqtt 2.5 registers socket callbacks with `call_soon_threadsafe`, so a callback for a
    dead socket can land on a new socket that reused its file descriptor; see docs/mqtt.md)."""

    proc: asyncio.subprocess.Process | None = None
    out_path: Path | None = None
    _read_upto: int = 0

    async def start(self, workdir: Path) -> None:
        self.out_path = workdir / f"sub-{uuid.uuid4().hex[:6]}.txt"
        out = self.out_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            "mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-c",
            "-i", f"test-psub-{uuid.uuid4().hex[:8]}", "-q", "1", "-t", self.topic_filter,
            "-F", "%r %t %p", stdout=out,
        )  # fmt: skip
        out.close()
        # Ready once a marker published after the subscription comes back.
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            deadline = time.monotonic() + 10
            while not self.on("test/ready"):
                assert time.monotonic() < deadline, "mosquitto_sub did not subscribe"
                await client.publish("test/ready", "x", qos=1)
                await asyncio.sleep(0.1)
                self.poll()

    def poll(self) -> None:
        assert self.out_path is not None
        data = self.out_path.read_bytes()
        end = data.rfind(b"\n") + 1
        for line in data[self._read_upto : end].splitlines():
            retain, topic, payload = [*line.split(b" ", 2), b""][:3]
            topic_s = topic.decode()
            try:
                validate(topic_s, payload, self.prefix, self.discovery)
            except (jsonschema.ValidationError, ValueError, AssertionError) as exc:
                self.errors.append(f"{topic_s}: {exc}")
            self.messages.append(Received(topic_s, payload, retain == b"1", time.monotonic()))
        self._read_upto = end

    async def wait_for(
        self, pred: Callable[[list[Received]], bool], timeout: float, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        self.poll()
        while not pred(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.05)
            self.poll()
        assert not self.errors, self.errors

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def process_subscribed(port: int, workdir: Path, **kw: Any) -> AsyncIterator[Subscriber]:
    sub = ProcessSubscriber(port, **kw)
    await sub.start(workdir)
    try:
        yield sub
    finally:
        await sub.stop()
