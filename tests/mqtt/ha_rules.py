"""Home Assistant's own rules for MQTT discovery payloads, transcribed for the tests.

Not edged's JSON Schema: these are Home Assistant's voluptuous schemas for the platforms edged
announces, written down from home-assistant/core (homeassistant/components/mqtt/):

- `config.py`: MQTT_BASE_SCHEMA (qos, encoding), MQTT_RO_SCHEMA (state_topic required,
  value_template), MQTT_RW_SCHEMA (command_topic required, optimistic, retain, state_topic);
- `schemas.py`: MQTT_ENTITY_COMMON_SCHEMA (availability single/list, exclusive;
  availability_mode all/any/latest; device; origin; enabled_by_default; entity_category; icon;
  json_attributes_topic/template; unique_id; `object_id` up to 2026.3; `default_entity_id` from
  2025.10, home-assistant/core#151775), MQTT_ENTITY_DEVICE_INFO_SCHEMA (at least one of
  identifiers/connections; via_device), MQTT_ORIGIN_INFO_SCHEMA (name required);
- `sensor.py`: device_class, expire_after, force_update, last_reset_value_template, name,
  options, suggested_display_precision, state_class, unit_of_measurement, and
  `validate_sensor_state_and_device_class_config`;
- `binary_sensor.py`: device_class, expire_after, force_update, name, off_delay,
  payload_on/off;
- `switch.py`: name, optimistic, payload_on/off, state_on/off, value_template, device_class;
- `image.py`: content_type, name, image_topic/url_topic (exclusive, one required, no
  content_type with url_topic), image_encoding "b64", url_template;
- `util.py`: valid_subscribe_topic / valid_publish_topic (UTF-8, no NUL, at most 65535 bytes,
  wildcards only whole levels, `#` last; none in a publish topic), valid_qos_schema;
- `discovery.py`: the topic `<prefix>/<component>/[<node_id>/]<object_id>/config` with ids of
  `[a-zA-Z0-9_-]`;
- `homeassistant/core.py`: `valid_entity_id` (what `default_entity_id` must be).

Home Assistant's discovery schemas drop keys they do not know (`extra=REMOVE_EXTRA`), which hides
a misspelt key; `check` therefore refuses unknown keys, so a key edged sends is one Home Assistant
reads. `object_id` is the one key newer versions drop on purpose (see edged/mqtt/discovery.py).
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any
from urllib.parse import urlparse

import jinja2
import voluptuous as vol

# --- homeassistant.helpers.config_validation, the parts used here --------------------------


def string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (list, dict)):
        raise vol.Invalid("expected a string")
    return str(value)


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.lower().strip()
        if low in ("1", "true", "yes", "on", "enable"):
            return True
        if low in ("0", "false", "no", "off", "disable"):
            return False
    elif isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise vol.Invalid(f"invalid boolean value {value}")


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise vol.Invalid("expected a positive integer")
    return value


def icon(value: Any) -> str:
    value = string(value)
    if ":" in value:
        return value
    raise vol.Invalid('Icons should be specified in the form "prefix:name"')


_JINJA = jinja2.Environment()


def template(value: Any) -> str:
    """`cv.template`: a string that compiles as a Jinja2 template."""
    if value is None:
        raise vol.Invalid("template value is None")
    if isinstance(value, (list, dict)):
        raise vol.Invalid("template value should be a string")
    try:
        _JINJA.parse(str(value))
    except jinja2.TemplateSyntaxError as exc:
        raise vol.Invalid(f"invalid template ({exc})") from None
    return str(value)


def url(value: Any) -> str:
    parsed = urlparse(string(value))
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return str(value)
    raise vol.Invalid("invalid url")


def ensure_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


ENTITY_CATEGORIES = vol.In(["config", "diagnostic"])
# homeassistant/core.py VALID_ENTITY_ID
VALID_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")

# --- mqtt/util.py --------------------------------------------------------------------------


def valid_topic(value: Any) -> str:
    value = string(value)
    raw = value.encode("utf-8")
    if not raw:
        raise vol.Invalid("MQTT topic name/filter must not be empty.")
    if len(raw) > 65535:
        raise vol.Invalid("MQTT topic name/filter must not be longer than 65535 encoded bytes.")
    if "\0" in value:
        raise vol.Invalid("MQTT topic name/filter must not contain null character.")
    if any(0xD800 <= ord(c) <= 0xDFFF or 0x7F <= ord(c) <= 0x9F for c in value):
        raise vol.Invalid("MQTT topic name/filter must not contain control characters.")
    return value


def valid_subscribe_topic(value: Any) -> str:
    value = valid_topic(value)
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise vol.Invalid("Multi-level wildcard must be the last character in the filter.")
        if "+" in level and level != "+":
            raise vol.Invalid("Single-level wildcard must occupy an entire level of the filter")
    return value


def valid_publish_topic(value: Any) -> str:
    value = valid_topic(value)
    if "+" in value or "#" in value:
        raise vol.Invalid("Wildcards cannot be used in topic names")
    return value


QOS = vol.All(vol.Coerce(int), vol.In([0, 1, 2]))

# --- mqtt/const.py, mqtt/schemas.py ----------------------------------------------------------

AVAILABILITY_MODES = ["all", "any", "latest"]


def _has_identifier(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("identifiers") or value.get("connections"):
        return value
    raise vol.Invalid(
        "Device must have at least one identifying value in 'identifiers' and/or 'connections'"
    )


DEVICE = vol.All(
    vol.Schema(
        {
            vol.Optional("identifiers", default=list): vol.All(ensure_list, [string]),
            vol.Optional("connections", default=list): vol.All(
                ensure_list, [vol.All(vol.Length(2), [string])]
            ),
            vol.Optional("manufacturer"): string,
            vol.Optional("model"): string,
            vol.Optional("model_id"): string,
            vol.Optional("name"): string,
            vol.Optional("hw_version"): string,
            vol.Optional("serial_number"): string,
            vol.Optional("sw_version"): string,
            vol.Optional("via_device"): string,
            vol.Optional("suggested_area"): string,
            vol.Optional("configuration_url"): url,
        }
    ),
    _has_identifier,
)

ORIGIN = vol.Schema(
    {vol.Required("name"): string, vol.Optional("sw_version"): string,
     vol.Optional("support_url"): url}
)

AVAILABILITY = {
    vol.Exclusive("availability_topic", "availability"): valid_subscribe_topic,
    vol.Optional("availability_template"): template,
    vol.Optional("payload_available", default="online"): string,
    vol.Optional("payload_not_available", default="offline"): string,
    vol.Optional("availability_mode", default="latest"): vol.All(
        string, vol.In(AVAILABILITY_MODES)
    ),
    vol.Exclusive("availability", "availability"): vol.All(
        ensure_list,
        [
            {
                vol.Required("topic"): valid_subscribe_topic,
                vol.Optional("payload_available", default="online"): string,
                vol.Optional("payload_not_available", default="offline"): string,
                vol.Optional("value_template"): template,
            }
        ],
    ),
}

ENTITY_COMMON = {
    **AVAILABILITY,
    vol.Optional("device"): DEVICE,
    vol.Optional("entity_picture"): url,
    vol.Optional("origin"): ORIGIN,
    vol.Optional("enabled_by_default", default=True): boolean,
    vol.Optional("entity_category"): ENTITY_CATEGORIES,
    vol.Optional("icon"): icon,
    vol.Optional("json_attributes_topic"): valid_subscribe_topic,
    vol.Optional("json_attributes_template"): template,
    vol.Optional("object_id"): string,  # up to 2026.3
    vol.Optional("default_entity_id"): string,  # from 2025.10
    vol.Optional("unique_id"): string,
}

BASE = {vol.Optional("qos", default=0): QOS, vol.Optional("encoding", default="utf-8"): string}
RO = {**BASE, vol.Required("state_topic"): valid_subscribe_topic,
      vol.Optional("value_template"): template}
RW = {**BASE, vol.Required("command_topic"): valid_publish_topic,
      vol.Optional("optimistic", default=False): boolean,
      vol.Optional("retain", default=False): boolean,
      vol.Optional("state_topic"): valid_subscribe_topic}

# --- the platforms ---------------------------------------------------------------------------

# homeassistant/components/sensor/const.py SensorDeviceClass, StateClass
SENSOR_DEVICE_CLASSES = [
    "date", "enum", "timestamp", "absolute_humidity", "apparent_power", "aqi", "area",
    "atmospheric_pressure", "battery", "blood_glucose_concentration", "carbon_monoxide",
    "carbon_dioxide", "conductivity", "current", "data_rate", "data_size", "distance",
    "duration", "energy", "energy_distance", "energy_storage", "frequency", "gas", "humidity",
    "illuminance", "irradiance", "moisture", "monetary", "nitrogen_dioxide", "nitrogen_monoxide",
    "nitrous_oxide", "ozone", "ph", "pm1", "pm10", "pm25", "pm4", "power_factor", "power",
    "precipitation", "precipitation_intensity", "pressure", "reactive_energy", "reactive_power",
    "signal_strength", "sound_pressure", "speed", "sulphur_dioxide", "temperature",
    "volatile_organic_compounds", "volatile_organic_compounds_parts", "voltage", "volume",
    "volume_storage", "volume_flow_rate", "water", "weight", "wind_direction", "wind_speed",
]
STATE_CLASSES = ["measurement", "measurement_angle", "total", "total_increasing"]
# homeassistant/components/binary_sensor/__init__.py BinarySensorDeviceClass
BINARY_SENSOR_DEVICE_CLASSES = [
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window",
]
SWITCH_DEVICE_CLASSES = ["outlet", "switch"]


def _device_class(classes: list[str]) -> Any:
    return vol.Any(vol.All(vol.Lower, vol.In(classes)), None)


def _sensor_rules(config: dict[str, Any]) -> dict[str, Any]:
    """sensor.py validate_sensor_state_and_device_class_config (the parts that apply)."""
    if "last_reset_value_template" in config and config.get("state_class") != "total":
        raise vol.Invalid("`last_reset_value_template` needs state class `total`")
    if (options := config.get("options")) is not None:
        if not options:
            raise vol.Invalid("An empty options list is not allowed")
        if config.get("state_class") or config.get("unit_of_measurement"):
            raise vol.Invalid("`options` is not allowed with `state_class` or a unit")
        if config.get("device_class") not in (None, "enum"):
            raise vol.Invalid("`options` needs device class `enum`")
    if config.get("device_class") == "enum" and (
        config.get("state_class") or config.get("unit_of_measurement")
    ):
        raise vol.Invalid("an `enum` sensor has no state class or unit")
    if config.get("device_class") in ("date", "timestamp") and config.get("state_class"):
        raise vol.Invalid("a date/timestamp sensor has no state class")
    return config


def _image_rules(config: dict[str, Any]) -> dict[str, Any]:
    """image.py validate_topic_required."""
    if "image_topic" not in config and "url_topic" not in config:
        raise vol.Invalid("Expected one of [`image_topic`, `url_topic`], got none")
    if "content_type" in config and "url_topic" in config:
        raise vol.Invalid("Option `content_type` can not be used together with `url_topic`")
    return config


PLATFORMS: dict[str, Any] = {
    "sensor": vol.All(
        vol.Schema({
            **RO,
            vol.Optional("device_class"): _device_class(SENSOR_DEVICE_CLASSES),
            vol.Optional("expire_after"): positive_int,
            vol.Optional("force_update", default=False): boolean,
            vol.Optional("last_reset_value_template"): template,
            vol.Optional("name"): vol.Any(string, None),
            vol.Optional("options"): ensure_list,
            vol.Optional("suggested_display_precision"): positive_int,
            vol.Optional("state_class"): vol.Any(vol.In(STATE_CLASSES), None),
            vol.Optional("unit_of_measurement"): vol.Any(string, None),
            **ENTITY_COMMON,
        }),
        _sensor_rules,
    ),
    "binary_sensor": vol.Schema({
        **RO,
        vol.Optional("device_class"): _device_class(BINARY_SENSOR_DEVICE_CLASSES),
        vol.Optional("expire_after"): positive_int,
        vol.Optional("force_update", default=False): boolean,
        vol.Optional("name"): vol.Any(string, None),
        vol.Optional("off_delay"): positive_int,
        vol.Optional("payload_off", default="OFF"): string,
        vol.Optional("payload_on", default="ON"): string,
        **ENTITY_COMMON,
    }),
    "switch": vol.Schema({
        **RW,
        vol.Optional("name"): vol.Any(string, None),
        vol.Optional("payload_off", default="OFF"): string,
        vol.Optional("payload_on", default="ON"): string,
        vol.Optional("state_off"): string,
        vol.Optional("state_on"): string,
        vol.Optional("value_template"): template,
        vol.Optional("device_class"): _device_class(SWITCH_DEVICE_CLASSES),
        **ENTITY_COMMON,
    }),
    "image": vol.All(
        vol.Schema({
            **BASE,
            vol.Optional("content_type"): string,
            vol.Optional("name"): vol.Any(string, None),
            vol.Exclusive("url_topic", "image_topic"): valid_subscribe_topic,
            vol.Exclusive("image_topic", "image_topic"): valid_subscribe_topic,
            vol.Optional("image_encoding"): "b64",
            vol.Optional("url_template"): template,
            **ENTITY_COMMON,
        }),
        _image_rules,
    ),
}

# mqtt/discovery.py TOPIC_MATCHER
DISCOVERY_TOPIC = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)


def check(topic: str, config: dict[str, Any], discovery_prefix: str = "homeassistant") -> None:
    """Raise `vol.Invalid` (or AssertionError) unless Home Assistant would accept this config
    on this topic, reading every key edged sent."""
    assert topic.startswith(discovery_prefix + "/"), topic
    match = DISCOVERY_TOPIC.fullmatch(topic[len(discovery_prefix) + 1 :])
    assert match is not None, f"{topic}: not a discovery topic Home Assistant matches"
    component = match["component"]
    assert component in PLATFORMS, f"{topic}: platform {component} not checked here"
    PLATFORMS[component](config)
    entity_id = config.get("default_entity_id")
    if entity_id is not None:
        assert VALID_ENTITY_ID.match(entity_id), f"{entity_id}: not a valid entity id"
        assert entity_id.startswith(component + "."), f"{entity_id}: not a {component}"
        assert config.get("object_id") in (None, entity_id.split(".", 1)[1]), (
            "object_id and default_entity_id name different entities"
        )


# --- how Home Assistant reads the topics (mqtt/entity.py MqttAvailabilityMixin, models.py) ----


def render(value_template: str | None, payload: bytes) -> str:
    """`MqttValueTemplate.async_render_with_possible_json_value`: `value`, and `value_json`
    when the payload is JSON."""
    text = payload.decode("utf-8", "replace")
    if value_template is None:
        return text
    variables: dict[str, Any] = {"value": text}
    with contextlib.suppress(ValueError):
        variables["value_json"] = json.loads(text)
    return _JINJA.from_string(value_template).render(variables).strip()


def available(config: dict[str, Any], latest: dict[str, bytes]) -> bool:
    """Whether Home Assistant shows the entity available, given the latest payload of each
    topic (a topic with no message yet counts as not available, as in Home Assistant)."""
    entries = config.get("availability") or []
    if not entries:
        return True
    states: list[bool | None] = []
    for entry in entries:
        payload = latest.get(entry["topic"])
        if payload is None:
            states.append(False)
            continue
        value = render(entry.get("value_template"), payload)
        if value == entry.get("payload_available", "online"):
            states.append(True)
        elif value == entry.get("payload_not_available", "offline"):
            states.append(False)
        else:
            states.append(None)  # neither: Home Assistant ignores the message
    mode = config.get("availability_mode", "latest")
    known = [s for s in states if s is not None]
    if mode == "all":
        return all(s is True for s in states)
    if mode == "any":
        return any(known)
    return bool(known and known[-1])
