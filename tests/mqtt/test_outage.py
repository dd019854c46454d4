"""A broker outage while detections flow: nothing lost, no gap in seq, order kept per stream.

The outage length is a parameter: `EDGED_TEST_OUTAGE_S` (default 30 s, as issue 4 asks); the 60 s
full-load figure comes from `python -m tests.mqtt.bench outage` (see docs/mqtt.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from edged.mqtt import Publisher
from edged.stats import percentile
from tests.mqtt.support import (
    Subscriber,
    configs,
    persistent_broker,
    process_subscribed,
    result,
    until,
)

OUTAGE_S = float(os.environ.get("EDGED_TEST_OUTAGE_S", "30"))
STREAMS = ("cam1", "cam2")
RATE = 100.0  # messages a second, all streams together


def check_delivery(sub: Subscriber, sent: dict[str, int]) -> dict[str, int]:
    """Every seq of every stream arrived; first arrivals in seq order; duplicates share an id."""
    duplicates = {}
    for stream, n in sent.items():
        docs = sub.detections(stream)
        first: dict[str, dict[str, Any]] = {}
        for d in docs:
            if d["id"] in first:
                assert first[d["id"]] == d, "a redelivery must be the same message"
            else:
                first[d["id"]] = d
        seqs = [d["seq"] for d in first.values()]
        assert seqs == list(range(1, n + 1)), f"{stream}: gap or disorder in seq"
        duplicates[stream] = len(docs) - len(first)
    return duplicates


async def produce(pub: Publisher, sent: dict[str, int], stop: asyncio.Event) -> None:
    period = len(STREAMS) / RATE
    nxt = time.monotonic()
    while not stop.is_set():
        for s in STREAMS:
            pub.publish_detections(s, result(s, sent[s]))
            sent[s] += 1
        nxt += period
        await asyncio.sleep(max(0.0, nxt - time.monotonic()))


def test_broker_outage_loses_nothing(tmp_path: Path) -> None:
    broker = persistent_broker(tmp_path)
    broker.start()

    async def main() -> None:
        sent = dict.fromkeys(STREAMS, 0)
        # The subscriber runs in its own process (see ProcessSubscriber for why).
        async with process_subscribed(broker.port, tmp_path) as sub:
            pub = Publisher(*configs(broker.url), tmp_path / "state")
            run = asyncio.create_task(pub.run())
            await until(lambda: pub.connected, 10, "connected")
            stop = asyncio.Event()
            producer = asyncio.create_task(produce(pub, sent, stop))
            await sub.wait_for(lambda _: len(sub.detections()) >= 100, 10, "flow before outage")

            broker.stop()
            await until(lambda: not pub.connected, 10, "disconnect noticed")
            t_down = time.monotonic()
            # The outage itself: a scenario's length, not a wait for a condition.
            await asyncio.sleep(OUTAGE_S / 2)
            # While the broker is away the outbox is on disk, not only in memory.
            assert pub.stats()["outbox_disk"] > 0
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))
            broker.start()

            await until(lambda: pub.connected, 90, "reconnected")
            # New detections keep coming while the backlog goes out, as in the field.
            await until(lambda: pub.stats()["outbox_disk"] == 0, 60, "the backlog sent")
            stop.set()
            await producer
            total = sum(sent.values())
            await sub.wait_for(
                lambda _: len({d["id"] for d in sub.detections()}) >= total,
                60,
                f"all {total} messages (stats {pub.stats()})",
            )
            stats = pub.stats()
            dups = check_delivery(sub, sent)
            print(f"outage {OUTAGE_S}s: sent {sent}, duplicates {dups}, stats {stats}")
            assert stats["dropped"] == 0 and stats["reconnects"] >= 1
            assert stats["outbox_peak"] >= RATE * OUTAGE_S * 0.8
            await pub.stop()
            await run

    try:
        asyncio.run(main())
    finally:
        broker.stop()


# A plain 1 ms sleeper in its own process: how late the box wakes anything up meanwhile (ms).
BOX_TICKER = """
import json, sys, time
end, late = time.monotonic() + float(sys.argv[1]), []
while time.monotonic() < end:
    t0 = time.perf_counter()
    time.sleep(0.001)
    late.append((time.perf_counter() - t0 - 0.001) * 1000.0)
print(json.dumps(late))
"""
SPILL_RATE = 200.0  # messages a second during the lateness test, as issue 12 asks
TICK_S = 0.001


async def tick(lateness: list[float], stop: asyncio.Event) -> None:
    """A 1 ms ticker: how late each wake-up comes, in milliseconds."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lateness.append((time.perf_counter() - t0 - TICK_S) * 1000.0)


async def paced(pub: Publisher, rate: float, stop: asyncio.Event) -> int:
    period, n = len(STREAMS) / rate, 0
    nxt = time.monotonic()
    while not stop.is_set():
        for s in STREAMS:
            pub.publish_detections(s, result(s, n))
        n += 1
        nxt += period
        await asyncio.sleep(max(0.0, nxt - time.monotonic()))
    return n * len(STREAMS)


def test_the_loop_stays_on_time_while_an_outage_spills_to_disk(tmp_path: Path) -> None:
    """Issue 12: a 1 ms ticker on the publisher's loop (uvloop, as in the supervisor) during a
    30 s outage at 200 messages/s, everything going to the disk store: p99 lateness <= 10 ms.
    What the box itself adds (2 cores shared with other jobs) is measured in the same run and
    allowed on top: the same ticker on this loop with nothing else running, before the outage,
    and a plain 1 ms sleeper in a separate process during it."""
    broker = persistent_broker(tmp_path)
    broker.start()
    figures: dict[str, float | None] = {}

    async def main() -> None:
        pub = Publisher(*configs(broker.url), tmp_path / "state")
        run = asyncio.create_task(pub.run())
        await until(lambda: pub.connected, 10, "connected")
        broker.stop()
        await until(lambda: not pub.connected, 10, "disconnect noticed")

        idle: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(tick(idle, stop))
        await asyncio.sleep(3.0)  # the baseline's length, not a wait for a condition
        stop.set()
        await ticker

        busy: list[float] = []
        stop = asyncio.Event()
        box = await asyncio.create_subprocess_exec(
            sys.executable, "-c", BOX_TICKER, str(OUTAGE_S), stdout=asyncio.subprocess.PIPE
        )
        ticker = asyncio.create_task(tick(busy, stop))
        producer = asyncio.create_task(paced(pub, SPILL_RATE, stop))
        await asyncio.sleep(OUTAGE_S)  # the outage's length
        stop.set()
        await ticker
        sent = await producer
        out, _ = await box.communicate()
        box_lateness = json.loads(out)
        # Every message of the outage went to the disk store (none waits in memory).
        await until(lambda: pub.stats()["outbox_disk"] == sent, 10, f"{sent} messages on disk")
        await pub.stop()
        await run
        for name, values in (("idle", idle), ("spill", busy), ("box", box_lateness)):
            figures[f"{name}_p50"] = percentile(values, 50)
            figures[f"{name}_p99"] = percentile(values, 99)
        figures["sent"] = sent

    try:
        uvloop.run(main())
    finally:
        broker.stop()
    print(f"loop lateness (ms) during a {OUTAGE_S:g} s outage at {SPILL_RATE:g}/s: {figures}")
    spill_p99, idle_p99, box_p99 = figures["spill_p99"], figures["idle_p99"], figures["box_p99"]
    assert spill_p99 is not None and idle_p99 is not None and box_p99 is not None
    assert spill_p99 <= 10.0 + max(0.0, idle_p99 - 1.0, box_p99 - 1.0), figures
