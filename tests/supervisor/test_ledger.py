"""The ledger: a `new` is on disk before it is released; totals and open events survive."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edged.protocol import EventKind, ObjectEvent
from edged.supervisor.ledger import FILE, Ledger


def event(kind: EventKind, event_id: str = "a" * 32) -> ObjectEvent:
    box = (1.0, 2.0, 3.0, 4.0)
    return ObjectEvent(kind, event_id, "door", "person", 7, 100.0, 101.0, 0.8, 0.9, box, box,
                       1280, 720, snapshot=b"\xff\xd8jpeg")


def test_new_is_written_before_release_and_end_removes_it(tmp_path: Path) -> None:
    async def main() -> None:
        ledger = Ledger(tmp_path)
        on_disk_at_release: list[list[str]] = []

        def release() -> None:
            on_disk_at_release.append(list(json.loads((tmp_path / FILE).read_bytes())["open"]))

        ledger.record(event(EventKind.NEW), release)
        ledger.record(event(EventKind.UPDATE), lambda: None)
        await ledger.settled()
        assert on_disk_at_release == [["a" * 32]]
        ledger.record(event(EventKind.END), release)
        await ledger.settled()
        assert on_disk_at_release[-1] == []
        await ledger.close()

    asyncio.run(main())


def test_open_events_and_line_totals_survive_a_restart(tmp_path: Path) -> None:
    async def first_run() -> None:
        ledger = Ledger(tmp_path)
        ledger.record(event(EventKind.NEW, "b" * 32), lambda: None)
        ledger.count_crossing("door", "gate", "person", "in", lambda: None)
        ledger.count_crossing("door", "gate", "person", "in", lambda: None)
        ledger.count_crossing("door", "gate", "person", "out", lambda: None)
        await ledger.settled()
        # no close(): the process is killed here

    asyncio.run(first_run())
    ledger = Ledger(tmp_path)
    [left_open] = ledger.open_events()
    assert left_open.event_id == "b" * 32 and left_open.snapshot == b""  # no JPEG in the file
    total = ledger.line_totals()["door"]["gate"]
    assert total.counts == {"person": {"in": 2, "out": 1}} and total.since > 0


def test_an_unreadable_file_starts_empty(tmp_path: Path) -> None:
    (tmp_path / FILE).write_text("{not json")
    assert Ledger(tmp_path).open_events() == []
