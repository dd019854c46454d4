"""SIGKILL the publisher's process while the broker is down; restart both: nothing is lost.

The publisher runs in a child process (`tests.mqtt.driver`) so it can really be SIGKILLed: no
`finally`, no flush, no DISCONNECT; what survives is what the outbox had written to disk.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO
from tests.mqtt.support import persistent_broker, subscribed
from tests.support.broker import Broker

STREAMS = ["cam1", "cam2"]


class Driver:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, broker: Broker, state_dir: Path) -> Driver:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.mqtt.driver",
            broker.url,
            str(state_dir),
            *STREAMS,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        driver = cls(proc)
        assert (await driver._answer())["ready"]
        return driver

    async def _answer(self) -> Any:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        assert line, "driver exited"
        return json.loads(line)

    async def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._answer()

    async def stats_until(self, pred: Any, timeout: float, what: str) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                stats: dict[str, Any] = await self.ask("stats")
                if pred(stats):
                    return stats
                await asyncio.sleep(0.02)

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


def test_sigkill_during_outage_then_restart_delivers_outbox(tmp_path: Path) -> None:
    broker = persistent_broker(tmp_path)
    broker.start()
    state = tmp_path / "state"

    async def main() -> None:
        async with subscribed(broker.port) as sub:
            first = await Driver.start(broker, state)
            await first.stats_until(lambda s: s["connected"], 10, "connected")
            await first.ask("produce 50")
            await sub.wait_for(lambda _: len(sub.detections()) == 100, 10, "first 100")

            broker.stop()
            await first.stats_until(lambda s: not s["connected"], 10, "disconnected")
            await first.ask("produce 300")
            # Everything unacknowledged is on disk (within a loop iteration): now SIGKILL.
            await first.stats_until(
                lambda s: s["outbox_disk"] == 600 and s["outbox_memory"] == 0, 10, "on disk"
            )
            await first.kill()

            broker.start()
            second = await Driver.start(broker, state)
            await second.stats_until(lambda s: s["connected"], 30, "reconnected")
            await second.ask("produce 10")
            await sub.wait_for(
                lambda _: len({d["id"] for d in sub.detections()}) >= 720, 30, "all 720"
            )
            for stream in STREAMS:
                docs = {d["id"]: d for d in sub.detections(stream)}.values()
                seqs = [d["seq"] for d in docs]
                frames = [d["frame"] for d in docs]
                # The first run's 350 per stream, without a gap, then the second run's 10, later.
                assert seqs[:350] == list(range(1, 351)), stream
                assert frames[:350] == list(range(350)), stream
                assert len(seqs) == 360 and seqs[350] > 350
                assert seqs == sorted(seqs)
            stats = await second.ask("stats")
            assert stats["dropped"] == 0

            # A SIGKILL with the broker up: the broker publishes our retained last will.
            await second.kill()
            await sub.wait_for(
                lambda _: sub.on("edged/edge/status")[-1].payload == b"offline", 10, "last will"
            )

    try:
        asyncio.run(main())
    finally:
        broker.stop()
