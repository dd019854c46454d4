"""The reload table, key by key: every config key has a decision and the diff does what it says."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from edged.config.diff import RELOAD, Reload, config_keys, diff_configs
from edged.config.model import Config, LineConfig, StreamConfig, WorkerConfig, ZoneConfig

# A valid new value for every key (different from BASE's). A key added to the config structs
# fails `test_every_key_has_a_decision_and_an_example` until it is given both.
CHANGED: dict[str, Any] = {
    "node.name": "other",
    "node.state_dir": "/var/lib/other",
    "node.health_interval": 5.0,
    "node.log_level": "debug",
    "node.watch_config": True,
    "mqtt.url": "mqtt://10.0.0.2:1883",
    "mqtt.topic_prefix": "other",
    "mqtt.client_id": "box-7",
    "mqtt.protocol": "3.1.1",
    "mqtt.keepalive": 60,
    "mqtt.publish_timeout": 9.0,
    "mqtt.linger_ms": 5.0,
    "mqtt.username": "edged",
    "mqtt.password_file": "/etc/edged/password",
    "mqtt.password_credential": "mqtt-password",
    "mqtt.tls.ca_file": "/etc/edged/ca.pem",
    "mqtt.tls.cert_file": "/etc/edged/cert.pem",
    "mqtt.tls.key_file": "/etc/edged/key.pem",
    "mqtt.tls.verify": False,
    "mqtt.outbox.memory_messages": 10,
    "mqtt.outbox.disk_bytes": 8192,
    "homeassistant.enabled": True,
    "homeassistant.discovery_prefix": "ha",
    "workers.name": "renamed",
    "workers.model": "other.onnx",
    "workers.backend": "cpu",  # the only backend: see `same_value_is_no_change` below
    "workers.model_format": "yolov8",
    "workers.labels": "labels.txt",
    "workers.input_size": (640, 640),
    "workers.threads": 2,
    "workers.device": 1,
    "workers.input_kind": "float",
    "workers.batch": 4,
    "workers.ready_timeout": 30.0,
    "workers.heartbeat_timeout": 20.0,
    "workers.restart.delay": 1.0,
    "workers.restart.max_delay": 10.0,
    "workers.restart.boot_error_delay": 1.0,
    "workers.restart.budget": 2,
    "workers.restart.window": 60.0,
    "workers.restart.failed_retry": 60.0,
    "streams.name": "renamed",
    "streams.source": "rtsp://10.0.0.9/stream",
    "streams.worker": "w2",
    "streams.loop": True,
    "streams.realtime": False,
    "streams.detect_fps": 5.0,
    "streams.labels": ("person",),
    "streams.min_score": 0.6,
    "streams.reconnect_delay": 4.0,
    "streams.decoder_threads": 1,
    "streams.open_timeout": 20.0,
    "streams.read_timeout": 2.0,
    "streams.stall_timeout": 9.0,
    "streams.rtsp_transport": "udp",
    "streams.detections": False,
    "streams.tracking.enabled": False,
    "streams.tracking.track_score": 0.6,
    "streams.tracking.keep_score": 0.3,
    "streams.tracking.match_iou": 0.3,
    "streams.tracking.confirm_s": 1.0,
    "streams.tracking.lost_s": 3.0,
    "streams.tracking.stationary_s": 20.0,
    "streams.tracking.stationary_lost_s": 90.0,
    "streams.tracking.update_interval_s": 2.0,
    "streams.tracking.count_hold_s": 1.0,
    "streams.tracking.snapshot": "frame",
    "streams.tracking.snapshot_size": 320,
    "streams.tracking.snapshot_max_bytes": 100_000,
    "streams.tracking.snapshot_keep_days": 7.0,
    "streams.zones.name": "yard",
    "streams.zones.points": ((0.0, 0.0), (10.0, 0.0), (0.0, 10.0)),
    "streams.zones.normalized": True,
    "streams.zones.objects": ("person",),
    "streams.zones.enter_s": 1.0,
    "streams.zones.leave_s": 2.0,
    "streams.zones.loiter_s": 30.0,
    "streams.lines.name": "gate",
    "streams.lines.points": ((0.0, 5.0), (10.0, 5.0)),
    "streams.lines.normalized": True,
    "streams.lines.objects": ("car",),
    "streams.lines.settle_s": 1.0,
}

BASE = Config(
    workers=(WorkerConfig(name="w", model="m.onnx"), WorkerConfig(name="w2", model="m.onnx")),
    streams=(
        StreamConfig(
            name="cam",
            source="/videos/cam.mp4",
            worker="w",
            zones=(ZoneConfig(name="door", points=((1.0, 1.0), (5.0, 1.0), (1.0, 5.0))),),
            lines=(LineConfig(name="path", points=((1.0, 1.0), (5.0, 5.0))),),
        ),
    ),
)


def replaced(struct: Any, path: list[str], value: Any) -> Any:
    """`struct` with the field at `path` (nested struct fields) set to `value`."""
    head, *rest = path
    current = getattr(struct, head)
    if rest and isinstance(current, tuple):  # an array of tables: change its first item
        inner: Any = (replaced(current[0], rest, value), *current[1:])
    else:
        inner = value if not rest else replaced(current, rest, value)
    return msgspec.structs.replace(struct, **{head: inner})


def changed_config(key: str) -> Config:
    section, *path = key.split(".")
    if section == "workers":
        first = replaced(BASE.workers[0], path, CHANGED[key])
        return msgspec.structs.replace(BASE, workers=(first, *BASE.workers[1:]))
    if section == "streams":
        stream = replaced(BASE.streams[0], path, CHANGED[key])
        return msgspec.structs.replace(BASE, streams=(stream,))
    return replaced(BASE, [section, *path], CHANGED[key])


def test_every_key_has_a_decision_and_an_example() -> None:
    keys = config_keys()
    assert len(keys) == len(set(keys)) > 70
    missing = [k for k in keys if k not in RELOAD]
    assert not missing, f"config keys without a reload decision in edged/config/diff.py: {missing}"
    stale = sorted(set(RELOAD) - set(keys))
    assert not stale, f"RELOAD names keys the config does not have: {stale}"
    assert sorted(CHANGED) == sorted(keys), "give each key a changed value in CHANGED above"


@pytest.mark.parametrize("key", config_keys())
def test_a_changed_key_does_what_the_table_says(key: str) -> None:
    if changed_config(key) == BASE:
        # A key with one allowed value (workers.backend today) cannot change: nothing to move.
        assert diff_configs(BASE, BASE).empty
        return
    new = changed_config(key)
    d = diff_configs(BASE, new)
    reload = RELOAD[key]
    moved = {
        "workers_added": [w.name for w in d.workers_added],
        "workers_removed": d.workers_removed,
        "workers_restarted": [w.name for w in d.workers_restarted],
        "workers_updated": [w.name for w in d.workers_updated],
        "streams_added": [s.name for s in d.streams_added],
        "streams_removed": [s.name for s in d.streams_removed],
        "streams_updated": [s.name for s in d.streams_updated],
        "mqtt_changed": d.mqtt_changed,
        "requires_restart": d.requires_restart,
    }
    nothing: dict[str, Any] = {k: [] for k in moved} | {"mqtt_changed": False}
    expected = dict(nothing)
    section = key.split(".", maxsplit=1)[0]
    if reload is Reload.LIVE and section == "streams":
        expected["streams_updated"] = ["cam"]
    elif reload is Reload.LIVE and section == "workers":
        expected["workers_updated"] = ["w"]
    elif reload is Reload.REOPEN_STREAM:
        expected["streams_removed"] = expected["streams_added"] = ["cam"]
    elif reload is Reload.RESTART_WORKER:
        expected["workers_restarted"] = ["w"]
    elif reload is Reload.RECONNECT_MQTT:
        expected["mqtt_changed"] = True
    elif reload is Reload.RESTART_EDGED:
        expected["requires_restart"] = [key]
    elif reload is Reload.NAME and section == "workers":
        expected["workers_added"], expected["workers_removed"] = ["renamed"], ["w"]
    elif reload is Reload.NAME and section == "streams":
        expected["streams_added"], expected["streams_removed"] = ["renamed"], ["cam"]
    assert moved == expected, (key, reload)
    # Never "nothing changed": every change is reported, the live ones by key.
    assert not d.empty and d.summary() != "nothing changed"
    if reload is Reload.LIVE:
        assert key.rsplit(".", 1)[1] in d.summary(), d.summary()
    assert d.log_level_changed is (key == "node.log_level")


def test_several_changes_in_one_reload() -> None:
    new = msgspec.structs.replace(
        BASE,
        node=msgspec.structs.replace(BASE.node, log_level="debug"),
        streams=(
            msgspec.structs.replace(BASE.streams[0], decoder_threads=2, min_score=0.7),
            StreamConfig(name="door", source="/videos/door.mp4", worker="w2"),
        ),
    )
    d = diff_configs(BASE, new)
    # decoder_threads reopens the stream (min_score travels with the reopened one).
    assert [s.name for s in d.streams_removed] == ["cam"]
    assert [s.name for s in d.streams_added] == ["cam", "door"]
    assert d.streams_updated == []
    assert d.summary() == (
        "streams added: door; streams reopened: cam; "
        "applied live: node.log_level, streams[cam].min_score"
    )


def test_no_change_is_nothing_changed() -> None:
    d = diff_configs(BASE, msgspec.convert(msgspec.to_builtins(BASE), Config))
    assert d.empty and d.summary() == "nothing changed"
