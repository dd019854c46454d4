"""Home Assistant MQTT discovery: per stream and label a count sensor and a presence binary_sensor.

Runs in the supervisor process (pure functions). The publisher sends these retained, republishes
them on every connect and whenever Home Assistant announces `online` on `<discovery>/status`, and
sends an empty retained payload for entities that disappeared on reload (which deletes them in HA).

Both entities read one retained count topic per stream and label
(`<prefix>/<node>/<stream>/count/<label>`, JSON `{"count": n, ...}`), published only on change,
so Home Assistant is not woken for every frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import edged
from edged.mqtt.topics import OFFLINE, ONLINE, Topics, slug


def device(topics: Topics) -> dict[str, Any]:
    return {
        "identifiers": [f"{topics.prefix}_{topics.node}"],
        "name": f"edged {topics.node}",
        "manufacturer": "edged",
        "model": "edged video analytics",
        "sw_version": edged.__version__,
    }


def _availability(topics: Topics) -> list[dict[str, str]]:
    return [
        {
            "topic": topics.availability,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
        }
    ]


def messages(
    topics: Topics, streams: Sequence[str], labels_of: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config payload, for every stream and label."""
    out: dict[str, dict[str, Any]] = {}
    dev = device(topics)
    origin = {"name": "edged", "sw": edged.__version__}
    for stream in streams:
        for label in labels_of.get(stream, ()):
            state_topic = topics.state(topics.count_suffix(stream, label))
            base_id = f"{topics.prefix}_{topics.node}_{stream}_{slug(label)}"
            common: dict[str, Any] = {
                "state_topic": state_topic,
                "availability": _availability(topics),
                "availability_mode": "all",
                "device": dev,
                "origin": origin,
                "qos": 1,
            }
            count_id = f"{base_id}_count"
            out[topics.discovery("sensor", count_id)] = {
                **common,
                "name": f"{stream} {label} count",
                "unique_id": count_id,
                "object_id": count_id,
                "value_template": "{{ value_json.count }}",
                "state_class": "measurement",
                "unit_of_measurement": "objects",
                "icon": "mdi:counter",
            }
            presence_id = f"{base_id}_presence"
            out[topics.discovery("binary_sensor", presence_id)] = {
                **common,
                "name": f"{stream} {label}",
                "unique_id": presence_id,
                "object_id": presence_id,
                "value_template": "{{ 'ON' if value_json.count > 0 else 'OFF' }}",
                "device_class": "occupancy",
            }
    return out
