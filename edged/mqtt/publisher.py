"""The MQTT publisher: one connection task with a reconnect loop, the outbox, retained state.

Runs in the supervisor process, on its event loop; nothing here blocks the loop (file reads for
credentials and certificates go through `asyncio.to_thread`, SQLite through the outbox's thread).

What a crash of the supervisor costs: durable messages (detections) that were only in memory while
the broker was up and not yet acknowledged are lost, at most a few hundred milliseconds' worth;
everything queued during an outage is on disk within one loop iteration and is sent after the
restart. Retained state is not queued: the supervisor sets it again after a restart. The broker
publishes our last will (`offline`, retained) when the connection dies without a DISCONNECT.

Delivery: durable messages are sent QoS 1, pipelined (see `sender.py`: up to `WINDOW`
unacknowledged, in order on one connection). A failed or timed-out publish ends the connection;
everything unacknowledged is sent again, in order, after the reconnect. So a subscriber sees every
message at least once, in `seq` order per stream, possibly with duplicates (same `id`) around a
reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from edged.backoff import Backoff
from edged.config.model import HomeAssistantConfig, MqttConfig, NodeConfig, StreamConfig
from edged.mqtt import discovery
from edged.mqtt.client import REFUSED, ConnectFailed, Connection, ConnectionLost, Settings
from edged.mqtt.connection import (
    client_id,
    describe,
    parse_url,
    read_password,
    tls_context,
)
from edged.mqtt.discovery import StreamEntities
from edged.mqtt.outbox import Outbox
from edged.mqtt.payloads import encode_detections, encode_json, encode_state
from edged.mqtt.sender import WINDOW, DurableSender
from edged.mqtt.topics import OFFLINE, ONLINE, Topics, check_suffix
from edged.protocol import Result, detection_labels
from edged.urls import redact_url

log = structlog.get_logger(__name__)

# `mqtt.linger_ms`: how long the sender lets messages gather before writing them (fewer socket
# writes and wake-ups for more latency); 0, the default, writes each detection at once
# (sender.py, `_write_now`). A backlog is sent without lingering.
# Retained state messages sent concurrently (latest value wins, so no ordering between topics).
STATE_BATCH = 32
# The v5 session outlives a short disconnect, so the broker keeps our subscription.
SESSION_EXPIRY_S = 3600
# The discovery topics edged has announced and not yet seen deleted, kept in the state
# directory: a stream or label removed while edged was stopped is deleted at the next start.
ANNOUNCED_FILE = "ha-announced.json"
# What a detection command may say (case-insensitive): Home Assistant's switch sends ON/OFF.
_COMMAND_WORDS = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}


def parse_detection_command(payload: bytes) -> bool | None:
    """ON/OFF (or true/false, 1/0) -> enabled; None when it is none of these."""
    return _COMMAND_WORDS.get(payload.decode("utf-8", "replace").strip().lower())


class PublisherState(enum.Enum):
    """Where the publisher's connection task is; `Publisher.state`, health's `mqtt.state`."""

    IDLE = "idle"  # run() not started yet
    CONNECTING = "connecting"  # an attempt under way (TCP, TLS, CONNECT, waiting for CONNACK)
    CONNECTED = "connected"  # accepted; the outbox and retained state are being sent
    BACKOFF = "backoff"  # the last attempt failed or the connection was lost: waiting to retry
    STOPPED = "stopped"  # run() has returned (after stop())


class _Wake(enum.Enum):
    """Why the session was asked to end."""

    RECONFIGURE = "reconfigure"  # reconnect at once with new settings
    STOP = "stop"  # say `offline`, disconnect, return


class _Stop(Exception):
    """The session ends on purpose (stop or reconfigure), not because of an error."""


class Publisher:
    def __init__(
        self,
        mqtt: MqttConfig,
        node: NodeConfig,
        homeassistant: HomeAssistantConfig,
        state_dir: Path,
        *,
        echo: Callable[[str, bytes], None] | None = None,
        on_detection: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._mqtt = mqtt
        self._node = node
        self._ha = homeassistant
        self._topics = Topics(mqtt.topic_prefix, node.name, homeassistant.discovery_prefix)
        self._echo = echo
        self._on_detection = on_detection
        self._outbox = Outbox(Path(state_dir), mqtt.outbox.memory_messages, mqtt.outbox.disk_bytes)

        self._states: dict[str, bytes] = {}  # suffix -> retained payload (b"" = delete)
        self._discovery: dict[str, bytes] = {}  # full topic -> retained payload (b"" = delete)
        self._dirty: dict[str, None] = {}  # full topics to (re)publish, in insertion order
        self._state_event = asyncio.Event()
        self._streams: tuple[str, ...] = ()
        self._tracked: set[str] = set()
        self._labels_of: dict[str, tuple[str, ...]] = {}
        self._entities: tuple[StreamEntities, ...] = ()
        # Read before the loop runs, like the outbox (a few hundred bytes).
        self._announced_path = Path(state_dir) / ANNOUNCED_FILE
        self._announced: set[str] = _read_announced(self._announced_path)
        self._announced_saved = set(self._announced)
        self._counts: dict[str, dict[str, int]] = {}  # stream -> label -> last published count

        self._state = PublisherState.IDLE
        self._connected_event = asyncio.Event()  # set exactly while CONNECTED
        self._wake_reason: _Wake | None = None
        self._wake = asyncio.Event()  # stop() or reconfigure() wants the session to end
        self._finished = asyncio.Event()
        # mqtt.protocol = "auto": the version this broker accepted (None: not known yet, try 5).
        self._auto_protocol: str | None = None
        self._protocol_in_use = ""
        self._task: asyncio.Task[None] | None = None
        self._old_availability = ""  # after a node/prefix rename: mark the old tree offline
        self._connects = 0
        self._failures = 0
        self._last_error = ""

    # --- called by the supervisor ------------------------------------------------------------

    @property
    def state(self) -> PublisherState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is PublisherState.CONNECTED

    async def wait_connected(self) -> None:
        """Return once the publisher is connected (at once if it is)."""
        await self._connected_event.wait()

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def publish_detections(self, stream: str, result: Result) -> None:
        try:
            seq = self._outbox.next_seq(stream)
            payload = encode_detections(self._node.name, seq, result, stream=stream)
            topic = self._topics.detections(stream)
            self._outbox.put(topic, payload)
            self._echo_out(topic, payload)
            if self._ha.enabled and stream in self._labels_of and stream not in self._tracked:
                self._update_counts(stream, result)
        except Exception:
            # Never raise into the supervisor's result path; a bug here is logged, loudly.
            log.exception("mqtt_publish_detections_failed", stream=stream)

    def set_state(self, suffix: str, payload: dict[str, Any] | str) -> None:
        check_suffix(suffix)
        self._set_state(suffix, encode_state(payload))

    def set_state_bytes(self, suffix: str, payload: bytes) -> None:
        """A retained value that is not JSON (a snapshot's JPEG)."""
        check_suffix(suffix)
        self._set_state(suffix, payload)

    @property
    def node_name(self) -> str:
        return self._node.name

    def next_seq(self, series: str) -> int:
        """The next number of a durable series (a stream's detections, its events)."""
        return self._outbox.next_seq(series)

    def publish_durable(self, suffix: str, payload: bytes) -> None:
        """Queue a QoS 1 message on `<prefix>/<node>/<suffix>` through the outbox."""
        topic = self._topics.state(check_suffix(suffix))
        self._outbox.put(topic, payload)
        self._echo_out(topic, payload)

    def set_streams(
        self,
        streams: Sequence[StreamConfig],
        labels_of: Mapping[str, Sequence[str]],
        entities: Sequence[StreamEntities] | None = None,
    ) -> None:
        """The configured streams; `entities` overrides what each announces to Home Assistant
        (default: from its config, `discovery.stream_entities`)."""
        self._streams = tuple(s.name for s in streams)
        # A tracked stream's counts come debounced from its tracker (edged.supervisor.events),
        # not from each frame's boxes.
        self._tracked = {s.name for s in streams if s.tracking.enabled}
        self._labels_of = {s: tuple(labels_of.get(s, ())) for s in self._streams}
        if entities is None:
            entities = [discovery.stream_entities(s, self._labels_of[s.name]) for s in streams]
        self._entities = tuple(entities)
        self._outbox.reserve(list(self._streams))
        self._rebuild_ha()

    def set_detection(self, stream: str, enabled: bool) -> None:
        """Retained `<stream>/detection`: the state of the stream's detection switch."""
        self.set_state(Topics.detection_suffix(stream), {"stream": stream, "enabled": enabled})

    async def reconfigure(
        self, mqtt: MqttConfig, node: NodeConfig, homeassistant: HomeAssistantConfig
    ) -> None:
        same = mqtt == self._mqtt and node.name == self._node.name and homeassistant == self._ha
        self._node = node
        if same:
            return
        old = self._topics
        self._mqtt, self._ha = mqtt, homeassistant
        self._topics = Topics(mqtt.topic_prefix, node.name, homeassistant.discovery_prefix)
        self._outbox.memory_messages = mqtt.outbox.memory_messages
        if old.base != self._topics.base:
            self._old_availability = old.availability
            self._counts.clear()
        self._rebuild_ha()
        log.info("mqtt_reconfigure", url=redact_url(mqtt.url), base=self._topics.base)
        self._auto_protocol = None
        if self._wake_reason is not _Wake.STOP:
            self._wake_reason = _Wake.RECONFIGURE
        self._wake.set()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        # 1 s to 60 s; the jitter keeps a fleet of boxes from reconnecting in lockstep.
        backoff = Backoff(first=1.0, cap=60.0, jitter=0.25)
        try:
            while not self._stop_requested():
                self._enter(PublisherState.CONNECTING)
                try:
                    await self._connect_once(backoff)
                except _Stop:
                    log.info("mqtt_disconnected", reason="requested")
                except Exception as exc:  # network, TLS, settings, anything: never crash
                    self._note_failure(exc, lost=self._state is PublisherState.CONNECTED)
                finally:
                    self._enter(PublisherState.BACKOFF)
                    self._outbox.set_offline()
                if self._stop_requested():
                    break
                if self._wake_reason is _Wake.RECONFIGURE:
                    backoff.reset()
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff.delay())
        finally:
            self._enter(PublisherState.STOPPED)
            self._finished.set()

    async def stop(self, flush_timeout: float = 5.0) -> None:
        if self._wake_reason is _Wake.STOP:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flush_timeout
        if self.alive():
            # Flush while still connected: what is acknowledged now need not wait for a restart.
            # Polling is fine here: it happens once, at shutdown, bounded by the deadline.
            while self.connected and not self._flushed() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            self._wake_reason = _Wake.STOP
            self._wake.set()
            try:
                # Time for `offline` and DISCONNECT (each bounded by the publish timeout).
                grace = max(deadline - loop.time(), 0.0) + self._mqtt.publish_timeout
                await asyncio.wait_for(self._finished.wait(), grace)
            except TimeoutError:
                if self._task is not None:
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._task
        self._wake_reason = _Wake.STOP
        await self._outbox.close()
        log.info("mqtt_stopped", unsent=self._outbox.depth, published=self._outbox.acked)

    def stats(self) -> dict[str, Any]:
        disk = self._outbox.disk
        return {
            "connected": self.connected,
            "state": self._state.value,
            "protocol": self._protocol_in_use,
            "broker": redact_url(self._mqtt.url),
            "connects": self._connects,
            "reconnects": max(self._connects - 1, 0),
            "connect_failures": self._failures,
            "outbox_depth": self._outbox.depth,
            "outbox_memory": self._outbox.memory_depth,
            "outbox_disk": disk.rows,
            "outbox_disk_bytes": disk.bytes,
            "outbox_peak": self._outbox.peak,
            "dropped": self._outbox.dropped,
            "rejected": self._outbox.rejected,
            "published": self._outbox.acked,
            "last_error": self._last_error,
            "disk_error": self._outbox.disk_error,
        }

    # --- connection --------------------------------------------------------------------------

    async def _connect_once(self, backoff: Backoff) -> None:
        if self._wake_reason is _Wake.RECONFIGURE:
            self._wake_reason = None
        if self._wake_reason is None:
            self._wake.clear()
        mqtt, topics = self._mqtt, self._topics
        addr = parse_url(mqtt.url)
        password = await asyncio.to_thread(read_password, mqtt)
        ctx = await asyncio.to_thread(tls_context, mqtt.tls) if addr.tls else None
        protocol = (self._auto_protocol or "5") if mqtt.protocol == "auto" else mqtt.protocol
        settings = Settings(
            host=addr.host,
            port=addr.port,
            client_id=client_id(mqtt, self._node),
            v5=protocol == "5",
            keepalive=mqtt.keepalive,
            will_topic=topics.availability,
            will_payload=OFFLINE.encode(),
            username=mqtt.username or None,
            password=password,
            tls=ctx,
            session_expiry_s=SESSION_EXPIRY_S,
            connect_timeout=max(mqtt.publish_timeout, 5.0),
            max_inflight=WINDOW + STATE_BATCH + 8,
        )
        conn = await self._open(settings, mqtt)
        try:
            self._protocol_in_use = "5" if conn.v5 else "3.1.1"
            self._enter(PublisherState.CONNECTED)
            self._connects += 1
            backoff.reset()
            log.info(
                "mqtt_connected",
                broker=f"{addr.host}:{addr.port}",
                tls=addr.tls,
                protocol=self._protocol_in_use,
                client_id=settings.client_id,
                after_failures=self._failures,
                outbox=self._outbox.depth,
            )
            self._last_error = ""
            await self._session(conn, mqtt, topics)
        finally:
            conn.abort("session over")

    async def _open(self, settings: Settings, mqtt: MqttConfig) -> Connection:
        """Connect; with `protocol = "auto"` fall back to 3.1.1 when the broker refuses MQTT 5."""
        conn = Connection(settings, self._on_message)
        try:
            await conn.open()
            return conn
        except ConnectFailed as exc:
            if not (mqtt.protocol == "auto" and settings.v5 and exc.unsupported_protocol):
                raise
            log.warning(
                "mqtt_protocol_fallback",
                broker=f"{settings.host}:{settings.port}",
                refused="5",
                reason=str(exc),
                using="3.1.1",
                hint='set mqtt.protocol = "3.1.1" to skip the MQTT 5 attempt',
            )
        self._auto_protocol = "3.1.1"
        conn = Connection(replace(settings, v5=False), self._on_message)
        await conn.open()
        return conn

    async def _session(self, conn: Connection, mqtt: MqttConfig, topics: Topics) -> None:
        timeout = mqtt.publish_timeout
        if self._old_availability:
            await self._publish_state(conn, self._old_availability, OFFLINE.encode(), timeout)
            self._old_availability = ""
        await self._publish_state(conn, topics.availability, ONLINE.encode(), timeout)
        if self._ha.enabled:
            await conn.subscribe(topics.ha_status, timeout)
        if self._on_detection is not None:
            await conn.subscribe(topics.detection_commands, timeout)
        # Retained state and discovery go out again on every connect.
        self._mark_all_dirty()
        self._outbox.set_online()
        sender = DurableSender(conn, self._outbox, timeout, mqtt.linger_ms / 1000.0)
        tasks = [
            asyncio.create_task(self._until_closed(conn), name="mqtt-closed"),
            asyncio.create_task(sender.send(), name="mqtt-send"),
            asyncio.create_task(sender.watch(), name="mqtt-watch"),
            asyncio.create_task(self._send_states(conn, topics, timeout), name="mqtt-state"),
            asyncio.create_task(self._wake.wait(), name="mqtt-wake"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for d in done:
            exc = None if d.cancelled() else d.exception()
            if exc is not None:
                raise exc
        # Woken on purpose: say goodbye properly before DISCONNECT (a clean disconnect sends no
        # will, so `offline` must be published by us).
        if self._wake_reason is _Wake.STOP:
            await self._publish_state(conn, topics.availability, OFFLINE.encode(), timeout)
        await conn.close(timeout)
        raise _Stop

    @staticmethod
    async def _until_closed(conn: Connection) -> None:
        # shield: cancelling this task must not cancel the connection's own future.
        raise ConnectionLost(await asyncio.shield(conn.closed))

    @staticmethod
    async def _publish_state(conn: Connection, topic: str, payload: bytes, timeout: float) -> None:
        reason = await conn.publish_acked(topic, payload, True, timeout)
        if reason >= REFUSED:
            log.error("mqtt_publish_rejected", topic=topic, reason=reason, retained=True)

    def _on_message(self, topic: str, payload: bytes) -> None:
        """Runs inside the connection's read callback: marks things dirty, publishes nothing."""
        topics = self._topics
        stream = topics.command_stream(topic)
        if stream is not None and self._on_detection is not None:
            enabled = parse_detection_command(payload)
            if enabled is None:
                log.warning("mqtt_detection_command_ignored", topic=topic,
                            payload=payload[:32].decode("utf-8", "replace"),
                            expected="ON or OFF")
            else:
                try:
                    self._on_detection(stream, enabled)
                except Exception:
                    log.exception("mqtt_detection_command_failed", stream=stream)
            return
        if topic == topics.ha_status and payload == b"online":
            log.info("mqtt_homeassistant_online")
            for t in self._discovery:
                self._mark_dirty(t)
            for suffix in self._states:
                if "/count/" in suffix:
                    self._mark_dirty(topics.state(suffix))

    async def _send_states(self, conn: Connection, topics: Topics, timeout: float) -> None:
        while True:
            await self._state_event.wait()
            self._state_event.clear()
            while self._dirty:
                # Discovery first, each batch acknowledged before the next: an entity is deleted
                # in Home Assistant before its state topic is cleared (else HA renders its
                # template on the empty payload and logs an error).
                dirty = list(self._dirty)
                pick = [t for t in dirty if t in self._discovery] or dirty
                batch: list[tuple[str, bytes]] = []
                for topic in pick[:STATE_BATCH]:
                    del self._dirty[topic]
                    payload = self._retained_payload(topics, topic)
                    if payload is not None:
                        batch.append((topic, payload))
                # Remembered before it is announced: a crash in between still deletes it later.
                await self._save_announced(t for t, p in batch if p and t in self._discovery)
                await asyncio.gather(
                    *(self._publish_state(conn, t, p, timeout) for t, p in batch)
                )
                for topic, payload in batch:
                    if not payload:
                        self._forget_tombstone(topics, topic)
                await self._save_announced(())

    async def _save_announced(self, new: Iterable[str]) -> None:
        self._announced.update(new)
        if self._announced == self._announced_saved:
            return
        wanted = sorted(self._announced)
        try:
            await asyncio.to_thread(_write_announced, self._announced_path, wanted)
            self._announced_saved = set(wanted)
        except OSError as exc:
            # Not fatal: only a later cleanup of removed streams depends on it.
            log.warning("mqtt_announced_not_saved", file=str(self._announced_path),
                        error=str(exc))

    # --- retained state ----------------------------------------------------------------------

    def _set_state(self, suffix: str, payload: bytes) -> None:
        self._states[suffix] = payload
        topic = self._topics.state(suffix)
        self._mark_dirty(topic)
        self._echo_out(topic, payload)

    def _mark_dirty(self, topic: str) -> None:
        self._dirty[topic] = None
        self._state_event.set()

    def _mark_all_dirty(self) -> None:
        self._dirty.clear()
        for suffix in self._states:
            self._dirty[self._topics.state(suffix)] = None
        for topic in self._discovery:
            self._dirty[topic] = None
        self._state_event.set()

    def _retained_payload(self, topics: Topics, topic: str) -> bytes | None:
        if topic in self._discovery:
            return self._discovery[topic]
        prefix = topics.base + "/"
        if topic.startswith(prefix):
            return self._states.get(topic[len(prefix) :])
        return None

    def _forget_tombstone(self, topics: Topics, topic: str) -> None:
        if self._discovery.get(topic) == b"":
            del self._discovery[topic]
            self._announced.discard(topic)
        suffix = topic.removeprefix(topics.base + "/")
        if self._states.get(suffix) == b"":
            del self._states[suffix]

    def _flushed(self) -> bool:
        return self._outbox.empty() and not self._dirty

    # --- Home Assistant ----------------------------------------------------------------------

    def _rebuild_ha(self) -> None:
        """Discovery and count topics for the current streams; empty payloads for the gone ones
        (also for those a previous run announced, remembered in the state directory)."""
        wanted: dict[str, bytes] = {}
        counts: set[str] = set()
        if self._ha.enabled:
            for topic, config in discovery.messages(self._topics, self._entities).items():
                wanted[topic] = encode_json(config)
            for stream in self._streams:
                for label in self._labels_of.get(stream, ()):
                    counts.add(Topics.count_suffix(stream, label))
        for topic, payload in self._discovery.items():
            if topic not in wanted and payload:
                wanted[topic] = b""  # deletes the entity in Home Assistant
        for topic in self._announced:
            if topic not in wanted:
                wanted[topic] = b""
        switches = {Topics.detection_suffix(s) for s in self._streams}
        for suffix, payload in list(self._states.items()):
            tracked = suffix.split("/", 1)[0] in self._tracked  # counts: the tracker's
            gone_count = "/count/" in suffix and suffix not in counts and not tracked
            gone_switch = suffix.endswith("/detection") and suffix not in switches
            if (gone_count or gone_switch) and payload:
                self._set_state(suffix, b"")
        self._discovery = wanted
        for topic in wanted:
            self._mark_dirty(topic)
        for stream in self._streams:
            last = self._counts.setdefault(stream, {})
            for label in self._labels_of.get(stream, ()):
                if self._ha.enabled and label not in last and stream not in self._tracked:
                    self._publish_count(stream, label, 0)
        if not self._ha.enabled:
            self._counts.clear()

    def _update_counts(self, stream: str, result: Result) -> None:
        labels = self._labels_of[stream]
        now: collections.Counter[str] = collections.Counter(
            label for label in detection_labels(result.detections) if label in labels
        )
        last = self._counts.setdefault(stream, {})
        for label in set(now) | {k for k, v in last.items() if v}:
            if last.get(label, 0) != now.get(label, 0):
                self._publish_count(stream, label, now.get(label, 0))

    def _publish_count(self, stream: str, label: str, count: int) -> None:
        self._counts.setdefault(stream, {})[label] = count
        payload = encode_state({"stream": stream, "label": label, "count": count})
        self._set_state(Topics.count_suffix(stream, label), payload)

    # --- misc --------------------------------------------------------------------------------

    def _echo_out(self, topic: str, payload: bytes) -> None:
        if self._echo is None:
            return
        try:
            self._echo(topic, payload)
        except Exception:
            log.exception("mqtt_echo_failed")

    def _stop_requested(self) -> bool:
        return self._wake_reason is _Wake.STOP

    def _enter(self, state: PublisherState) -> None:
        self._state = state
        if state is PublisherState.CONNECTED:
            self._connected_event.set()
        else:
            self._connected_event.clear()

    def _note_failure(self, exc: BaseException, *, lost: bool) -> None:
        msg = describe(exc)
        if lost:
            # The connection was up: always worth one warning, whatever the previous error was.
            log.warning("mqtt_connection_lost", error=msg, outbox=self._outbox.depth)
            self._last_error = msg
            return
        self._failures += 1
        if msg != self._last_error:
            # Each new state once at warning; repeats of the same error only at debug.
            log.warning("mqtt_connect_failed", error=msg, failures=self._failures)
        else:
            log.debug("mqtt_connect_failed", error=msg, failures=self._failures)
        self._last_error = msg


def _read_announced(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as exc:
        log.warning("mqtt_announced_unreadable", file=str(path), error=str(exc))
        return set()
    topics = data.get("discovery", []) if isinstance(data, dict) else []
    return {t for t in topics if isinstance(t, str)}


def _write_announced(path: Path, topics: list[str]) -> None:
    """Atomically (write and rename): a crash leaves the old list or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"v": 1, "discovery": topics}))
    tmp.replace(path)
