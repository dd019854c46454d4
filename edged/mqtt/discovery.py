"""Home Assistant MQTT discovery: a device for the node, one per stream, and their entities.

Runs in the supervisor process (pure functions). The publisher sends these retained, republishes
them on every connect and whenever Home Assistant announces `online` on `<discovery>/status`, and
sends an empty retained payload for entities that disappeared (which deletes them in HA).

Devices: the node (`edged <node>`) keeps the daemon's health (status, CPU, outbox depth); each
stream is its own device linked to it with `via_device`, so each camera can have its own area.

Availability: every stream entity needs the node's `<prefix>/<node>/status` AND the stream's
retained `<prefix>/<node>/<stream>/status` to say `online` (`availability_mode: all`), so a
stream that goes offline shows its entities unavailable at once instead of leaving the last
counts standing. Two entities follow the node alone: the stream's connectivity (it must say
"disconnected", not "unavailable") and the detection switch (it must work while detection is off).

Entity ids: `default_entity_id` (`<component>.<id>`, Home Assistant 2025.10 and later) and
`object_id` (`<id>`, read by older versions). 2025.10 to 2026.3 do not warn about `object_id`
when `default_entity_id` is present (home-assistant/core#151996); 2026.4 and later drop it as an
unknown key (discovery schemas are `extra=REMOVE_EXTRA`). See tests/mqtt/ha_rules.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import edged
from edged.config.model import StreamConfig
from edged.mqtt.topics import OFFLINE, ONLINE, Topics, slug

_NOT_ENTITY = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class StreamEntities:
    """What one stream announces: its labels, and the zones, lines and snapshots it has."""

    name: str
    labels: tuple[str, ...]
    # zone/line name -> the labels counted there
    zones: tuple[tuple[str, tuple[str, ...]], ...] = ()
    lines: tuple[tuple[str, tuple[str, ...]], ...] = ()
    snapshots: bool = False


def stream_entities(stream: StreamConfig, labels: Sequence[str]) -> StreamEntities:
    """What a configured stream announces: zones, lines and snapshots come with tracking (the
    tracker in its worker counts them, edged.supervisor.events publishes them); a zone or line
    counts the labels its `objects` names among the stream's, or all of them."""
    labels = tuple(labels)
    tracking = stream.tracking
    if not tracking.enabled:
        return StreamEntities(stream.name, labels)

    def among(objects: Sequence[str]) -> tuple[str, ...]:
        return tuple(label for label in labels if not objects or label in objects)

    return StreamEntities(
        stream.name,
        labels,
        zones=tuple((z.name, among(z.objects)) for z in stream.zones),
        lines=tuple((line.name, among(line.objects)) for line in stream.lines),
        snapshots=tracking.snapshot != "off",
    )


def entity_slug(text: str) -> str:
    """An id Home Assistant accepts as the part after `<domain>.`: [a-z0-9_], no `__`, no
    leading or trailing `_` (its `valid_entity_id`)."""
    return _NOT_ENTITY.sub("_", text.lower()).strip("_") or "x"


def node_device(topics: Topics) -> dict[str, Any]:
    return {
        "identifiers": [f"{topics.prefix}_{topics.node}"],
        "name": f"edged {topics.node}",
        "manufacturer": "edged",
        "model": "edged video analytics",
        "sw_version": edged.__version__,
    }


def stream_device(topics: Topics, stream: str) -> dict[str, Any]:
    return {
        "identifiers": [f"{topics.prefix}_{topics.node}_{stream}"],
        "name": stream,
        "manufacturer": "edged",
        "model": "edged camera stream",
        "sw_version": edged.__version__,
        "via_device": f"{topics.prefix}_{topics.node}",
    }


def _node_available(topics: Topics) -> dict[str, str]:
    return {"topic": topics.availability, "payload_available": ONLINE,
            "payload_not_available": OFFLINE}


def _stream_available(topics: Topics, stream: str) -> dict[str, str]:
    # The stream status is JSON; anything but `online` (and a deleted, empty payload) is offline.
    return {
        "topic": topics.state(Topics.stream_status_suffix(stream)),
        "value_template": (
            "{{ 'online' if value_json is defined and value_json.status == 'online' "
            "else 'offline' }}"
        ),
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
    }


# A JSON `null` count (the stream is not online, edged.supervisor.events) renders as "None",
# which Home Assistant's MQTT sensor and binary_sensor take as "unknown".
_COUNT = "{{ value_json.count }}"
_OCCUPIED = (
    "{{ 'None' if value_json.count is none else ('ON' if value_json.count > 0 else 'OFF') }}"
)


class _Builder:
    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.out: dict[str, dict[str, Any]] = {}
        self.origin = {"name": "edged", "sw_version": edged.__version__}

    def add(
        self,
        component: str,
        uid: str,
        device: dict[str, Any],
        availability: list[dict[str, str]],
        config: dict[str, Any],
    ) -> None:
        eid = entity_slug(uid)
        self.out[self.topics.discovery(component, uid)] = {
            "unique_id": uid,
            "default_entity_id": f"{component}.{eid}",
            "object_id": eid,  # Home Assistant before 2025.10 (see the module docstring)
            "device": device,
            "origin": self.origin,
            "availability": availability,
            "availability_mode": "all",
            "qos": 1,
            **config,
        }


def messages(topics: Topics, streams: Iterable[StreamEntities]) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config payload, for the node and every stream."""
    b = _Builder(topics)
    _node(b)
    for stream in streams:
        _stream(b, stream)
    return b.out


def _node(b: _Builder) -> None:
    t = b.topics
    dev, nid, health = node_device(t), f"{t.prefix}_{t.node}", t.state("health")
    # Its own availability topic is the state: it must not be "unavailable" when offline.
    b.add("binary_sensor", f"{nid}_status", dev, [], {
        "name": "Status", "state_topic": t.availability, "payload_on": ONLINE,
        "payload_off": OFFLINE, "device_class": "connectivity",
        "entity_category": "diagnostic",
    })
    node = [_node_available(t)]
    b.add("sensor", f"{nid}_cpu", dev, node, {
        "name": "CPU", "state_topic": health,
        "value_template": "{{ value_json.daemon.cpu_percent }}",
        "unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:cpu-64-bit",
        "entity_category": "diagnostic",
    })
    b.add("sensor", f"{nid}_outbox_depth", dev, node, {
        "name": "Outbox depth", "state_topic": health,
        "value_template": "{{ value_json.mqtt.outbox_depth }}",
        "unit_of_measurement": "messages", "state_class": "measurement",
        "icon": "mdi:tray-full", "entity_category": "diagnostic",
    })


def _stream(b: _Builder, s: StreamEntities) -> None:
    t, name = b.topics, s.name
    dev, sid = stream_device(t, name), f"{t.prefix}_{t.node}_{name}"
    node = [_node_available(t)]
    both = [_node_available(t), _stream_available(t, name)]
    status = t.state(Topics.stream_status_suffix(name))
    b.add("binary_sensor", f"{sid}_online", dev, node, {
        "name": "Online", "state_topic": status,
        "value_template": "{{ 'ON' if value_json.status == 'online' else 'OFF' }}",
        "device_class": "connectivity", "json_attributes_topic": status,
        "entity_category": "diagnostic",
    })
    b.add("switch", f"{sid}_detection", dev, node, {
        "name": "Detection", "command_topic": t.detection_command(name),
        "state_topic": t.state(Topics.detection_suffix(name)),
        "value_template": "{{ 'ON' if value_json.enabled else 'OFF' }}",
        "payload_on": "ON", "payload_off": "OFF", "optimistic": False, "retain": False,
        "icon": "mdi:cctv", "entity_category": "config",
    })
    health = t.state("health")
    for key, title in (("fps_in", "Decoded fps"), ("fps_processed", "Processed fps")):
        b.add("sensor", f"{sid}_{key}", dev, both, {
            "name": title, "state_topic": health,
            "value_template": (
                f"{{{{ value_json.streams['{name}'].{key} if '{name}' in value_json.streams "
                "else None }}"
            ),
            "unit_of_measurement": "fps", "state_class": "measurement",
            "suggested_display_precision": 1, "icon": "mdi:speedometer",
            "entity_category": "diagnostic",
        })
    for label in s.labels:
        lid = f"{sid}_{slug(label)}"
        count = t.state(Topics.count_suffix(name, label))
        b.add("sensor", f"{lid}_count", dev, both, {
            "name": f"{label} count", "state_topic": count, "value_template": _COUNT,
            "state_class": "measurement", "unit_of_measurement": "objects",
            "icon": "mdi:counter",
        })
        b.add("binary_sensor", f"{lid}_presence", dev, both, {
            "name": label, "state_topic": count, "value_template": _OCCUPIED,
            "device_class": "occupancy",
        })
        if s.snapshots:
            b.add("image", f"{lid}_snapshot", dev, both, {
                "name": f"{label} snapshot",
                "image_topic": t.state(Topics.snapshot_suffix(name, label)),
                "content_type": "image/jpeg",
            })
    for zone, labels in s.zones:
        for label in labels:
            zid = f"{sid}_zone_{zone}_{slug(label)}"
            topic = t.state(Topics.zone_suffix(name, zone, label))
            b.add("sensor", f"{zid}_count", dev, both, {
                "name": f"{zone} {label} count", "state_topic": topic, "value_template": _COUNT,
                "state_class": "measurement", "unit_of_measurement": "objects",
                "icon": "mdi:counter",
            })
            b.add("binary_sensor", f"{zid}_occupancy", dev, both, {
                "name": f"{zone} {label}", "state_topic": topic, "value_template": _OCCUPIED,
                "device_class": "occupancy",
            })
    for line, labels in s.lines:
        for label in labels:
            nid = f"{sid}_line_{line}_{slug(label)}"
            topic = t.state(Topics.line_suffix(name, line, label))
            for direction in ("in", "out"):
                b.add("sensor", f"{nid}_{direction}", dev, both, {
                    "name": f"{line} {label} {direction}", "state_topic": topic,
                    # `in` is a Jinja keyword: index it.
                    "value_template": f"{{{{ value_json['{direction}'] }}}}",
                    "state_class": "total_increasing", "unit_of_measurement": "objects",
                    "icon": "mdi:transit-transfer",
                })

