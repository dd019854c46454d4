"""A Publisher in its own process, driven line by line over stdin, for crash (SIGKILL) tests.

    python -m tests.mqtt.driver <broker-url> <state-dir> [stream ...]

Commands on stdin, one a line; every answer is one JSON line on stdout:
  produce N   publish N detections on every stream (at once)   -> {"produced": {...}}
  stats       Publisher.stats()                                -> {...}
  stop        Publisher.stop() and exit                        -> {"stopped": true}
It prints {"ready": true} when the publisher task runs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import structlog

from edged.mqtt import Publisher
from tests.mqtt.support import configs, result


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(url: str, state_dir: str, streams: list[str]) -> None:
    pub = Publisher(*configs(url), Path(state_dir))
    task = asyncio.create_task(pub.run())
    produced = dict.fromkeys(streams, 0)
    say({"ready": True})
    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).split()
        if not line or line[0] == "stop":
            await pub.stop()
            await task
            say({"stopped": True})
            return
        if line[0] == "produce":
            for _ in range(int(line[1])):
                for s in streams:
                    pub.publish_detections(s, result(s, produced[s]))
                    produced[s] += 1
            say({"produced": produced})
        elif line[0] == "stats":
            say(pub.stats())


if __name__ == "__main__":
    # stdout carries the answers; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:] or ["cam1"]))
