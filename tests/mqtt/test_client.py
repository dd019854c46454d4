"""One owned connection (`edged.mqtt.client.Connection`) against a real mosquitto: its states, its
futures, and what each way of ending says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edged.mqtt.client import REFUSED, ConnectFailed, Connection, ConnectionLost, Settings, State
from tests.support.broker import Broker


def settings(port: int, *, v5: bool = True) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=port,
        client_id="edged-test-client",
        v5=v5,
        keepalive=10,
        will_topic="edged/test/status",
        will_payload=b"offline",
        connect_timeout=5.0,
    )


@pytest.mark.parametrize("v5", [True, False], ids=["v5", "v3.1.1"])
def test_open_publish_close(broker: Broker, v5: bool) -> None:
    async def main() -> None:
        conn = Connection(settings(broker.port, v5=v5))
        assert conn.state is State.CONNECTING
        await conn.open()
        assert conn.state is State.CONNECTED and not conn.closed.done()
        acked: list[tuple[int, int]] = []
        mids = [
            conn.publish("edged/test/x", b"%d" % i, False, lambda m, r: acked.append((m, r)))
            for i in range(100)
        ]
        # v5 brokers may add a success code (16: no matching subscribers); >= 0x80 refuses.
        assert await conn.publish_acked("edged/test/state", b"s", True, 5.0) < REFUSED
        # PUBACKs come back in order on one connection; the retained one came after them all.
        assert [m for m, _ in acked] == mids
        assert all(r < REFUSED for _, r in acked)
        await conn.close(5.0)
        assert conn.state is State.CLOSED
        assert conn.closed.result() == "disconnected"
        with pytest.raises(ConnectionLost):
            conn.publish("edged/test/x", b"late", False, lambda m, r: None)

    asyncio.run(main())


def test_a_lost_connection_resolves_closed(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()

    async def main() -> None:
        conn = Connection(settings(broker.port))
        await conn.open()
        broker.stop()
        why = await asyncio.wait_for(asyncio.shield(conn.closed), 10)
        assert "lost" in why
        assert conn.state is State.CLOSED

    try:
        asyncio.run(main())
    finally:
        broker.stop()


def test_nothing_listening_is_a_connect_failure(tmp_path: Path) -> None:
    dead = Broker(tmp_path)  # never started

    async def main() -> None:
        conn = Connection(settings(dead.port))
        with pytest.raises(ConnectFailed, match="refused"):
            await conn.open()
        assert conn.state is State.CLOSED and conn.closed.done()

    asyncio.run(main())
