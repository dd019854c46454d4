"""The worker's end of the pipe: results held while the worker is behind are written together,
in order, no later than `HOLD_S` after the first; anything sent at once goes behind them."""

from __future__ import annotations

import select
import socket
import time

from edged.protocol import HEADER, Heartbeat, Result, Up, up_decoder
from edged.worker.channel import HOLD_S, WorkerChannel


def result(index: int) -> Result:
    return Result("s", index, time.time(), 640, 480, 5.0, b"[]")


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def messages_in(sock: socket.socket) -> list[Up]:
    """Everything the worker wrote so far (a socketpair delivers a write at once)."""
    data = b""
    while readable(sock):
        data += sock.recv(65536)
    out: list[Up] = []
    while data:
        (size,) = HEADER.unpack_from(data)
        out.append(up_decoder.decode(data[HEADER.size : HEADER.size + size]))
        data = data[HEADER.size + size :]
    return out


def frames(messages: list[Up]) -> list[int]:
    assert all(isinstance(m, Result) for m in messages), messages
    return [m.frame for m in messages if isinstance(m, Result)]


def test_held_results_wait_and_then_go_together_in_order() -> None:
    parent, child = socket.socketpair()
    channel = WorkerChannel(child)
    started = time.monotonic()
    channel.send_held([result(1)])
    channel.send_held([result(2), result(3)])
    channel.flush()  # too early: nothing is due yet
    if time.monotonic() - started < HOLD_S:
        assert not readable(parent)
        assert 0 < channel.due_in(1.0) <= HOLD_S
    # An inference loop flushes every iteration: the held bytes go once their time has come.
    deadline = time.monotonic() + 5
    while not readable(parent):
        assert time.monotonic() < deadline, "held messages never written"
        assert channel.due_in(0.25) <= HOLD_S
        channel.flush()
    assert time.monotonic() - started >= HOLD_S
    assert frames(messages_in(parent)) == [1, 2, 3]
    assert channel.due_in(0.25) == 0.25  # nothing held: an idle loop waits its usual time


def test_a_message_sent_at_once_goes_behind_what_is_held() -> None:
    parent, child = socket.socketpair()
    channel = WorkerChannel(child)
    channel.send_held([result(1), result(2)])
    channel.send(Heartbeat(7))
    got = messages_in(parent)
    assert [type(m).__name__ for m in got] == ["Result", "Result", "Heartbeat"]
    assert frames(got[:2]) == [1, 2]


def test_flush_now_writes_what_is_held_at_once() -> None:
    parent, child = socket.socketpair()
    channel = WorkerChannel(child)
    channel.send_held([result(4)])
    channel.flush(now=True)
    assert frames(messages_in(parent)) == [4]
    channel.flush(now=True)  # nothing held: nothing written
    assert not readable(parent)
