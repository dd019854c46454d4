"""The pipe protocol between the supervisor and a worker: the one module both sides import.

Every message is a msgspec Struct, encoded as msgpack and framed with a 4-byte big-endian length.
Frames never travel here: a result is a few hundred bytes (boxes, labels, scores, timestamps).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Literal

import msgspec

from edged.config.model import StreamConfig, WorkerConfig

HEADER = struct.Struct(">I")
MAX_MESSAGE = 16 * 1024 * 1024

# Worker exit codes: they tell the supervisor whether a blind restart can help.
EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # the model or the device could not be loaded: back off, report failed
EXIT_PIPE_LOST = 4  # the supervisor went away


class _Msg(msgspec.Struct, tag=True, array_like=True, frozen=True):
    pass


# --- supervisor -> worker -------------------------------------------------------------------


class StartStream(_Msg, frozen=True):
    stream: StreamConfig


class UpdateStream(_Msg, frozen=True):
    """New thresholds, labels or detect_fps for a running stream; nothing is reopened."""

    stream: StreamConfig


class StopStream(_Msg, frozen=True):
    name: str


class Shutdown(_Msg, frozen=True):
    pass


Down = StartStream | UpdateStream | StopStream | Shutdown


class WorkerSpec(msgspec.Struct, frozen=True):
    """What a worker is started with (passed as msgpack bytes through spawn's arguments)."""

    worker: WorkerConfig
    streams: tuple[StreamConfig, ...]
    log_level: str = "info"
    # Seconds between heartbeats from the inference loop (when it is progressing).
    heartbeat_interval: float = 1.0
    metrics_interval: float = 2.0


# --- worker -> supervisor -------------------------------------------------------------------


class Ready(_Msg, frozen=True):
    pid: int
    backend: str
    model: str
    providers: tuple[str, ...]
    load_ms: float
    warmup_ms: float


class Detection(msgspec.Struct, frozen=True):
    """One box, in the layout of the MQTT detections payload (edged/schemas/detections.json)."""

    label: str
    class_id: int
    score: float
    # x1, y1, x2, y2 in frame pixels
    box: tuple[float, float, float, float]


class Result(_Msg, frozen=True):
    stream: str
    frame: int
    # wall-clock seconds (time.time()) when the frame left the decoder
    capture_ts: float
    width: int
    height: int
    infer_ms: float
    # The frame's detections as the JSON array the MQTT payload carries (`detections_json`).
    # Encoded once, in the worker: the supervisor splices it into the payload without decoding
    # or re-encoding a box, which was a third of its CPU per message.
    detections: bytes


class _Label(msgspec.Struct):
    label: str


_json_encoder = msgspec.json.Encoder()
_detections_decoder = msgspec.json.Decoder(list[Detection])
_labels_decoder = msgspec.json.Decoder(list[_Label])


def detections_json(detections: Sequence[Detection]) -> bytes:
    """What `Result.detections` carries (the worker's side)."""
    return _json_encoder.encode(detections)


def decode_detections(data: bytes) -> list[Detection]:
    return _detections_decoder.decode(data)


def detection_labels(data: bytes) -> list[str]:
    """Only the labels of `Result.detections` (Home Assistant counts; the rest is skipped)."""
    return [d.label for d in _labels_decoder.decode(data)]


class Heartbeat(_Msg, frozen=True):
    """Sent by the inference loop itself: it proves progress, not just that a timer ticks."""

    progress: int


class StreamState(_Msg, frozen=True):
    stream: str
    status: Literal["starting", "online", "offline", "ended"]
    reason: str = ""


class StreamCounters(msgspec.Struct, array_like=True, frozen=True):
    stream: str
    frames_in: int
    frames_processed: int
    frames_dropped: int
    decode_errors: int
    reconnects: int


class Metrics(_Msg, frozen=True):
    streams: tuple[StreamCounters, ...]
    # inference milliseconds of the frames since the last Metrics (a small sample)
    infer_ms: tuple[float, ...]


class Error(_Msg, frozen=True):
    message: str
    fatal: bool = False


Up = Ready | Result | Heartbeat | StreamState | Metrics | Error

_encoder = msgspec.msgpack.Encoder()
down_decoder = msgspec.msgpack.Decoder(Down)
up_decoder = msgspec.msgpack.Decoder(Up)


def frame(message: msgspec.Struct) -> bytes:
    """Encode one message with its length prefix."""
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def encode_spec(spec: WorkerSpec) -> bytes:
    return _encoder.encode(spec)


def decode_spec(data: bytes) -> WorkerSpec:
    return msgspec.msgpack.decode(data, type=WorkerSpec)
