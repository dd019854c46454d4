"""The durable sender against a real broker: PUBACK accounting and a quiet idle connection.

A refused message (MQTT 5 negative PUBACK from a broker ACL) is counted and dropped while
everything else is delivered; mixed retained and durable writes leave no busy socket callback.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from edged.mqtt import Publisher
from tests.mqtt.support import configs, result, running, subscribed, until
from tests.support.broker import Broker


def test_a_refused_message_is_counted_and_the_rest_delivered(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite #\ntopic deny edged/edge/blocked/#\n")
    broker = Broker(tmp_path, extra_conf=[f"acl_file {acl}"])
    broker.start()

    async def main() -> None:
        async with (
            subscribed(broker.port, "edged/edge/+/detections") as sub,
            running(Publisher(*configs(broker.url), tmp_path / "state")) as pub,
        ):
            await until(lambda: pub.connected, 10, "connected")
            for i in range(5):
                pub.publish_detections("open", result("open", i))
                pub.publish_detections("blocked", result("blocked", i))
            await until(lambda: pub.stats()["rejected"] == 5, 30, "5 refusals counted")
            await sub.wait_for(lambda _: len(sub.detections("open")) >= 5, 30, "5 delivered")
            assert sorted({d["frame"] for d in sub.detections("open")}) == list(range(5))
            assert sub.detections("blocked") == []
            # The subscriber can see the last message before the publisher has its PUBACK:
            # wait for the acknowledgements, then nothing may be left waiting.
            await until(
                lambda: pub.stats()["published"] == 5 and pub.stats()["outbox_depth"] == 0,
                30,
                "5 acknowledged, nothing left in the outbox",
            )

    try:
        asyncio.run(main())
    finally:
        broker.stop()


def test_an_idle_connection_does_not_spin_after_mixed_writes(
    broker: Broker, tmp_path: Path
) -> None:
    """Retained state (paho's own publish, whose socket writer aiomqtt registers a loop iteration
    later) and detections (written by the sender at once) in the same iteration: once everything
    is acknowledged, the event loop must go quiet, not keep a writable callback firing."""

    async def main() -> None:
        async with running(Publisher(*configs(broker.url), tmp_path / "state")) as pub:
            await until(lambda: pub.connected, 10, "connected")
            for i in range(200):
                pub.set_state("health", {"n": i})
                for _ in range(i % 4):  # the state publish is a few loop iterations away
                    await asyncio.sleep(0)
                pub.publish_detections("cam1", result("cam1", i))
                await asyncio.sleep(0.002)
            await until(lambda: pub.stats()["published"] == 200, 10, "all acknowledged")
            before = time.thread_time()
            await asyncio.sleep(1.0)
            busy = time.thread_time() - before
            # A spinning loop burns the whole second; an idle one a few milliseconds.
            assert busy < 0.3, f"the event loop used {busy:.2f} s of CPU in 1 s of idling"

    asyncio.run(main())
