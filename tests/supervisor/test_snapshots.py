"""Snapshots kept on disk: one file per event, replaced when it improves, old ones pruned."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edged.protocol import EventKind, ObjectEvent
from edged.supervisor.snapshots import SnapshotStore


def _event(event_id: str) -> ObjectEvent:
    box = (1.0, 2.0, 3.0, 4.0)
    return ObjectEvent(EventKind.NEW, event_id, "door", "person", 1, 0.0, 0.0, 0.9, 0.9, box, box,
                       640, 480)


def test_kept_replaced_and_pruned_by_age(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    folder = tmp_path / "snapshots" / "door"
    folder.mkdir(parents=True)
    old = folder / ("0" * 32 + ".jpg")
    old.write_bytes(b"\xff\xd8old")
    two_days = time.time() - 2 * 86400
    os.utime(old, (two_days, two_days))
    store.keep(_event("a" * 32), b"\xff\xd8first", keep_days=1.0)
    store.keep(_event("a" * 32), b"\xff\xd8better", keep_days=1.0)
    store.close()  # waits for the disk thread
    assert (folder / ("a" * 32 + ".jpg")).read_bytes() == b"\xff\xd8better"
    assert not old.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["a" * 32 + ".jpg"]
