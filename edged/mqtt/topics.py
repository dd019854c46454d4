"""MQTT topic names: `<prefix>/<node>/...` and Home Assistant discovery topics.

Runs in the supervisor process (pure functions, no I/O). Config validation already restricts the
prefix, node and stream names to `[a-z0-9_-]`, so the only free text that reaches a topic here is a
class label (e.g. "traffic light"), which `slug` folds to the same alphabet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SLUG_BAD = re.compile(r"[^a-z0-9_-]+")
# A state suffix: one or more lowercase levels, never a wildcard or an empty level.
_SUFFIX = re.compile(r"^[a-z0-9_-]+(/[a-z0-9_-]+)*$")

ONLINE = "online"
OFFLINE = "offline"


def slug(text: str) -> str:
    """A label as a topic level / Home Assistant id: lowercase, runs of other chars -> '_'."""
    s = _SLUG_BAD.sub("_", text.strip().lower()).strip("_")
    return s or "_"


def check_suffix(suffix: str) -> str:
    """Reject a state suffix that is not lowercase levels of `[a-z0-9_-]` (a programming error)."""
    if not _SUFFIX.match(suffix):
        raise ValueError(f"state suffix {suffix!r} must be lowercase levels of [a-z0-9_-]")
    if suffix == "status":
        # `<prefix>/<node>/status` is the availability topic (LWT), owned by the publisher.
        raise ValueError("state suffix 'status' is reserved for availability")
    return suffix


@dataclass(frozen=True)
class Topics:
    """The topic tree of one node; rebuilt when the prefix or node name changes on reload."""

    prefix: str
    node: str
    discovery_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.node}"

    @property
    def availability(self) -> str:
        return f"{self.base}/status"

    def detections(self, stream: str) -> str:
        return f"{self.base}/{stream}/detections"

    def state(self, suffix: str) -> str:
        return f"{self.base}/{suffix}"

    @staticmethod
    def count_suffix(stream: str, label: str) -> str:
        return f"{stream}/count/{slug(label)}"

    @staticmethod
    def stream_status_suffix(stream: str) -> str:
        return f"{stream}/status"

    @staticmethod
    def zone_suffix(stream: str, zone: str, label: str) -> str:
        return f"{stream}/zone/{zone}/{slug(label)}"

    @staticmethod
    def line_suffix(stream: str, line: str, label: str) -> str:
        return f"{stream}/line/{line}/{slug(label)}"

    @staticmethod
    def snapshot_suffix(stream: str, label: str) -> str:
        return f"{stream}/snapshot/{slug(label)}"

    @staticmethod
    def detection_suffix(stream: str) -> str:
        """Retained: whether detection is on for the stream (the switch's state)."""
        return f"{stream}/detection"

    def detection_command(self, stream: str) -> str:
        """Where Home Assistant, Node-RED or a script asks to turn detection on or off."""
        return f"{self.base}/{stream}/detection/set"

    @property
    def detection_commands(self) -> str:
        """The subscription that covers every stream's detection command."""
        return f"{self.base}/+/detection/set"

    def command_stream(self, topic: str) -> str | None:
        """The stream a detection command topic names (None: not one of ours)."""
        head, sep, stream = topic.removesuffix("/detection/set").rpartition("/")
        if not sep or head != self.base or not topic.endswith("/detection/set"):
            return None
        return stream if _SUFFIX.match(stream) else None

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def discovery(self, component: str, object_id: str) -> str:
        # The node level groups this node's entities under the discovery prefix.
        return f"{self.discovery_prefix}/{component}/{self.prefix}_{self.node}/{object_id}/config"
