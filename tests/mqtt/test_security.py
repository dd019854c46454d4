"""TLS (server verification, client certificates) and password authentication, with mosquitto.

Certificates come from `trustme` at test time; the password file from `mosquitto_passwd -c -b`.
A wrong password or an untrusted certificate must be a clear error, retried, never a crash.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from edged.mqtt import Publisher
from tests.mqtt.support import configs, result, running, subscribed, until
from tests.support.broker import Broker

USER = "edged"
PASSWORD = "s3cret-Pa55word"


@dataclass
class Pki:
    ca: Path
    client_cert: Path
    client_key: Path
    ctx: ssl.SSLContext  # for the test's own subscriber


def make_pki(tmp: Path) -> tuple[Pki, list[str]]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("edged-client")
    paths = {n: tmp / f"{n}.pem" for n in ("ca", "server", "client-cert", "client-key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.private_key_and_cert_chain_pem.write_to_path(paths["server"])
    client.cert_chain_pems[0].write_to_path(paths["client-cert"])
    client.private_key_pem.write_to_path(paths["client-key"])
    ctx = ssl.create_default_context(cafile=str(paths["ca"]))
    ctx.load_cert_chain(paths["client-cert"], paths["client-key"])
    broker_conf = [
        f"cafile {paths['ca']}",
        f"certfile {paths['server']}",
        f"keyfile {paths['server']}",
        "require_certificate true",
    ]
    return Pki(paths["ca"], paths["client-cert"], paths["client-key"], ctx), broker_conf


def make_passwords(tmp: Path, password: str = PASSWORD) -> tuple[Path, list[str]]:
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp / "broker-passwords"
    subprocess.run([passwd, "-c", "-b", str(pwfile), USER, password], check=True)
    return pwfile, [f"password_file {pwfile}"]


def tls_url(broker: Broker) -> str:
    return f"mqtts://127.0.0.1:{broker.port}"


def test_tls_client_certificate_and_password_file(tmp_path: Path) -> None:
    pki, tls_conf = make_pki(tmp_path)
    _, pw_conf = make_passwords(tmp_path)
    broker = Broker(tmp_path, extra_conf=tls_conf + pw_conf, anonymous=False)
    broker.start()
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")  # an editor's trailing newline is not part of it
    tls = {
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
    }
    cfg = configs(tls_url(broker), username=USER, password_file=str(secret), tls=tls)

    async def main() -> None:
        sub_kw = {"tls_context": pki.ctx, "username": USER, "password": PASSWORD}
        async with (
            subscribed(broker.port, client_kwargs=sub_kw) as sub,
            running(Publisher(*cfg, tmp_path / "state")) as pub,
        ):
            await until(lambda: pub.connected, 10, "TLS connect")
            pub.publish_detections("cam1", result("cam1", 0))
            await sub.wait_for(lambda _: len(sub.detections()) == 1, 10, "a detection over TLS")

    try:
        asyncio.run(main())
    finally:
        broker.stop()


def test_password_from_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pw_conf = make_passwords(tmp_path)
    broker = Broker(tmp_path, extra_conf=pw_conf, anonymous=False)
    broker.start()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text(PASSWORD)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = configs(broker.url, username=USER, password_credential="mqtt-password")

    async def main() -> None:
        async with running(Publisher(*cfg, tmp_path / "state")) as pub:
            await until(lambda: pub.connected, 10, "connect with a systemd credential")

    try:
        asyncio.run(main())
    finally:
        broker.stop()


def test_wrong_password_is_reported_and_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pw_conf = make_passwords(tmp_path)
    broker = Broker(tmp_path, extra_conf=pw_conf, anonymous=False)
    broker.start()
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    right = tmp_path / "right"
    right.write_text(PASSWORD)

    async def main() -> None:
        mqtt, node, ha = configs(broker.url, username=USER, password_file=str(wrong))
        async with running(Publisher(mqtt, node, ha, tmp_path / "state")) as pub:
            pub.publish_detections("cam1", result("cam1", 0))
            await until(lambda: pub.stats()["connect_failures"] >= 2, 10, "two refused attempts")
            stats = pub.stats()
            assert "credentials" in stats["last_error"], stats["last_error"]
            assert pub.alive() and not pub.connected
            # Fixed on reload: the new settings connect, and the queued message goes out.
            right_cfg = configs(broker.url, username=USER, password_file=str(right))
            await pub.reconfigure(*right_cfg)
            await until(lambda: pub.connected, 10, "connect after the fix")
            await until(lambda: pub.stats()["published"] == 1, 10, "queued message delivered")

    try:
        asyncio.run(main())
    finally:
        broker.stop()
    out = capsys.readouterr()
    assert "mqtt_connect_failed" in out.out + out.err
    assert "not-the-password" not in out.out + out.err
    assert PASSWORD not in out.out + out.err


def test_untrusted_server_certificate_is_reported_and_retried(tmp_path: Path) -> None:
    _, tls_conf = make_pki(tmp_path)
    other_ca = trustme.CA()
    other = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(other)
    conf = [line for line in tls_conf if not line.startswith("require_certificate")]
    broker = Broker(tmp_path, extra_conf=conf)
    broker.start()

    async def main() -> None:
        async with running(
            Publisher(*configs(tls_url(broker), tls={"ca_file": str(other)}), tmp_path / "st")
        ) as pub:
            await until(lambda: pub.stats()["connect_failures"] >= 2, 10, "two TLS failures")
            assert "TLS" in pub.stats()["last_error"], pub.stats()["last_error"]
            assert pub.alive()

    try:
        asyncio.run(main())
    finally:
        broker.stop()
