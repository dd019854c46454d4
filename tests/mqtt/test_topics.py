"""Topic names, and that the pure parts of edged.mqtt import without the MQTT client."""

from __future__ import annotations

import pytest

from edged.mqtt.topics import Topics, check_suffix, slug
from tests.support.modules_probe import loaded_after


def test_topics_of_a_node() -> None:
    t = Topics("edged", "box1")
    assert t.availability == "edged/box1/status"
    assert t.detections("cam") == "edged/box1/cam/detections"
    assert (
        t.state(Topics.count_suffix("cam", "traffic light")) == "edged/box1/cam/count/traffic_light"
    )
    assert t.discovery("sensor", "x") == "homeassistant/sensor/edged_box1/x/config"
    assert slug("  Traffic Light!! ") == "traffic_light" and slug("!!") == "_"
    with pytest.raises(ValueError, match="reserved"):
        check_suffix("status")


def test_topics_and_payloads_import_without_the_client_or_the_publisher() -> None:
    modules = set(loaded_after("edged.mqtt.topics", "edged.mqtt.payloads"))
    assert "edged.mqtt.topics" in modules
    assert not modules & {"aiomqtt", "paho", "paho.mqtt", "edged.mqtt.publisher"}, modules
