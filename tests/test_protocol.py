"""The pipe protocol over a real socketpair: both ends, every message kind, EOF."""

from __future__ import annotations

import asyncio
import socket
import threading

import msgspec
import pytest
import uvloop

from edged.config.model import StreamConfig
from edged.mqtt.payloads import load_schema
from edged.protocol import (
    HEADER,
    Detection,
    Error,
    Heartbeat,
    Metrics,
    Ready,
    Result,
    Shutdown,
    StartStream,
    StopStream,
    StreamCounters,
    StreamReason,
    StreamState,
    StreamStatus,
    UpdateStream,
    WorkerState,
    detection_labels,
    detections_json,
    frame,
)
from edged.supervisor.channel import PipeClosed, SupervisorChannel
from edged.worker.channel import ChannelClosed, WorkerChannel
from tests.mqtt.support import until

STREAM = msgspec.convert({"name": "cam", "source": "rtsp://x/y", "worker": "w"}, StreamConfig)
UP = [
    Ready(1234, "cpu", "/m.onnx", ("CPUExecutionProvider",), 50.0, 20.0),
    Result(
        "cam",
        7,
        1.7e9,
        1280,
        720,
        9.5,
        detections_json([Detection("person", 0, 0.9, (1.0, 2.0, 3.0, 4.0))]),
    ),
    Heartbeat(42),
    StreamState(
        "cam", StreamStatus.OFFLINE, StreamReason.UNAUTHORIZED, "HTTP 401; retrying in 2 s"
    ),
    Metrics((StreamCounters("cam", 10, 9, 1, 0, 2),), (9.1, 9.3)),
    Error("model is not an ONNX file", fatal=True),
]
DOWN = [StartStream(STREAM), UpdateStream(STREAM), StopStream("cam"), Shutdown()]


RUNNERS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.mark.parametrize("loop", sorted(RUNNERS))
def test_every_message_crosses_both_ways_intact(loop: str) -> None:
    parent, child = socket.socketpair()
    worker = WorkerChannel(child)

    async def supervisor_side() -> list[object]:
        channel = await SupervisorChannel.open(parent)
        for message in DOWN:
            channel.send(message)
        received = [await channel.recv() for _ in UP]
        channel.close()
        return received

    got_down: list[object] = []

    def worker_side() -> None:
        for message in UP:
            worker.send(message)
        got_down.extend(worker.recv() for _ in DOWN)

    thread = threading.Thread(target=worker_side)
    thread.start()
    got_up = RUNNERS[loop](supervisor_side())
    thread.join(5)
    assert got_up == UP
    assert got_down == DOWN
    worker.close()


def test_deliver_hands_over_every_batch_in_order_then_the_end() -> None:
    parent, child = socket.socketpair()
    worker = WorkerChannel(child)
    first, second = UP[:3], UP[3:]

    async def main() -> list[object]:
        channel = await SupervisorChannel.open(parent)
        got: list[object] = []
        for message in first:
            worker.send(message)
        # they arrive before anyone asked for them
        await until(lambda: len(channel._protocol.messages) == len(first), 5, "buffered")
        channel.deliver(got.extend)
        for message in second:
            worker.send(message)
        worker.close()
        with pytest.raises(PipeClosed):
            await asyncio.wait_for(channel.closed(), 5)
        return got

    assert uvloop.run(main()) == UP


def test_a_result_is_small() -> None:
    detections = detections_json(
        [Detection("person", 0, 0.5, (100.0, 200.0, 150.0, 300.0)) for _ in range(20)]
    )
    size = len(frame(Result("street", 123456, 1.7e9, 1280, 720, 9.5, detections)))
    assert size < 2048  # twenty boxes in about a kilobyte; a 720p frame would be 2.7 MB


def test_detections_travel_as_the_payload_json() -> None:
    boxes = [
        Detection("person", 0, 0.9123, (1.5, 2.0, 300.25, 400.0)),
        Detection("car", 2, 0.5, (10.0, 20.0, 30.0, 40.0)),
    ]
    data = detections_json(boxes)
    assert msgspec.json.decode(data) == [
        {"label": "person", "class_id": 0, "score": 0.9123, "box": [1.5, 2.0, 300.25, 400.0]},
        {"label": "car", "class_id": 2, "score": 0.5, "box": [10.0, 20.0, 30.0, 40.0]},
    ]
    assert msgspec.json.decode(data, type=list[Detection]) == boxes
    assert detection_labels(data) == ["person", "car"]
    assert detections_json([]) == b"[]"


def test_eof_is_reported_on_both_ends() -> None:
    parent, child = socket.socketpair()
    child.close()

    async def read() -> None:
        channel = await SupervisorChannel.open(parent)
        await channel.recv()

    with pytest.raises(PipeClosed):
        asyncio.run(read())

    parent, child = socket.socketpair()
    parent.sendall(HEADER.pack(10) + b"abc")  # a message cut short, then EOF
    parent.close()
    with pytest.raises(ChannelClosed):
        WorkerChannel(child).recv()


def test_schemas_name_exactly_the_protocol_states() -> None:
    # One list of stream statuses and worker states: the enums; the published schemas agree.
    stream_status = load_schema("stream_status")["properties"]["status"]["enum"]
    assert stream_status == [s.value for s in StreamStatus]
    health = load_schema("health")["$defs"]
    assert health["stream"]["properties"]["status"]["enum"] == [
        s.value
        for s in StreamStatus
        if s is not StreamStatus.REMOVED  # gone from health
    ]
    assert health["worker"]["properties"]["state"]["enum"] == [s.value for s in WorkerState]
