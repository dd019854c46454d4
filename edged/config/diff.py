"""What changed between two validated configs, so a reload moves only what changed.

Pure data; runs in the supervisor on SIGHUP. Streams are keyed by name and workers by name; a
stream whose source, worker, RTSP transport or decoder threads changed is reopened (removed and
added), one whose thresholds, labels, detect_fps or timeouts changed is updated in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edged.config.model import Config, StreamConfig, WorkerConfig

# Fields that a running worker applies without reopening the stream.
_IN_PLACE = (
    "detect_fps",
    "labels",
    "min_score",
    "reconnect_delay",
    "loop",
    "realtime",
    # read by the source at its next open or packet
    "open_timeout",
    "read_timeout",
    "stall_timeout",
    # read by the worker's tracker at its next frame (open events stay open)
    "detections",
    "tracking",
    "zones",
    "lines",
)
# Settings of the opened container or decoder: the stream is reopened.
_REOPEN = ("source", "worker", "rtsp_transport", "decoder_threads")


@dataclass
class ConfigDiff:
    workers_added: list[WorkerConfig] = field(default_factory=list)
    workers_removed: list[str] = field(default_factory=list)
    workers_restarted: list[WorkerConfig] = field(default_factory=list)
    streams_added: list[StreamConfig] = field(default_factory=list)
    streams_removed: list[StreamConfig] = field(default_factory=list)
    streams_updated: list[StreamConfig] = field(default_factory=list)
    mqtt_changed: bool = False
    # Settings that only take effect after `systemctl restart edged`.
    requires_restart: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.workers_added
            or self.workers_removed
            or self.workers_restarted
            or self.streams_added
            or self.streams_removed
            or self.streams_updated
            or self.mqtt_changed
        )

    def summary(self) -> str:
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("workers added:", [w.name for w in self.workers_added]),
                ("workers removed:", self.workers_removed),
                ("workers restarted:", [w.name for w in self.workers_restarted]),
                ("streams added:", [s.name for s in self.streams_added]),
                ("streams removed:", [s.name for s in self.streams_removed]),
                ("streams updated:", [s.name for s in self.streams_updated]),
            )
            if names
        ]
        if self.mqtt_changed:
            parts.append("mqtt reconnects")
        return "; ".join(parts) or "nothing changed"


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    d = ConfigDiff()
    old_workers = {w.name: w for w in old.workers}
    new_workers = {w.name: w for w in new.workers}
    for name, worker in new_workers.items():
        if name not in old_workers:
            d.workers_added.append(worker)
        elif worker != old_workers[name]:
            d.workers_restarted.append(worker)
    d.workers_removed = [name for name in old_workers if name not in new_workers]

    old_streams = {s.name: s for s in old.streams}
    new_streams = {s.name: s for s in new.streams}
    for name, stream in new_streams.items():
        before = old_streams.get(name)
        if before is None:
            d.streams_added.append(stream)
        elif any(getattr(before, f) != getattr(stream, f) for f in _REOPEN):
            d.streams_removed.append(before)
            d.streams_added.append(stream)
        elif any(getattr(before, f) != getattr(stream, f) for f in _IN_PLACE):
            d.streams_updated.append(stream)
    d.streams_removed += [s for name, s in old_streams.items() if name not in new_streams]

    d.mqtt_changed = (old.mqtt, old.homeassistant, old.node.name) != (
        new.mqtt,
        new.homeassistant,
        new.node.name,
    )
    if old.node.state_dir != new.node.state_dir:
        d.requires_restart.append("node.state_dir")
    return d
