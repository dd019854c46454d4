"""One MQTT connection, owned: paho-mqtt's public API driven by the supervisor's event loop.

Runs in the supervisor process, on its event loop. A `Connection` lives for one network
connection: made by `open()`, ended by the broker, the network, `close()` or `abort()`; the
publisher makes a fresh one for every attempt, so paho's own resend state always starts empty and
the outbox stays the one place that decides what is sent again. On a crash of the supervisor the
socket dies with the process and the broker publishes the last will.

How the loop drives paho (paho's documented "external event loop" API, nothing private):
- paho's `connect()` resolves the name, opens the TCP connection, does the TLS handshake and
  writes CONNECT: all blocking, so it runs on a worker thread (`asyncio.to_thread`). No paho
  callback is set that could run on that thread; the loop only touches the socket once the
  thread is done.
- then the loop watches `socket()` for reading (`loop_read()`, which also runs our callbacks for
  CONNACK, PUBACK, SUBACK, PUBLISH and the disconnect) and, only while `want_write()` says paho
  has bytes queued that the socket did not take, for writing (`loop_write()`). paho writes a
  `publish()` at once when it can, so at 200 messages/s the writer is almost never registered.
- `loop_misc()` once a second keeps the connection alive (PINGREQ) and notices a silent broker.
- paho tells us before it closes the socket (`on_socket_close`), on this thread, so the socket is
  out of the loop's selector before its file descriptor number can be reused.

State is `State` (one value at a time) plus two futures: `open()` returns once CONNACK accepted
the connection (or raises `ConnectFailed`), and `closed` resolves, with the reason in words, when
the connection has ended for whatever cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = structlog.get_logger(__name__)

# The CONNACK reason that says "this broker does not speak this MQTT version": 0x84 in MQTT 5;
# paho reports a 3.1.1 broker's return code 1 (what it answers a v5 CONNECT with) as the same.
UNSUPPORTED_PROTOCOL = 0x84
# A PUBACK reason code at or above this refuses the message (MQTT 5).
REFUSED = 0x80

# Linux's TCP_CORK (see `Connection._cork`); elsewhere every publish is its own segment.
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)

Ack = Callable[[int, int], None]  # (packet id, PUBACK reason code)


class State(enum.Enum):
    CONNECTING = "connecting"  # TCP/TLS/CONNECT under way, no CONNACK yet
    CONNECTED = "connected"  # CONNACK accepted us; publish() works
    CLOSING = "closing"  # DISCONNECT sent by us, the socket about to close
    CLOSED = "closed"  # over (see `Connection.closed` for why); make a new Connection


class ConnectFailed(Exception):
    """The connection could not be made: network, TLS, timeout, or a CONNACK refusing us."""

    def __init__(self, text: str, reason: int | None = None) -> None:
        super().__init__(text)
        self.reason = reason  # the CONNACK reason code when the broker answered

    @property
    def unsupported_protocol(self) -> bool:
        return self.reason == UNSUPPORTED_PROTOCOL


class ConnectionLost(Exception):
    """An established connection ended (the reason in words)."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    client_id: str
    v5: bool
    keepalive: int
    will_topic: str
    will_payload: bytes
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    session_expiry_s: int = 3600
    connect_timeout: float = 10.0
    max_inflight: int = 100


class Connection:
    """One MQTT connection; use from the event loop only (see the module docstring)."""

    def __init__(
        self, settings: Settings, on_message: Callable[[str, bytes], None] | None = None
    ) -> None:
        self.settings = settings
        self.state = State.CONNECTING
        self._loop = asyncio.get_running_loop()
        self._on_message_cb = on_message
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._acks: dict[int, Ack] = {}
        self._subacks: dict[int, asyncio.Future[None]] = {}
        self._sock: Any = None
        self._writing = False
        self._corked = False
        self._tick: asyncio.TimerHandle | None = None

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=paho.MQTTv5 if settings.v5 else paho.MQTTv311,
            clean_session=None if settings.v5 else True,
            # A refused CONNECT is reported to us, not retried by paho (its retry would
            # reconnect, blocking, from inside our read callback).
            reconnect_on_failure=False,
        )
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            client.tls_set_context(settings.tls)
        client.will_set(settings.will_topic, settings.will_payload, qos=1, retain=True)
        # Our sender keeps its own window below this; paho queues (in order) beyond it.
        client.max_inflight_messages_set(settings.max_inflight)
        client.connect_timeout = settings.connect_timeout
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._paho = client

    @property
    def v5(self) -> bool:
        return self.settings.v5

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect; returns once the broker accepted us, else raises `ConnectFailed`."""
        s = self.settings
        props = None
        if s.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
        connecting = self._loop.run_in_executor(
            None, lambda: self._paho.connect(s.host, s.port, s.keepalive, properties=props)
        )
        try:
            await connecting
        except asyncio.CancelledError:
            # The thread goes on; whatever socket it opens is closed when it is done.
            connecting.add_done_callback(lambda _: self._close_socket())
            self._set_closed("cancelled")
            raise
        except (OSError, ValueError) as exc:
            self._set_closed(str(exc))
            raise ConnectFailed(_connect_error(exc)) from None
        self._sock = self._paho.socket()
        if self._sock is None:
            self._set_closed("no socket")
            raise ConnectFailed("the connection closed while connecting")
        self._paho.on_socket_close = self._on_socket_close
        # paho leaves Nagle on: a small PUBLISH behind unacknowledged data would wait for the
        # broker's delayed ACK (up to 40 ms). Coalescing is the cork's job (`_cork`), per loop
        # iteration, so nothing waits longer than that.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(self._sock, self._readable)
        self._sync_writer()
        self._tick = self._loop.call_later(1.0, self._misc)
        try:
            await asyncio.wait_for(asyncio.shield(self._connack), s.connect_timeout)
        except TimeoutError:
            self.abort("no CONNACK")
            raise ConnectFailed(f"no CONNACK within {s.connect_timeout:g} s") from None
        except BaseException:
            self.abort("connect failed")
            raise

    async def close(self, timeout: float) -> None:
        """An orderly end: DISCONNECT (so the broker does not publish the will), then close."""
        if self.state is State.CONNECTED:
            self.state = State.CLOSING
            self._paho.disconnect()
            self._sync_writer()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        self.abort("closed")

    def abort(self, why: str) -> None:
        """End the connection now, without DISCONNECT (the broker publishes the last will)."""
        self._close_socket()
        self._set_closed(why)

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool, on_ack: Ack) -> int:
        """Queue one QoS 1 PUBLISH (written at once when the socket takes it); `on_ack(mid,
        reason)` runs when its PUBACK arrives. Raises `ConnectionLost` when not connected."""
        if self.state is not State.CONNECTED:
            raise ConnectionLost(f"not connected ({self.state.value})")
        if not self._corked:
            self._cork()
        info = self._paho.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionLost(paho.error_string(info.rc))
        self._acks[info.mid] = on_ack
        if not self._writing:
            self._sync_writer()
        return info.mid

    async def publish_acked(self, topic: str, payload: bytes, retain: bool, timeout: float) -> int:
        """Publish and wait for the PUBACK; returns its reason code (>= 0x80: refused)."""
        done: asyncio.Future[int] = self._loop.create_future()

        def acked(_mid: int, reason: int) -> None:
            if not done.done():
                done.set_result(reason)

        self.publish(topic, payload, retain, acked)
        reason: int = await self._wait(done, timeout, f"no PUBACK within {timeout:g} s")
        return reason

    async def subscribe(self, topic: str, timeout: float) -> None:
        if self.state is not State.CONNECTED:
            raise ConnectionLost(f"not connected ({self.state.value})")
        rc, mid = self._paho.subscribe(topic, qos=1)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionLost(paho.error_string(rc))
        done: asyncio.Future[None] = self._loop.create_future()
        self._subacks[mid] = done
        self._sync_writer()
        await self._wait(done, timeout, f"no SUBACK within {timeout:g} s")

    async def _wait(self, fut: asyncio.Future[Any], timeout: float, why: str) -> Any:
        waiting = asyncio.ensure_future(asyncio.wait_for(asyncio.shield(fut), timeout))
        try:
            await asyncio.wait([waiting, self.closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiting.done():
                waiting.cancel()  # the connection ended, or our caller was cancelled
        if not waiting.done() or waiting.cancelled():
            raise ConnectionLost(self.closed.result() if self.closed.done() else "cancelled")
        try:
            return waiting.result()
        except TimeoutError:
            raise ConnectionLost(why) from None

    # --- the loop's side of paho --------------------------------------------------------------

    def _readable(self) -> None:
        sock = self._sock
        self._paho.loop_read()
        # TLS: decrypted bytes can wait inside the SSL object with nothing left on the socket,
        # and then the selector would not wake us for them.
        while self._sock is sock and isinstance(sock, ssl.SSLSocket) and sock.pending():
            if self._paho.loop_read() != paho.MQTT_ERR_SUCCESS:
                break
        self._sync_writer()

    def _writable(self) -> None:
        self._paho.loop_write()
        self._sync_writer()

    def _sync_writer(self) -> None:
        """Watch the socket for writing exactly while paho has bytes the socket did not take."""
        want = self._sock is not None and self._paho.want_write()
        if want == self._writing:
            return
        if want:
            self._loop.add_writer(self._sock, self._writable)
        else:
            self._loop.remove_writer(self._sock)
        self._writing = want

    def _misc(self) -> None:
        self._tick = None
        if self._sock is None:
            return
        self._paho.loop_misc()  # a PINGREQ due, or no PINGRESP in time (then it closes)
        self._sync_writer()
        if self._sock is not None:
            self._tick = self._loop.call_later(1.0, self._misc)

    def _cork(self) -> None:
        """Hold back partial TCP segments until the end of this loop iteration: paho writes
        each PUBLISH with its own send(), and without the cork each one would be a segment of
        its own (a transmission, a wake-up of the broker, a PUBACK segment back). Corked, what
        the loop publishes in one iteration leaves as one segment, and comes back as one."""
        if _TCP_CORK is None or self._sock is None:
            return
        self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
        self._corked = True
        self._loop.call_soon(self._uncork)

    def _uncork(self) -> None:
        self._corked = False
        if self._sock is not None:
            self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)

    def _close_socket(self) -> None:
        sock = self._sock or self._paho.socket()
        if sock is not None:
            self._forget_socket(sock)
            sock.close()

    def _forget_socket(self, sock: Any) -> None:
        if self._sock is sock:
            self._loop.remove_reader(sock)
            if self._writing:
                self._loop.remove_writer(sock)
            self._writing = False
            self._sock = None
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    def _set_closed(self, why: str) -> None:
        self.state = State.CLOSED
        if not self._connack.done():
            self._connack.set_exception(ConnectFailed(why))
            self._connack.exception()  # retrieved: `open()` may already have given up on it
        if not self.closed.done():
            self.closed.set_result(why)
        self._acks.clear()
        for fut in self._subacks.values():
            fut.cancel()
        self._subacks.clear()

    # --- paho callbacks (run inside loop_read / loop_write / loop_misc, on the loop) ----------

    def _on_socket_close(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._forget_socket(sock)

    def _on_connect(
        self, _c: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(ConnectFailed(str(reason), reason.value))
            self._connack.exception()
            return
        self.state = State.CONNECTED
        self._connack.set_result(None)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self.state is State.CLOSING:
            why = "disconnected"
        elif self.state is State.CONNECTING:
            why = "the broker closed the connection before accepting it"
        else:
            why = f"the connection was lost ({reason})"
        self._set_closed(why)

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        ack = self._acks.pop(mid, None)
        if ack is not None:
            ack(mid, reason.value)

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        fut = self._subacks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        if self._on_message_cb is not None:
            self._on_message_cb(message.topic, bytes(message.payload))



def _connect_error(exc: BaseException) -> str:
    # The exception's own words; `connection.describe` turns them into advice.
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
