"""Object events, counts and line totals from the workers to MQTT.

Runs in the supervisor process, on its event loop, for each message the workers' trackers send
(a few a second, not one per frame: the per-frame work is in the worker, see
docs/architecture.md "Events"). Everything that must survive goes through the `Ledger` first:

- events: `<prefix>/<node>/events` and `<prefix>/<node>/<stream>/events`, QoS 1 through the
  outbox (durable across broker outages and restarts), numbered per stream (`seq`);
- snapshots: the event's JPEG, retained on `<stream>/snapshot/<label>` (and optionally on disk);
- line totals: retained on `<stream>/line/<line>/<label>`, kept in the ledger across restarts;
- counts: retained on `<stream>/count/<label>` and `<stream>/zone/<zone>/<label>`, set to
  unknown (`null`) as soon as the stream is not online, so no stale count stays on the broker.

When a worker dies its open events are ended here with reason `restart`; on start the events
the last run left open are ended the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import msgspec
import structlog

from edged.config.model import StreamConfig
from edged.mqtt.payloads import encode_event
from edged.mqtt.publisher import Publisher
from edged.mqtt.topics import Topics
from edged.protocol import Counts, Crossing, EventKind, ObjectEvent
from edged.supervisor.ledger import Ledger, LineTotal
from edged.supervisor.snapshots import SnapshotStore

log = structlog.get_logger(__name__)


def events_seq_key(stream: str) -> str:
    """The outbox's seq series of a stream's events (stream names cannot contain '/')."""
    return f"{stream}/events"


class EventRelay:
    def __init__(self, publisher: Publisher, ledger: Ledger, snapshots: SnapshotStore) -> None:
        self._publisher = publisher
        self._ledger = ledger
        self._snapshots = snapshots
        self._streams: dict[str, StreamConfig] = {}
        # stream -> label -> count last published (None: unknown)
        self._counts: dict[str, dict[str, int | None]] = {}
        self._zones: dict[str, dict[str, dict[str, int | None]]] = {}
        self.published = 0
        self._retained: dict[str, set[str]] = {}  # stream -> retained suffixes set here

    # --- config ------------------------------------------------------------------------------

    def set_streams(self, streams: Sequence[StreamConfig]) -> None:
        before = set(self._streams)
        self._streams = {s.name: s for s in streams if s.tracking.enabled}
        for gone in before - set(self._streams):
            # Removed, or its tracking turned off: its retained counts are deleted, not stale.
            for suffix in self._retained.pop(gone, set()):
                self._publisher.set_state_bytes(suffix, b"")
            self._counts.pop(gone, None)
            self._zones.pop(gone, None)
        for name, stream in self._streams.items():
            self._ledger.reset_lines(name, {line.name for line in stream.lines})
            for line, total in self._ledger.line_totals().get(name, {}).items():
                for label in total.counts:
                    self._publish_line(name, line, label, total)

    def end_left_open(self, reason: str = "restart") -> int:
        """At start: end what the last run of the daemon left open (it crashed or was killed)."""
        stale = self._ledger.open_events()
        self.end_open(stale, reason)
        if stale:
            log.warning("ended events left open by the last run", events=len(stale),
                        reason=reason)
        return len(stale)

    # --- worker messages ---------------------------------------------------------------------

    def on_event(self, event: ObjectEvent) -> None:
        if event.kind is not EventKind.NEW and not self._ledger.is_open(event.event_id):
            # Already ended (by us, for a worker that was gone): one `end` per `new`, never two.
            return
        jpeg = event.snapshot
        self._ledger.record(event, lambda: self._publish_event(event, jpeg))

    def on_crossing(self, crossing: Crossing) -> None:
        stream, line, label = crossing.stream, crossing.line, crossing.label

        def release() -> None:
            total = self._ledger.line_totals().get(stream, {}).get(line)
            if total is not None:
                self._publish_line(stream, line, label, total)

        self._ledger.count_crossing(stream, line, label, crossing.direction, release)

    def on_counts(self, counts: Counts) -> None:
        stream = counts.stream
        known = self._counts.setdefault(stream, {})
        config = self._streams.get(stream)
        # A stream's configured labels are published from its first count on, 0 until seen
        # (a Home Assistant sensor then has a state at once); others from when first seen.
        listed = set(config.labels) if config is not None else set()
        for label in set(known) | set(counts.labels) | listed:
            value = counts.labels.get(label, 0)
            if known.get(label, -1) != value:
                known[label] = value
                self._publish_count(stream, label, value)
        zones = self._zones.setdefault(stream, {})
        for zone, labels in counts.zones.items():
            seen = zones.setdefault(zone, {})
            for label in set(seen) | set(labels):
                value = labels.get(label, 0)
                if seen.get(label, -1) != value:
                    seen[label] = value
                    self._publish_zone(stream, zone, label, value)

    # --- stream and worker state -------------------------------------------------------------

    def stream_not_online(self, stream: str) -> None:
        """Counts become unknown at once: a count of a stream nobody watches is not a count."""
        for label, value in self._counts.get(stream, {}).items():
            if value is not None:
                self._counts[stream][label] = None
                self._publish_count(stream, label, None)
        for zone, labels in self._zones.get(stream, {}).items():
            for label, value in labels.items():
                if value is not None:
                    labels[label] = None
                    self._publish_zone(stream, zone, label, None)

    def worker_gone(self, streams: Iterable[str], reason: str) -> None:
        """A worker process ended: its open events end here (it cannot say so any more)."""
        names = set(streams)
        for name in names:
            self.stream_not_online(name)
        self.end_open(self._ledger.open_events(names), reason)

    def end_open(self, events: list[ObjectEvent], reason: str) -> None:
        now = time.time()
        for event in events:
            self.on_event(
                msgspec.structs.replace(
                    event, kind=EventKind.END, ts=now, end_ts=now, end_reason=reason,
                    changes=(), snapshot=b"",
                )
            )

    # --- publishing --------------------------------------------------------------------------

    def _publish_event(self, event: ObjectEvent, jpeg: bytes) -> None:
        pub = self._publisher
        seq = pub.next_seq(events_seq_key(event.stream))
        payload = encode_event(pub.node_name, seq, event)
        pub.publish_durable("events", payload)
        pub.publish_durable(f"{event.stream}/events", payload)
        self.published += 1
        if jpeg:
            suffix = Topics.snapshot_suffix(event.stream, event.label)
            self._retained.setdefault(event.stream, set()).add(suffix)
            pub.set_state_bytes(suffix, jpeg)
            stream = self._streams.get(event.stream)
            if stream is not None and stream.tracking.snapshot_keep_days > 0:
                self._snapshots.keep(event, jpeg, stream.tracking.snapshot_keep_days)

    def _set(self, stream: str, suffix: str, payload: dict[str, object]) -> None:
        self._retained.setdefault(stream, set()).add(suffix)
        self._publisher.set_state(suffix, payload)

    def _publish_count(self, stream: str, label: str, value: int | None) -> None:
        self._set(stream, Topics.count_suffix(stream, label),
                  {"stream": stream, "label": label, "count": value})

    def _publish_zone(self, stream: str, zone: str, label: str, value: int | None) -> None:
        self._set(
            stream,
            Topics.zone_suffix(stream, zone, label),
            {"stream": stream, "zone": zone, "label": label, "count": value},
        )

    def _publish_line(self, stream: str, line: str, label: str, total: LineTotal) -> None:
        per = total.counts.get(label, {})
        self._set(
            stream,
            Topics.line_suffix(stream, line, label),
            {
                "stream": stream,
                "line": line,
                "label": label,
                "in": per.get("in", 0),
                "out": per.get("out", 0),
                "since_ms": round(total.since * 1000),
            },
        )
