"""The typed shape of `config.toml`.

These structs are the single source of truth: the JSON Schema that validation runs (and that
`docs/config.md` documents) is generated from them with `msgspec.json.schema`. They are frozen so
that a reload can compare old and new sections with `==`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# A name ends up inside MQTT topics and Home Assistant ids: lowercase, no '/', '+', '#' or spaces.
Name = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="lowercase letters, digits, '-' and '_' (it becomes part of MQTT topics)",
    ),
]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Score = Annotated[float, msgspec.Meta(ge=0, le=1)]


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class NodeConfig(Base, frozen=True):
    name: Name = "edge"
    # Outbox, fetched models. Empty: $STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/edged.
    state_dir: str = ""
    health_interval: Seconds = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Reload by itself when config.toml changes (checked every 2 s), as if sent SIGHUP.
    watch_config: bool = False


class TlsConfig(Base, frozen=True):
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # Verify the broker's certificate and host name. Turn off only for a test broker.
    verify: bool = True


class OutboxConfig(Base, frozen=True):
    # Durable messages kept in memory before they are spilled to the on-disk store.
    memory_messages: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # Bound of the on-disk store; beyond it the oldest messages are dropped and counted.
    disk_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 256 * 1024 * 1024


class MqttConfig(Base, frozen=True):
    # mqtt://host[:port] or mqtts://host[:port] (TLS); no user:password@ (validation refuses it)
    url: Annotated[str, msgspec.Meta(pattern=r"^mqtts?://[^/\s]+/?$")] = "mqtt://127.0.0.1:1883"
    topic_prefix: Name = "edged"
    client_id: str = ""
    # "auto": MQTT 5, or 3.1.1 when the broker refuses 5 (logged as mqtt_protocol_fallback)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive: Annotated[int, msgspec.Meta(ge=5, le=65535)] = 30
    publish_timeout: Seconds = 5.0
    # Milliseconds detections may wait to be written together: fewer wake-ups (less supervisor
    # CPU at high message rates) for at most this much extra delivery latency. 0: send at once
    # (the default: a detection is news; docs/performance.md has the measured trade).
    linger_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 0.0
    username: str = ""
    # The password comes from a file, or from $CREDENTIALS_DIRECTORY/<password_credential>
    # (systemd LoadCredential=); it is never written in config.toml.
    password_file: str = ""
    password_credential: str = ""
    tls: TlsConfig = msgspec.field(default_factory=TlsConfig)
    outbox: OutboxConfig = msgspec.field(default_factory=OutboxConfig)


class HomeAssistantConfig(Base, frozen=True):
    enabled: bool = False
    discovery_prefix: Name = "homeassistant"


class RestartConfig(Base, frozen=True):
    """How a crashed or hung worker is started again (`[workers.restart]`)."""

    # First wait after a crash, doubled on each crash in a row, up to `max_delay`.
    delay: Seconds = 0.5
    max_delay: Seconds = 30.0
    # First wait after a worker could not load its model or open its device (also doubled):
    # such a fault rarely clears in half a second.
    boot_error_delay: Seconds = 5.0
    # More than `budget` restarts within `window` seconds: the worker is reported failed and
    # only retried every `failed_retry` seconds.
    budget: Annotated[int, msgspec.Meta(ge=1)] = 5
    window: Seconds = 300.0
    failed_retry: Seconds = 300.0


class WorkerConfig(Base, frozen=True):
    name: Name
    # A path (relative to this file), or the name of a fetched model such as "yolox-nano".
    model: str
    # "cpu": ONNX Runtime on the CPU. "ascend": a Huawei Ascend NPU through pyACL (CANN): an
    # ATC-converted `.om` model, streams decoded and letterboxed on the device (docs/ascend.md).
    backend: Literal["cpu", "ascend"] = "cpu"
    model_format: Literal["yolox", "yolov5", "yolov8"] = "yolox"
    # "coco" (built in) or a path to a file with one class name a line, in output order.
    labels: str = "coco"
    # Model input [width, height].
    input_size: tuple[Annotated[int, msgspec.Meta(ge=32)], Annotated[int, msgspec.Meta(ge=32)]] = (
        416,
        416,
    )
    # Inference threads in the worker; each runs one inference at a time. "auto": one per core
    # this worker's share of the machine has (cores / CPU workers), resolved in `edged.config.auto`.
    threads: Annotated[int, msgspec.Meta(ge=1, le=64)] | Literal["auto"] = "auto"
    # Accelerator device index (ascend); ignored by the cpu backend.
    device: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Ascend: what the .om's input takes. "yuv420sp": static AIPP (YUV420SP_U8) converts the
    # NV12 that VDEC/VPC produce on the device; "float": a model without AIPP, fed float32
    # NCHW tensors letterboxed on the host (frames then cross to the device). Ignored by cpu.
    input_kind: Literal["yuv420sp", "float"] = "yuv420sp"
    # Frames one inference may take at once, from several streams; ascend: at most the .om's
    # largest dynamic batch gear (ATC --dynamic_batch_size). The cpu backend runs one at a time.
    batch: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    ready_timeout: Seconds = 120.0
    # A worker whose inference loop shows no progress for this long is declared hung.
    heartbeat_timeout: Seconds = 10.0
    restart: RestartConfig = msgspec.field(default_factory=RestartConfig)


Point = tuple[float, float]


class TrackingConfig(Base, frozen=True):
    """Objects with a life per stream (`[streams.tracking]`): tracks, events, counts, snapshots.

    Every time is in seconds, so the same settings hold at any `detect_fps`.
    """

    enabled: bool = True
    # A detection at least this sure starts a track and is matched first (ByteTrack's high
    # stage); between `keep_score` and this it only keeps an existing track alive (low stage).
    # Hysteresis: an object must be seen clearly to start, then survives blurred frames.
    track_score: Score = 0.5
    keep_score: Score = 0.2
    # Minimum overlap (IoU) between a track's predicted box and a detection to match them.
    match_iou: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.2
    # A new track must be matched for this long (and at least twice) before its `new` event.
    confirm_s: Annotated[float, msgspec.Meta(ge=0)] = 0.3
    # A track not matched for this long ends (`left` when it was last seen leaving the frame,
    # else `lost`).
    lost_s: Seconds = 1.5
    # An object that has not moved more than a quarter of its size for this long is
    # stationary: one `update`, and it is kept through missed detections for `stationary_lost_s`
    # (a parked car stays one event).
    stationary_s: Seconds = 10.0
    stationary_lost_s: Seconds = 60.0
    # Seconds between two `update` events of one object at most (changes in between are
    # gathered into the next one).
    update_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    # A per-label count must hold its new value this long before it is published.
    count_hold_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    # Best-frame snapshot per event: "crop" (the object with a margin), "frame" (the whole frame
    # with the box drawn) or "off".
    snapshot: Literal["crop", "frame", "off"] = "crop"
    # Largest side of a snapshot in pixels and the most bytes it may take (quality is lowered
    # until it fits).
    snapshot_size: Annotated[int, msgspec.Meta(ge=32, le=4096)] = 640
    snapshot_max_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 200_000
    # Keep each event's snapshot in <state_dir>/snapshots/<stream>/ for this many days (0: not
    # kept on disk).
    snapshot_keep_days: Annotated[float, msgspec.Meta(ge=0)] = 0.0


class ZoneConfig(Base, frozen=True):
    """A polygon (`[[streams.zones]]`); an object is in it by its box's bottom centre."""

    name: Name
    # At least 3 [x, y] points, in pixels of the frame, or fractions of its width and height
    # with `normalized = true`.
    points: Annotated[tuple[Point, ...], msgspec.Meta(min_length=3)]
    normalized: bool = False
    # Only these labels (empty: every label the stream tracks).
    objects: tuple[str, ...] = ()
    # Seconds inside before an object counts as entered, outside before it counts as left.
    enter_s: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    leave_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    # Seconds inside after which the object is reported loitering (0: never).
    loiter_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0


class LineConfig(Base, frozen=True):
    """A counting line (`[[streams.lines]]`), crossed by the path of a box's bottom centre.

    Walking from its first point to its second, a crossing from left to right counts `in`, from
    right to left `out`.
    """

    name: Name
    points: Annotated[tuple[Point, ...], msgspec.Meta(min_length=2, max_length=2)]
    normalized: bool = False
    objects: tuple[str, ...] = ()
    # An object must stay across the line this long before its crossing counts.
    settle_s: Annotated[float, msgspec.Meta(ge=0)] = 0.3


class StreamConfig(Base, frozen=True):
    name: Name
    # rtsp://..., http(s)://..., /dev/videoN, file:PATH or a plain path (relative to this file).
    source: str
    worker: Name
    # Files only: start again at the end.
    loop: bool = False
    # Files only: play at the file's frame rate like a camera (true), or as fast as they decode.
    realtime: bool = True
    # Detections a second; 0 runs the detector on every frame it can.
    detect_fps: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # Only these labels are published; empty publishes every label.
    labels: tuple[str, ...] = ()
    min_score: Score = 0.4
    # Seconds to wait before reopening a stream that failed, doubled on each failure up to 60 s.
    reconnect_delay: Seconds = 2.0
    # Seconds to wait for a live source to connect and describe its stream before giving up
    # ("no_answer"); also bounds a file's open.
    open_timeout: Seconds = 10.0
    # Seconds one read of a live source may block (capped at stall_timeout).
    read_timeout: Seconds = 5.0
    # A live stream that delivers no decoded frame for this long is reported offline ("stalled")
    # and reopened; a frozen camera that keeps its socket open is caught this way.
    stall_timeout: Seconds = 5.0
    # RTSP only: media over the RTSP TCP connection ("tcp": passes NAT and firewalls, no loss) or
    # over UDP ("udp": less latency on a clean network, frames are lost with packets).
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    # FFmpeg decoder threads for this stream; 0 lets FFmpeg pick (one per core). "auto": the
    # cores / the streams on its worker, at least 1 (`edged.config.auto`): streams already decode
    # in parallel, one thread each, so more threads per stream only add hand-off costs.
    decoder_threads: Annotated[int, msgspec.Meta(ge=0, le=64)] | Literal["auto"] = "auto"
    # Publish every processed frame's detections; off when only events and counts are wanted.
    detections: bool = True
    tracking: TrackingConfig = msgspec.field(default_factory=TrackingConfig)
    zones: tuple[ZoneConfig, ...] = ()
    lines: tuple[LineConfig, ...] = ()


class Config(Base, frozen=True):
    node: NodeConfig = msgspec.field(default_factory=NodeConfig)
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    homeassistant: HomeAssistantConfig = msgspec.field(default_factory=HomeAssistantConfig)
    workers: tuple[WorkerConfig, ...] = ()
    streams: tuple[StreamConfig, ...] = ()
