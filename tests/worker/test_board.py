"""The frame board: newest frame wins for live streams, files wait, streams are served fairly."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from edged.backends.base import ModelInput
from edged.worker.board import BEHIND_S, FrameBoard, FramePacket


class Named:
    """Stands in for a StreamSource: the board only reads `.name`."""

    def __init__(self, name: str) -> None:
        self.name = name


def packet(name: str, index: int) -> FramePacket:
    source: Any = Named(name)
    path: Any = None  # the board never touches the media path
    return FramePacket(source, path, index, time.time(), ModelInput(np.zeros((2, 2, 3)), 1, 2, 2))


def test_newest_frame_replaces_the_waiting_one() -> None:
    board = FrameBoard()
    assert board.offer(packet("a", 1), wait=False) is None
    replaced = board.offer(packet("a", 2), wait=False)
    assert replaced is not None and replaced.index == 1
    taken = board.take(0.1)
    assert taken is not None and taken.index == 2
    assert board.take(0.01) is None


def test_streams_are_served_oldest_offer_first() -> None:
    board = FrameBoard()
    board.offer(packet("a", 1), wait=False)
    board.offer(packet("b", 1), wait=False)
    board.offer(packet("a", 2), wait=False)  # a's new frame goes behind b
    order = [board.take(0.1) for _ in range(2)]
    assert [(p.source.name, p.index) for p in order if p] == [("b", 1), ("a", 2)]


def test_waiting_offer_blocks_until_the_slot_is_taken() -> None:
    board = FrameBoard()
    board.offer(packet("file", 1), wait=True)
    offered = threading.Event()

    def second() -> None:
        board.offer(packet("file", 2), wait=True)
        offered.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not offered.wait(0.2)  # nothing dropped: the decoder waits for the detector
    first = board.take(1.0)
    assert first is not None and first.index == 1
    assert offered.wait(2.0)
    nxt = board.take(1.0)
    assert nxt is not None and nxt.index == 2
    thread.join()


def test_close_releases_a_waiting_producer_and_discard_empties_a_slot() -> None:
    board = FrameBoard()
    board.offer(packet("file", 1), wait=True)
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (board.offer(packet("file", 2), wait=True), done.set())
    )
    thread.start()
    board.close()
    assert done.wait(2.0)
    thread.join()
    dropped = board.discard("file")
    assert dropped is not None


def test_take_on_an_empty_board_returns_none_after_its_timeout() -> None:
    board = FrameBoard()
    started = time.monotonic()
    assert board.take(0.05) is None
    assert time.monotonic() - started >= 0.04


def test_a_take_frees_only_the_stream_whose_frame_it_took() -> None:
    board = FrameBoard()
    names = ["a", "b", "c", "d"]
    for name in names:
        board.offer(packet(name, 1), wait=True)
    offered = {name: threading.Event() for name in names}

    def decoder(name: str) -> None:
        board.offer(packet(name, 2), wait=True)  # blocks: its slot is full
        offered[name].set()

    threads = [threading.Thread(target=decoder, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    first = board.take(1.0)
    assert first is not None and first.source.name == "a"  # the oldest offer
    assert offered["a"].wait(2.0)
    assert not any(offered[n].wait(0.05) for n in names[1:])  # the others still wait
    for _ in names[1:]:
        assert board.take(1.0) is not None
    assert all(offered[n].wait(2.0) for n in names)
    for thread in threads:
        thread.join()


def test_an_offer_wakes_an_idle_inference_loop() -> None:
    board = FrameBoard()
    got: list[FramePacket | None] = []
    loops = [threading.Thread(target=lambda: got.append(board.take(5.0))) for _ in range(2)]
    for loop in loops:
        loop.start()
    time.sleep(0.05)  # both loops wait on the empty board (a wait, not a condition to poll)
    started = time.monotonic()
    board.offer(packet("a", 1), wait=False)
    board.offer(packet("b", 1), wait=False)
    for loop in loops:
        loop.join(5.0)
    assert time.monotonic() - started < 2.0  # woken by the offers, not by their timeouts
    assert sorted(p.source.name for p in got if p) == ["a", "b"]


def test_behind_while_frames_find_their_stream_slot_taken() -> None:
    board = FrameBoard()
    board.offer(packet("a", 1), wait=False)
    board.offer(packet("b", 1), wait=False)
    # Two streams' frames waiting together is not being behind: each had its slot free.
    assert not board.behind()
    board.offer(packet("a", 2), wait=False)  # a's frame 1 was not taken in time: replaced
    assert board.behind()
    assert board.take(0) is not None and board.take(0) is not None
    assert not board.behind()  # nothing waits: the next result goes at once
    board.offer(packet("a", 3), wait=False)
    assert board.behind()  # still within BEHIND_S of the replacement
    assert board.take(0) is not None
    started = time.monotonic()
    while time.monotonic() - started <= BEHIND_S:  # keeping up: every slot found free
        board.offer(packet("a", 4), wait=False)
        assert board.take(0) is not None
    board.offer(packet("a", 5), wait=False)
    assert not board.behind()


def test_a_file_waiting_for_its_slot_makes_the_worker_behind() -> None:
    board = FrameBoard()
    board.offer(packet("f", 1), wait=True)
    taker = threading.Timer(0.05, lambda: board.take(0))
    taker.start()
    board.offer(packet("f", 2), wait=True)  # waits until frame 1 is taken
    taker.join()
    assert board.behind()
