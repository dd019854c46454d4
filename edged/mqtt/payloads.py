"""JSON payloads: detections, retained state, and the time stamps every payload carries.

Runs in the supervisor process, on the event loop (pure encoding, no I/O). Encoding uses
msgspec.json, and a detections message's boxes arrive already encoded from the worker (a JSON
array in `Result.detections`, written by our own worker code and spliced in unparsed), so a
message costs a couple of microseconds here, which matters at hundreds of messages a second (the
supervisor's CPU budget is ~3 % of a core).
The JSON Schema of every payload is shipped in `edged/schemas/` (see `schema_path`).
"""

from __future__ import annotations

import itertools
import time
import uuid
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import msgspec

from edged.protocol import EventKind, ObjectEvent, Result

SCHEMA_VERSION = 1

_encoder = msgspec.json.Encoder()


class DetectionsPayload(msgspec.Struct, frozen=True):
    """One message per processed frame, also frames with zero detections."""

    v: int
    id: str
    seq: int
    node: str
    stream: str
    frame: int
    ts: str
    ts_ms: int
    width: int
    height: int
    infer_ms: float
    # the JSON array the worker encoded (edged.protocol.detections_json), spliced in as it is
    detections: msgspec.Raw


_second_cache: tuple[int, str] = (-1, "")


def rfc3339_ms(ts_ms: int) -> str:
    """UTC, millisecond precision, 'Z' suffix: 2026-05-01T12:34:56.789Z."""
    global _second_cache  # noqa: PLW0603 - one-entry cache: strftime once a second, not per message
    secs, ms = divmod(ts_ms, 1000)
    if _second_cache[0] != secs:
        _second_cache = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
    return f"{_second_cache[1]}.{ms:03d}Z"


# Ids: 64 random bits drawn once per process, then a counter: 32 hex digits like a uuid4, unique
# across processes and restarts (a collision needs two processes drawing the same 64 bits), and
# several times cheaper than uuid4() per message.
_id_prefix = uuid.uuid4().hex[:16]
_id_counter = itertools.count()


def new_id() -> str:
    """A unique message id (32 hex digits) for de-duplicating at-least-once deliveries."""
    return f"{_id_prefix}{next(_id_counter):016x}"


def encode_detections(node: str, seq: int, result: Result, *, stream: str | None = None) -> bytes:
    ts_ms = round(result.capture_ts * 1000)
    payload = DetectionsPayload(
        v=SCHEMA_VERSION,
        id=new_id(),
        seq=seq,
        node=node,
        stream=stream or result.stream,
        frame=result.frame,
        ts=rfc3339_ms(ts_ms),
        ts_ms=ts_ms,
        width=result.width,
        height=result.height,
        infer_ms=round(result.infer_ms, 3),
        detections=msgspec.Raw(result.detections),
    )
    return _encoder.encode(payload)


def encode_state(payload: dict[str, Any] | str, now_ms: int | None = None) -> bytes:
    """A retained state value. Dicts get `v`, `ts` and `ts_ms` unless they carry their own."""
    if isinstance(payload, str):
        return payload.encode()
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    stamped = {"v": SCHEMA_VERSION, "ts": rfc3339_ms(now_ms), "ts_ms": now_ms}
    stamped.update(payload)
    return _encoder.encode(stamped)


def encode_json(obj: Any) -> bytes:
    return _encoder.encode(obj)


def schema_path(name: str) -> Traversable:
    """A shipped JSON Schema, e.g. `schema_path("detections")` -> edged/schemas/detections.json."""
    return resources.files("edged").joinpath("schemas", f"{name}.json")


def load_schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.json.decode(schema_path(name).read_bytes())
    return data


class LinePayload(msgspec.Struct, frozen=True):
    line: str
    direction: str
    ts_ms: int


class EventPayload(msgspec.Struct, frozen=True):
    """One object event (edged/schemas/event.json): `new`, `update` or `end`."""

    v: int
    id: str
    seq: int
    node: str
    type: str
    event_id: str
    stream: str
    label: str
    track_id: int
    start: str
    start_ms: int
    ts: str
    ts_ms: int
    end: str | None
    end_ms: int | None
    end_reason: str | None
    score: float
    best_score: float
    box: tuple[float, float, float, float]
    best_box: tuple[float, float, float, float]
    width: int
    height: int
    zones: tuple[str, ...]
    loitering: tuple[str, ...]
    lines: tuple[LinePayload, ...]
    stationary: bool
    changes: tuple[str, ...]
    snapshot: bool


def encode_event(node: str, seq: int, event: ObjectEvent) -> bytes:
    start_ms = round(event.start_ts * 1000)
    ts_ms = round(event.ts * 1000)
    end_ms = round(event.end_ts * 1000) if event.kind is EventKind.END else None
    payload = EventPayload(
        v=SCHEMA_VERSION,
        id=new_id(),
        seq=seq,
        node=node,
        type=event.kind.value,
        event_id=event.event_id,
        stream=event.stream,
        label=event.label,
        track_id=event.track_id,
        start=rfc3339_ms(start_ms),
        start_ms=start_ms,
        ts=rfc3339_ms(ts_ms),
        ts_ms=ts_ms,
        end=rfc3339_ms(end_ms) if end_ms is not None else None,
        end_ms=end_ms,
        end_reason=event.end_reason or None,
        score=event.score,
        best_score=event.best_score,
        box=event.box,
        best_box=event.best_box,
        width=event.width,
        height=event.height,
        zones=event.zones,
        loitering=event.loitering,
        lines=tuple(LinePayload(c.line, c.direction, round(c.ts * 1000)) for c in event.lines),
        stationary=event.stationary,
        changes=event.changes,
        snapshot=bool(event.snapshot),
    )
    return _encoder.encode(payload)
