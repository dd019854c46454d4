"""Connection settings: broker address, credentials, TLS, client id, error wording.

Runs in the supervisor process. `read_password` and `tls_context` read files, so the publisher calls
them through `asyncio.to_thread` (never on the event loop). Nothing here holds state across a crash.

The password is read on every connection attempt (a fixed file is cheap to read, and a password file
fixed by the operator is picked up without a restart); it is never logged or put in an error text.
Under systemd, credentials (`LoadCredential=`) are copied when the service starts, so rotating one
needs `systemctl restart`, not reload.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from edged.config.model import MqttConfig, NodeConfig, TlsConfig
from edged.config.validate import CREDENTIALS_IN_URL
from edged.mqtt.client import ConnectFailed, ConnectionLost
from edged.urls import redact_url, split

DEFAULT_PORT = {"mqtt": 1883, "mqtts": 8883}


class SettingsError(Exception):
    """A problem with our own settings (missing password file, unreadable certificate)."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    tls: bool


def parse_url(url: str) -> Address:
    """`mqtt://host[:port]` or `mqtts://host[:port]`. Credentials in the URL are refused (config
    validation says so first, with the key path): the password belongs in a file or a systemd
    credential, never in config.toml, health or a log line."""
    try:
        parts = split(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    scheme = parts.scheme.lower() if parts else ""
    if parts is None or scheme not in DEFAULT_PORT or not parts.hostname:
        raise SettingsError(
            f"mqtt.url: expected mqtt://host[:port] or mqtts://host[:port], got {redact_url(url)}"
        )
    if parts.username is not None or parts.password is not None:
        raise SettingsError(CREDENTIALS_IN_URL)
    return Address(parts.hostname, port or DEFAULT_PORT[scheme], scheme == "mqtts")


def client_id(mqtt: MqttConfig, node: NodeConfig) -> str:
    """Fixed per node, so the broker sees one client across reconnects (and a second daemon with the
    same node name takes the session over rather than silently doubling messages)."""
    return mqtt.client_id or f"edged-{node.name}"


def read_password(mqtt: MqttConfig) -> str | None:
    """From `mqtt.password_file`, or `$CREDENTIALS_DIRECTORY/<mqtt.password_credential>`."""
    if mqtt.password_file:
        path = Path(mqtt.password_file)
        where = "mqtt.password_file"
    elif mqtt.password_credential:
        creds = os.environ.get("CREDENTIALS_DIRECTORY", "")
        if not creds:
            raise SettingsError(
                f"mqtt.password_credential={mqtt.password_credential!r} but "
                "$CREDENTIALS_DIRECTORY is not set (add LoadCredential= to the unit, "
                "or use mqtt.password_file)"
            )
        path = Path(creds) / mqtt.password_credential
        where = "credential"
    else:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read {path}: {exc.strerror}") from None
    # One trailing newline is an editor's, not part of the password.
    return text.removesuffix("\n").removesuffix("\r")


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"mqtt.tls: cannot load certificates: {exc}") from None
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe(exc: BaseException) -> str:
    """A sentence an operator can act on, for logs and health. Never contains the password."""
    text = str(exc)
    if isinstance(exc, SettingsError):
        return text
    if isinstance(exc, ConnectFailed) and exc.reason is not None:
        # paho reports 3.1.1 return codes 4/5 as the MQTT 5 reason codes 134/135.
        if exc.reason in (134, 135):
            return f"broker refused the credentials ({text}): check mqtt.username and the password"
        if exc.unsupported_protocol:
            return f"broker refused the MQTT version ({text}): try mqtt.protocol = \"auto\""
        return f"broker refused the connection ({text})"
    lowered = text.lower()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        return f"TLS handshake failed ({text}): check mqtt.tls.ca_file, cert_file, key_file"
    if "timed out" in lowered:
        return f"no answer from the broker ({text})"
    if isinstance(exc, ConnectFailed | ConnectionLost):
        return text  # already in words (the network's own error included)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
