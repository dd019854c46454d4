"""The outbox alone (no broker): order, spill to disk, restart, byte bound, seq across restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edged.mqtt.outbox import SEQ_BLOCK, Outbox
from edged.mqtt.store import Store
from tests.mqtt.support import until


async def _drain(box: Outbox, n: int) -> list[int]:
    """Take and acknowledge n messages; their payloads are their numbers."""
    got: list[int] = []
    while len(got) < n:
        for e in await asyncio.wait_for(box.take(7), 5):
            got.append(int(e.payload))
            box.ack(e)
    return got


async def _until_on_disk(box: Outbox, rows: int) -> None:
    await until(lambda: box.disk.rows == rows, 5, f"{rows} rows on disk")


def test_memory_path_keeps_order_and_never_touches_disk(tmp_path: Path) -> None:
    async def main() -> None:
        box = Outbox(tmp_path, memory_messages=1000, disk_bytes=1 << 20)
        box.set_online()
        for i in range(500):
            box.put("t", str(i).encode())
        assert await _drain(box, 500) == list(range(500))
        assert box.disk.rows == 0 and box.empty() and box.dropped == 0
        await box.close()

    asyncio.run(main())


def test_offline_spills_at_once_and_rewind_keeps_order(tmp_path: Path) -> None:
    async def main() -> None:
        box = Outbox(tmp_path, memory_messages=1000, disk_bytes=1 << 20)
        box.set_online()
        for i in range(10):
            box.put("t", str(i).encode())
        inflight = await box.take(4)  # 0..3 sent, not acknowledged
        box.ack(inflight[0])  # 0 acknowledged
        box.set_offline()  # the connection drops: 1..9 must go to disk, in order
        for i in range(10, 20):
            box.put("t", str(i).encode())
        await _until_on_disk(box, 19)
        assert box.memory_depth == 0
        box.set_online()
        assert await _drain(box, 19) == list(range(1, 20))
        await _until_on_disk(box, 0)
        await box.close()

    asyncio.run(main())


def test_memory_bound_spills_oldest_while_connected(tmp_path: Path) -> None:
    async def main() -> None:
        box = Outbox(tmp_path, memory_messages=50, disk_bytes=1 << 20)
        box.set_online()
        first = None
        for i in range(300):
            box.put("t", str(i).encode())
            if i == 20:
                first = await box.take(5)  # 0..4 in flight while the rest piles up
        await box.settled()
        assert box.memory_depth <= 50 + 5 and box.disk.rows > 0
        assert first is not None
        for e in first:
            box.ack(e)
        assert await _drain(box, 295) == list(range(5, 300))
        await box.close()

    asyncio.run(main())


def test_restart_delivers_what_was_on_disk_and_seq_continues(tmp_path: Path) -> None:
    async def first_run() -> None:
        box = Outbox(tmp_path, memory_messages=100, disk_bytes=1 << 20)
        assert [box.next_seq("a") for _ in range(3)] == [1, 2, 3]
        for i in range(30):
            box.put("t", str(i).encode())  # offline: straight to disk
        await _until_on_disk(box, 30)
        await box.close()

    async def second_run() -> None:
        box = Outbox(tmp_path, memory_messages=100, disk_bytes=1 << 20)
        assert box.next_seq("a") == 4  # clean stop: exact continuation
        box.put("t", b"30")
        box.set_online()
        assert await _drain(box, 31) == list(range(31))
        await box.close()

    asyncio.run(first_run())
    asyncio.run(second_run())


def test_crash_never_repeats_a_seq(tmp_path: Path) -> None:
    async def crashed_run() -> int:
        box = Outbox(tmp_path, memory_messages=100, disk_bytes=1 << 20)
        last = 0
        for _ in range(SEQ_BLOCK * 2 + 10):
            last = box.next_seq("a")
        await box.settled()  # the reservation writes have landed; now "crash" (no close)
        return last

    last = asyncio.run(crashed_run())

    async def after() -> None:
        box = Outbox(tmp_path, memory_messages=100, disk_bytes=1 << 20)
        nxt = box.next_seq("a")
        assert last < nxt <= last + SEQ_BLOCK * 2
        assert box.next_seq("b") == 1
        await box.close()

    asyncio.run(after())


def test_disk_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    async def main() -> None:
        box = Outbox(tmp_path, memory_messages=10, disk_bytes=20_000)
        pad = b"x" * 1000
        for i in range(100):
            box.put("t", b"%05d" % i + pad)
            await asyncio.sleep(0)
        await until(lambda: box.disk.rows + box.dropped == 100, 5, "all stored or dropped")
        assert box.disk.bytes <= 20_000
        assert box.dropped == 100 - box.disk.rows > 0
        box.set_online()
        got = []
        while box.disk.rows:
            for e in await box.take(50):
                got.append(int(e.payload[:5]))
                box.ack(e)
            await box.settled()  # deletes are batched: flush them before reading the depth
        assert got == list(range(100 - len(got), 100))  # the newest survive, in order
        await box.close()

    asyncio.run(main())


def test_corrupt_database_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "mqtt-outbox.sqlite3").write_bytes(b"this is not a database" * 100)
    store = Store(tmp_path, 1 << 20)
    assert store.rows == 0
    assert any(p.name.startswith("mqtt-outbox.sqlite3.corrupt-") for p in tmp_path.iterdir())
    store.close()


def test_unwritable_state_dir_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    async def main() -> None:
        box = Outbox(blocker / "sub", memory_messages=5, disk_bytes=1 << 20)
        assert box.disk_error
        for i in range(100):
            box.put("t", str(i).encode())
        assert box.memory_depth == 50 and box.dropped == 50  # 10x the memory bound, oldest gone
        box.set_online()
        assert await _drain(box, 50) == list(range(50, 100))
        await box.close()

    asyncio.run(main())
