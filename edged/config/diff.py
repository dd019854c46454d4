"""What a reload does for each config key, and what changed between two validated configs.

Pure data; runs in the supervisor on SIGHUP (and in tests). `RELOAD` is the one table that says,
for every key of `config.toml`, whether a changed value is applied live or which part it restarts
or reopens; `diff_configs` compares old and new key by key through that table, so a key missing
from it is a test failure, never a change that is silently ignored. docs/config.md shows the same
table (its "on reload" column is tested against this one).

Workers and streams are keyed by name: a new name is another entry (the old one stops, the new
one starts).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgspec

from edged.config.model import Config, StreamConfig, WorkerConfig


class Reload(enum.StrEnum):
    """What a changed key does on reload, from the least to the most disruptive."""

    LIVE = "live"  # applied in place: no process restarts, no stream or connection reopens
    NAME = "names the entry"  # a workers/streams name: a new name is another entry
    REOPEN_STREAM = "reopens the stream"  # that stream alone is closed and opened again
    RECONNECT_MQTT = "reconnects MQTT"  # the publisher reconnects; the outbox is kept
    RESTART_WORKER = "restarts the worker"  # that worker's process alone restarts
    RESTART_EDGED = "needs a restart"  # kept until `systemctl restart edged`; a warning is logged


# Every key of config.toml, by its path (`[[workers]]` and `[[streams]]` keys without an index).
RELOAD: dict[str, Reload] = {
    "node.name": Reload.RECONNECT_MQTT,  # part of every topic
    "node.state_dir": Reload.RESTART_EDGED,  # the outbox's database is open in it
    "node.health_interval": Reload.LIVE,
    "node.log_level": Reload.LIVE,  # the supervisor's loggers and every worker's
    "node.watch_config": Reload.LIVE,
    "mqtt.url": Reload.RECONNECT_MQTT,
    "mqtt.topic_prefix": Reload.RECONNECT_MQTT,
    "mqtt.client_id": Reload.RECONNECT_MQTT,
    "mqtt.protocol": Reload.RECONNECT_MQTT,
    "mqtt.keepalive": Reload.RECONNECT_MQTT,
    "mqtt.publish_timeout": Reload.RECONNECT_MQTT,
    "mqtt.linger_ms": Reload.RECONNECT_MQTT,
    "mqtt.username": Reload.RECONNECT_MQTT,
    "mqtt.password_file": Reload.RECONNECT_MQTT,
    "mqtt.password_credential": Reload.RECONNECT_MQTT,
    "mqtt.tls.ca_file": Reload.RECONNECT_MQTT,
    "mqtt.tls.cert_file": Reload.RECONNECT_MQTT,
    "mqtt.tls.key_file": Reload.RECONNECT_MQTT,
    "mqtt.tls.verify": Reload.RECONNECT_MQTT,
    "mqtt.outbox.memory_messages": Reload.RECONNECT_MQTT,
    "mqtt.outbox.disk_bytes": Reload.RECONNECT_MQTT,
    "homeassistant.enabled": Reload.RECONNECT_MQTT,  # discovery is (re)published on connect
    "homeassistant.discovery_prefix": Reload.RECONNECT_MQTT,
    "workers.name": Reload.NAME,
    "workers.model": Reload.RESTART_WORKER,  # the runtime is created in the worker process
    "workers.backend": Reload.RESTART_WORKER,
    "workers.model_format": Reload.RESTART_WORKER,
    "workers.labels": Reload.RESTART_WORKER,
    "workers.input_size": Reload.RESTART_WORKER,
    "workers.threads": Reload.RESTART_WORKER,
    "workers.device": Reload.RESTART_WORKER,
    "workers.input_kind": Reload.RESTART_WORKER,  # what the loaded model takes
    "workers.batch": Reload.RESTART_WORKER,  # buffers sized when the model loads
    # The supervisor's deadlines and restart policy: the running process is left alone.
    "workers.ready_timeout": Reload.LIVE,
    "workers.heartbeat_timeout": Reload.LIVE,
    "workers.restart.delay": Reload.LIVE,
    "workers.restart.max_delay": Reload.LIVE,
    "workers.restart.boot_error_delay": Reload.LIVE,
    "workers.restart.budget": Reload.LIVE,
    "workers.restart.window": Reload.LIVE,
    "workers.restart.failed_retry": Reload.LIVE,
    "streams.name": Reload.NAME,
    "streams.source": Reload.REOPEN_STREAM,
    "streams.worker": Reload.REOPEN_STREAM,  # closed in the old worker, opened in the new one
    "streams.decoder_threads": Reload.REOPEN_STREAM,  # a decoder is configured when it opens
    "streams.loop": Reload.LIVE,
    "streams.realtime": Reload.LIVE,
    "streams.detect_fps": Reload.LIVE,
    "streams.labels": Reload.LIVE,
    "streams.min_score": Reload.LIVE,
    "streams.reconnect_delay": Reload.LIVE,
    # Read by the source at its next open or packet.
    "streams.open_timeout": Reload.LIVE,
    "streams.read_timeout": Reload.LIVE,
    "streams.stall_timeout": Reload.LIVE,
    "streams.rtsp_transport": Reload.REOPEN_STREAM,  # an option of the RTSP session
    # Read by the worker's tracker at its next frame (open events stay open).
    "streams.detections": Reload.LIVE,
    "streams.tracking.enabled": Reload.LIVE,
    "streams.tracking.track_score": Reload.LIVE,
    "streams.tracking.keep_score": Reload.LIVE,
    "streams.tracking.match_iou": Reload.LIVE,
    "streams.tracking.confirm_s": Reload.LIVE,
    "streams.tracking.lost_s": Reload.LIVE,
    "streams.tracking.stationary_s": Reload.LIVE,
    "streams.tracking.stationary_lost_s": Reload.LIVE,
    "streams.tracking.update_interval_s": Reload.LIVE,
    "streams.tracking.count_hold_s": Reload.LIVE,
    "streams.tracking.snapshot": Reload.LIVE,
    "streams.tracking.snapshot_size": Reload.LIVE,
    "streams.tracking.snapshot_max_bytes": Reload.LIVE,
    "streams.tracking.snapshot_keep_days": Reload.LIVE,
    "streams.zones.name": Reload.LIVE,
    "streams.zones.points": Reload.LIVE,
    "streams.zones.normalized": Reload.LIVE,
    "streams.zones.objects": Reload.LIVE,
    "streams.zones.enter_s": Reload.LIVE,
    "streams.zones.leave_s": Reload.LIVE,
    "streams.zones.loiter_s": Reload.LIVE,
    "streams.lines.name": Reload.LIVE,
    "streams.lines.points": Reload.LIVE,
    "streams.lines.normalized": Reload.LIVE,
    "streams.lines.objects": Reload.LIVE,
    "streams.lines.settle_s": Reload.LIVE,
}


def config_keys() -> list[str]:
    """Every key `config.toml` accepts, as `RELOAD` spells them, from the structs themselves."""

    def walk(struct: msgspec.inspect.StructType, prefix: str) -> list[str]:
        keys: list[str] = []
        for f in struct.fields:
            inner: Any = f.type
            if isinstance(inner, msgspec.inspect.VarTupleType) and isinstance(
                inner.item_type, msgspec.inspect.StructType
            ):
                inner = inner.item_type
            path = f"{prefix}{f.name}"
            if isinstance(inner, msgspec.inspect.StructType):
                keys += walk(inner, f"{path}.")
            else:
                keys.append(path)
        return keys

    info = msgspec.inspect.type_info(Config)
    assert isinstance(info, msgspec.inspect.StructType)
    return walk(info, "")


def changed_keys(old: msgspec.Struct, new: msgspec.Struct, prefix: str) -> list[str]:
    """The leaf keys (`prefix` + dotted path) whose values differ between two structs."""
    out: list[str] = []
    for name in old.__struct_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if isinstance(a, msgspec.Struct) and isinstance(b, msgspec.Struct):
            out += changed_keys(a, b, f"{prefix}{name}.")
        elif _structs(a) and _structs(b) and (a or b):
            # An array of tables inside an entry (a stream's zones): the keys that differ, item
            # by item; an item added or removed counts as its first key (its name).
            keys: list[str] = []
            if len(a) != len(b):
                keys.append(f"{prefix}{name}.{(a or b)[0].__struct_fields__[0]}")
            for x, y in zip(a, b, strict=False):
                keys += changed_keys(x, y, f"{prefix}{name}.")
            out += [k for i, k in enumerate(keys) if k not in keys[:i]]
        else:
            out.append(f"{prefix}{name}")
    return out


def _structs(value: object) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, msgspec.Struct) for v in value)


@dataclass(frozen=True)
class Change:
    """One changed key: `where` names the entry (`streams[cam]`), `key` is its RELOAD path."""

    where: str
    key: str
    reload: Reload

    def __str__(self) -> str:
        return f"{self.where}.{self.key.split('.', 1)[1]}" if "[" in self.where else self.key


@dataclass
class ConfigDiff:
    workers_added: list[WorkerConfig] = field(default_factory=list)
    workers_removed: list[str] = field(default_factory=list)
    workers_restarted: list[WorkerConfig] = field(default_factory=list)
    # Only supervisor-side settings changed (deadlines, restart policy): no process restarts.
    workers_updated: list[WorkerConfig] = field(default_factory=list)
    streams_added: list[StreamConfig] = field(default_factory=list)
    streams_removed: list[StreamConfig] = field(default_factory=list)
    streams_updated: list[StreamConfig] = field(default_factory=list)
    mqtt_changed: bool = False
    log_level_changed: bool = False
    # Settings that only take effect after `systemctl restart edged`.
    requires_restart: list[str] = field(default_factory=list)
    # Every changed key of an entry that stays (added and removed entries are not listed).
    changes: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.workers_added
            or self.workers_removed
            or self.workers_restarted
            or self.workers_updated
            or self.streams_added
            or self.streams_removed
            or self.streams_updated
            or self.changes
        )

    def summary(self) -> str:
        added = {s.name for s in self.streams_added}
        reopened = [s.name for s in self.streams_removed if s.name in added]
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("workers added:", [w.name for w in self.workers_added]),
                ("workers removed:", self.workers_removed),
                ("workers restarted:", [w.name for w in self.workers_restarted]),
                ("streams added:", [s.name for s in self.streams_added if s.name not in reopened]),
                ("streams reopened:", reopened),
                (
                    "streams removed:",
                    [s.name for s in self.streams_removed if s.name not in reopened],
                ),
                ("streams updated:", [s.name for s in self.streams_updated]),
            )
            if names
        ]
        if self.mqtt_changed:
            parts.append("mqtt reconnects")
        live = [str(c) for c in self.changes if c.reload is Reload.LIVE]
        if live:
            parts.append(f"applied live: {', '.join(live)}")
        if self.requires_restart:
            parts.append(f"after a restart: {', '.join(self.requires_restart)}")
        return "; ".join(parts) or "nothing changed"


def _decide(keys: list[str], where: str, d: ConfigDiff) -> set[Reload]:
    """Record each changed key of one entry; the set of what they ask for."""
    decisions = set()
    for key in keys:
        reload = RELOAD[key]  # KeyError: a key without a decision (a test checks every key)
        d.changes.append(Change(where, key, reload))
        decisions.add(reload)
    return decisions


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    d = ConfigDiff()

    # node, mqtt, homeassistant: one entry each.
    for section in ("node", "mqtt", "homeassistant"):
        keys = changed_keys(getattr(old, section), getattr(new, section), f"{section}.")
        if Reload.RECONNECT_MQTT in _decide(keys, section, d):
            d.mqtt_changed = True
    d.requires_restart = [c.key for c in d.changes if c.reload is Reload.RESTART_EDGED]
    d.log_level_changed = old.node.log_level != new.node.log_level

    old_workers = {w.name: w for w in old.workers}
    new_workers = {w.name: w for w in new.workers}
    for name, worker in new_workers.items():
        old_worker = old_workers.get(name)
        if old_worker is None:
            d.workers_added.append(worker)
            continue
        keys = changed_keys(old_worker, worker, "workers.")
        decisions = _decide(keys, f"workers[{name}]", d)
        if Reload.RESTART_WORKER in decisions:
            d.workers_restarted.append(worker)
        elif decisions:
            d.workers_updated.append(worker)
    d.workers_removed = [name for name in old_workers if name not in new_workers]

    old_streams = {s.name: s for s in old.streams}
    new_streams = {s.name: s for s in new.streams}
    for name, stream in new_streams.items():
        before = old_streams.get(name)
        if before is None:
            d.streams_added.append(stream)
            continue
        keys = changed_keys(before, stream, "streams.")
        decisions = _decide(keys, f"streams[{name}]", d)
        if Reload.REOPEN_STREAM in decisions:
            d.streams_removed.append(before)
            d.streams_added.append(stream)
        elif decisions:
            d.streams_updated.append(stream)
    d.streams_removed += [s for name, s in old_streams.items() if name not in new_streams]
    return d
