"""The pipe protocol between the supervisor and a worker: the one module both sides import.

Every message is a msgspec Struct, encoded as msgpack and framed with a 4-byte big-endian length.
Frames never travel here: a result is a few hundred bytes (boxes, labels, scores, timestamps).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence

import msgspec

from edged.config.model import StreamConfig, WorkerConfig

HEADER = struct.Struct(">I")
MAX_MESSAGE = 16 * 1024 * 1024

class StreamStatus(enum.StrEnum):
    """A stream's status, as the retained `<stream>/status` message and health say it.

    A worker reports the first four for its own streams; the supervisor adds the last three.
    """

    STARTING = "starting"  # opening the source
    ONLINE = "online"  # frames arrive and are detected
    OFFLINE = "offline"  # the source failed (the reason says why); it is retried with backoff
    ENDED = "ended"  # a file without `loop` reached its end
    FAILED = "failed"  # its worker is failed (past its restart budget), retried slowly
    REMOVED = "removed"  # no longer in the config
    STOPPED = "stopped"  # detection turned off with its switch (StreamReason.DETECTION_OFF)


class WorkerState(enum.StrEnum):
    """A worker handle's state in the supervisor (health's `workers.<name>.state`)."""

    STARTING = "starting"  # spawned, loading its model; READY is due within `ready_timeout`
    READY = "ready"  # model loaded and warmed up; heartbeats due every `heartbeat_timeout`
    STOPPING = "stopping"  # told to shut down; SIGKILL after the grace period
    BACKOFF = "backoff"  # crashed or hung; started again after a delay
    FAILED = "failed"  # past its restart budget; retried every `failed_retry` seconds
    STOPPED = "stopped"  # not started yet, or stopped for good


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


class SetLogLevel(_Msg, frozen=True):
    """`node.log_level` changed on reload: the worker's loggers follow at once."""

    level: str


class Shutdown(_Msg, frozen=True):
    pass


Down = StartStream | UpdateStream | StopStream | SetLogLevel | Shutdown


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
_labels_decoder = msgspec.json.Decoder(list[_Label])


def detections_json(detections: Sequence[Detection]) -> bytes:
    """What `Result.detections` carries (the worker's side)."""
    return _json_encoder.encode(detections)


def detection_labels(data: bytes) -> list[str]:
    """Only the labels of `Result.detections` (Home Assistant counts; the rest is skipped)."""
    return [d.label for d in _labels_decoder.decode(data)]


class EventKind(enum.StrEnum):
    NEW = "new"
    UPDATE = "update"
    END = "end"


class LineCrossed(msgspec.Struct, frozen=True):
    line: str
    direction: str  # "in" | "out" (edged.track.regions.Direction)
    ts: float


class ObjectEvent(_Msg, frozen=True):
    """One tracked object's `new`, `update` or `end` (edged/schemas/event.json, less `id`/`seq`).

    Made in the worker, which owns the tracker (docs/architecture.md, "Events"); the supervisor
    numbers it, remembers which events are open and publishes it durably.
    """

    kind: EventKind
    event_id: str
    stream: str
    label: str
    track_id: int
    start_ts: float  # wall-clock seconds of the first frame the object was seen in
    ts: float  # capture time of the frame this event describes
    score: float
    best_score: float
    box: tuple[float, float, float, float]
    best_box: tuple[float, float, float, float]
    width: int
    height: int
    zones: tuple[str, ...] = ()  # zones the object is in now
    loitering: tuple[str, ...] = ()
    lines: tuple[LineCrossed, ...] = ()  # every crossing of this object so far
    stationary: bool = False
    changes: tuple[str, ...] = ()  # why this update: "zone", "line", "snapshot", "stationary"
    end_ts: float = 0.0
    end_reason: str = ""  # edged.track.tracker.EndReason
    # A JPEG of the object's best frame so far, when it improved since the last event.
    snapshot: bytes = b""


class Crossing(_Msg, frozen=True):
    """A counted line crossing; the supervisor adds it to the line's persisted totals."""

    stream: str
    line: str
    label: str
    direction: str
    ts: float


class Counts(_Msg, frozen=True):
    """A stream's debounced object counts, sent when one changes."""

    stream: str
    labels: dict[str, int]
    zones: dict[str, dict[str, int]]


class Heartbeat(_Msg, frozen=True):
    """Sent by the inference loop itself: it proves progress, not just that a timer ticks."""

    progress: int


class StreamReason(enum.StrEnum):
    """Why a stream is not online, as a word a program can match; `StreamState.detail` and the
    log say it in words (with the source's URL redacted)."""

    NONE = ""
    UNAUTHORIZED = "unauthorized"  # 401: user or password missing or wrong
    FORBIDDEN = "forbidden"  # 403, or a file the worker may not read
    NOT_FOUND = "not_found"  # 404, no such path on the camera, no such file or device
    CONNECTION_REFUSED = "connection_refused"  # nothing listens on that host and port
    SERVER_ERROR = "server_error"  # HTTP 5xx: the camera or server failed to answer properly
    UNREACHABLE = "unreachable"  # unknown host name, no route to the host
    NO_ANSWER = "no_answer"  # connected (or not) but no stream description within open_timeout
    NO_VIDEO = "no_video_track"  # the source has no video stream
    UNSUPPORTED_CODEC = "unsupported_codec"  # the backend has no decoder for the video codec
    INVALID_DATA = "invalid_data"  # not a stream or file the demuxer understands
    STALLED = "stalled"  # no frame for stall_timeout (a frozen camera)
    DISCONNECTED = "disconnected"  # the source closed or reset the connection
    END_OF_FILE = "end_of_file"
    ERROR = "error"  # anything else: the detail says what
    WORKER_RESTARTING = "worker_restarting"
    WORKER_FAILED = "worker_failed"
    EDGED_STOPPED = "edged_stopped"
    REMOVED = "removed"  # the stream is no longer in the config
    DETECTION_OFF = "detection_off"  # turned off with the stream's detection switch


class StreamState(_Msg, frozen=True):
    stream: str
    status: StreamStatus
    reason: StreamReason = StreamReason.NONE
    # The reason in words a person can act on (URLs redacted); empty when online.
    detail: str = ""


class StreamCounters(msgspec.Struct, array_like=True, frozen=True):
    stream: str
    frames_in: int
    frames_processed: int
    frames_dropped: int
    # frames the decoder could not decode (the stream went on)
    decode_errors: int
    # times the source was reopened after a failure
    reconnects: int
    # times a playing live source was lost (closed, reset, stalled)
    disconnects: int = 0
    # frames counted in but left undecoded: no detection wanted them and no other frame
    # needed them (edged/worker/disposable.py)
    frames_skipped: int = 0


class Metrics(_Msg, frozen=True):
    streams: tuple[StreamCounters, ...]
    # inference milliseconds of the frames since the last Metrics (a small sample)
    infer_ms: tuple[float, ...]


class Error(_Msg, frozen=True):
    message: str
    fatal: bool = False


Up = Ready | Result | Heartbeat | StreamState | Metrics | Error | ObjectEvent | Crossing | Counts

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
