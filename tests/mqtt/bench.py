"""Figures for docs/mqtt.md: publish throughput, CPU per message, loss across a long outage.

    python -m tests.mqtt.bench throughput [--messages 50000]
    python -m tests.mqtt.bench cpu [--rate 200] [--seconds 20]
    python -m tests.mqtt.bench outage [--rate 200] [--seconds 60]

Each starts its own mosquitto (tests.support.broker) in a temporary folder, runs the Publisher
in this process on uvloop (as the supervisor does), and prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import structlog
import uvloop

from edged.mqtt import Publisher
from tests.mqtt.support import configs, persistent_broker, result, until, validate
from tests.support.broker import Broker

READY_TOPIC = "bench/ready"


def cpu_s() -> float:
    """User + system CPU seconds of this process, all threads (the outbox's disk thread too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def paced(pub: Publisher, streams: list[str], rate: float, seconds: float) -> dict[str, int]:
    sent = dict.fromkeys(streams, 0)
    period = len(streams) / rate
    t_end = time.monotonic() + seconds
    nxt = time.monotonic()
    while time.monotonic() < t_end:
        for s in streams:
            pub.publish_detections(s, result(s, sent[s], n_boxes=3))
            sent[s] += 1
        nxt += period
        await asyncio.sleep(max(0.0, nxt - time.monotonic()))
    return sent


async def throughput(broker: Broker, state: Path, messages: int) -> dict[str, Any]:
    pub = Publisher(*configs(broker.url), state)
    task = asyncio.create_task(pub.run())
    await until(lambda: pub.connected, 10, "connected")
    c0, t0 = cpu_s(), time.perf_counter()
    chunk = 500  # let the loop run between chunks, as results arrive in bursts
    for i in range(0, messages, chunk):
        for j in range(i, min(i + chunk, messages)):
            pub.publish_detections("cam1", result("cam1", j, n_boxes=3))
        await asyncio.sleep(0)
    await until(lambda: pub.stats()["published"] >= messages, 300, "all acknowledged")
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    stats = pub.stats()
    await pub.stop()
    await task
    return {
        "bench": "throughput",
        "messages": messages,
        "msgs_per_s": round(messages / wall),
        "cpu_us_per_msg": round(cpu / messages * 1e6, 1),
        "outbox_peak": stats["outbox_peak"],
        "spilled_to_disk": stats["outbox_peak"] > 1000,
    }


async def cpu(broker: Broker, state: Path, rate: float, seconds: float) -> dict[str, Any]:
    pub = Publisher(*configs(broker.url), state)
    task = asyncio.create_task(pub.run())
    await until(lambda: pub.connected, 10, "connected")
    c0, t0 = cpu_s(), time.perf_counter()
    sent = await paced(pub, ["cam1", "cam2", "cam3", "cam4"], rate, seconds)
    await until(lambda: pub.stats()["published"] >= sum(sent.values()), 30, "all acknowledged")
    wall, used = time.perf_counter() - t0, cpu_s() - c0
    await pub.stop()
    await task
    n = sum(sent.values())
    return {
        "bench": "cpu",
        "rate": rate,
        "messages": n,
        "cpu_percent_of_one_core": round(used / wall * 100, 2),
        "cpu_us_per_msg": round(used / n * 1e6, 1),
    }


async def outage(workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    """The subscriber is `mosquitto_sub` in its own process (persistent session, QoS 1): an
    in-process aiomqtt subscriber shares uvloop's file-descriptor table with the publisher, and
    aiomqtt 2.5's late `add_writer` on a closed socket (see the report) can silence it."""
    broker = persistent_broker(workdir)
    broker.start()
    streams = ["cam1", "cam2", "cam3", "cam4"]
    out = workdir / "received.txt"
    sub = subprocess.Popen(  # noqa: ASYNC220 - once, before the measurement
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-c",
            "-i",
            "bench-sub",
            "-q",
            "1",
            "-t",
            "edged/+/+/detections",
            "-t",
            READY_TOPIC,
            "-F",
            "%p",
        ],
        stdout=out.open("wb"),
    )

    def received_docs() -> list[dict[str, Any]]:
        docs = (json.loads(line) for line in out.read_text().splitlines() if line.strip())
        return [d for d in docs if "id" in d]  # not the readiness markers

    async def subscribed() -> None:
        # A QoS 1 marker published after the subscription is in place comes back in the file.
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            deadline = time.monotonic() + 10
            while b'"ready"' not in out.read_bytes():
                assert time.monotonic() < deadline, "mosquitto_sub did not subscribe"
                await client.publish(READY_TOPIC, b'{"ready": true}', qos=1)
                await asyncio.sleep(0.1)

    try:
        await subscribed()
        pub = Publisher(*configs(broker.url), workdir / "state")
        task = asyncio.create_task(pub.run())
        await until(lambda: pub.connected, 10, "connected")
        producer = asyncio.create_task(paced(pub, streams, rate, seconds + 20))
        await asyncio.sleep(5)
        broker.stop()
        t_down = time.monotonic()
        peak_disk = 0
        while time.monotonic() - t_down < seconds:
            peak_disk = max(peak_disk, pub.stats()["outbox_disk"])
            await asyncio.sleep(0.25)
        broker.start()
        await until(lambda: pub.connected, 120, "reconnected")
        t_up = time.monotonic()
        await until(lambda: pub.stats()["outbox_depth"] < rate * 0.2, 120, "drained")
        drain_s = time.monotonic() - t_up
        sent = await producer
        total = sum(sent.values())
        with contextlib.suppress(AssertionError):  # report what arrived, not a traceback
            await until(lambda: len({d["id"] for d in received_docs()}) >= total, 60, "all")
        docs = received_docs()
        stats = pub.stats()
        await pub.stop()
        await task
    finally:
        sub.terminate()
        sub.wait()
        broker.stop()
    unique = {d["id"]: d for d in docs}
    schema_errors = 0
    for d in docs:
        try:
            validate(f"edged/edge/{d['stream']}/detections", json.dumps(d).encode())
        except Exception:
            schema_errors += 1
    missing = {
        s: sorted(set(range(1, n + 1)) - {d["seq"] for d in unique.values() if d["stream"] == s})
        for s, n in sent.items()
    }
    in_order = all(
        [d["seq"] for d in unique.values() if d["stream"] == s]
        == sorted(d["seq"] for d in unique.values() if d["stream"] == s)
        for s in streams
    )
    return {
        "bench": "outage",
        "outage_s": seconds,
        "rate": rate,
        "sent": total,
        "received_unique": len(unique),
        "lost": total - len(unique),
        "missing_seqs_sample": {s: m[:10] for s, m in missing.items() if m},
        "duplicates": len(docs) - len(unique),
        "in_seq_order": in_order,
        "dropped": stats["dropped"],
        "outbox_peak_messages": stats["outbox_peak"],
        "outbox_peak_disk_rows": peak_disk,
        "drain_s_after_reconnect": round(drain_s, 2),
        "schema_errors": schema_errors,
    }


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as tmp:
        work = Path(tmp)
        if args.bench == "outage":
            return await outage(work, args.rate, args.seconds)
        broker = Broker(work)
        broker.start()
        try:
            if args.bench == "throughput":
                return await throughput(broker, work / "state", args.messages)
            return await cpu(broker, work / "state", args.rate, args.seconds)
        finally:
            broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("bench", choices=["throughput", "cpu", "outage"])
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--rate", type=float, default=200.0, help="messages a second, all streams")
    p.add_argument("--seconds", type=float, default=None)
    args = p.parse_args()
    if args.seconds is None:
        args.seconds = 60.0 if args.bench == "outage" else 20.0
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(json.dumps(uvloop.run(amain(args))))


if __name__ == "__main__":
    main()
