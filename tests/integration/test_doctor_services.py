"""``doctor``'s network checks against a real Mosquitto and a real influxd.

Each failure is provoked for real: a broker with a password file and a wrong
password, a stopped broker, a TLS listener whose certificate expires in ten days
(made with ``trustme``) or is signed by another CA, an influxd up, without the
database, and stopped.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from coffee_telemetry.agent.config import InfluxConfig, MqttConfig, TlsConfig
from coffee_telemetry.agent.doctor.network import check_influx, check_mqtt, check_tls_server
from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.doctor.texts import render
from tests.integration.test_broker_acl import write_password_file
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration


def brief(results: list[Result]) -> list[tuple[str, Status, str]]:
    return [(r.check, r.status, r.message) for r in results]


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[tuple[MosquittoServer, str]]:
    """A private broker that lets in only ``agent`` with a random password."""
    password = secrets.token_urlsafe(12)
    passwd = tmp_path / "passwd"
    write_password_file(passwd, {"agent": password})
    server = MosquittoServer(
        tmp_path / "broker",
        extra_conf=f"allow_anonymous false\npassword_file {passwd}",
    )
    server.start()
    try:
        yield server, password
    finally:
        server.stop()


def test_right_and_wrong_password(password_broker: tuple[MosquittoServer, str]) -> None:
    server, password = password_broker
    mqtt = MqttConfig(host=server.host, port=server.port, username="agent")
    assert brief(check_mqtt(mqtt, password, timeout_s=5)) == [
        ("mqtt.connect", Status.OK, "mqtt_ok")
    ]
    [wrong] = check_mqtt(mqtt, "not-the-password", timeout_s=5)
    assert (wrong.status, wrong.message, wrong.fix) == (
        Status.FAIL,
        "mqtt_refused",
        "fix_mqtt_credentials",
    )
    # Mosquitto answers a wrong password with CONNACK 5 "not authorised" (paho: 135).
    assert wrong.values["code"] == 135
    assert "senha" in render(wrong, "pt-BR")


def test_broker_down(tmp_path: Path) -> None:
    server = MosquittoServer(tmp_path / "broker")
    server.start()
    server.stop()  # its port is now closed
    [down] = check_mqtt(MqttConfig(host=server.host, port=server.port), None, timeout_s=2)
    assert (down.status, down.message, down.fix) == (
        Status.FAIL,
        "mqtt_unreachable",
        "fix_mqtt_down",
    )


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_broker(workdir: Path, ca: trustme.CA, *, days: int) -> MosquittoServer:
    """A broker whose only listener speaks TLS with a certificate valid ``days`` more."""
    workdir.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    leaf = ca.issue_cert(
        "127.0.0.1", not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=days)
    )
    cert, key, ca_file = workdir / "cert.pem", workdir / "key.pem", workdir / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    server = MosquittoServer(
        workdir, extra_conf=f"cafile {ca_file}\ncertfile {cert}\nkeyfile {key}"
    )
    server.start()
    return server


def test_a_certificate_near_expiry_warns_with_its_days(tmp_path: Path, ca: trustme.CA) -> None:
    server = tls_broker(tmp_path / "broker", ca, days=10)
    try:
        tls = TlsConfig(ca_file=tmp_path / "broker" / "ca.pem")
        mqtt = MqttConfig(host=server.host, port=server.port, tls=tls)
        results = check_mqtt(mqtt, None, timeout_s=5)
    finally:
        server.stop()
    assert brief(results) == [
        ("tls.cert", Status.WARN, "tls_expiring"),
        ("mqtt.connect", Status.OK, "mqtt_ok"),
    ]
    assert results[0].values["days"] in (9, 10)
    assert results[0].fix == "fix_tls_renew"


def test_a_long_lived_certificate_passes_and_another_ca_fails(
    tmp_path: Path, ca: trustme.CA
) -> None:
    server = tls_broker(tmp_path / "broker", ca, days=400)
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    try:
        good = check_tls_server(
            "mqtt", server.host, server.port, TlsConfig(ca_file=tmp_path / "broker" / "ca.pem")
        )
        bad = check_tls_server("mqtt", server.host, server.port, TlsConfig(ca_file=other))
    finally:
        server.stop()
    assert (good.status, good.message) == (Status.OK, "tls_ok")
    assert int(str(good.values["days"])) >= 398
    assert (bad.status, bad.message) == (Status.FAIL, "tls_invalid")
    assert "certificate" in str(bad.values["error"])


def test_influx_up_with_and_without_the_database(influxd: InfluxServer, influx_db: str) -> None:
    up = check_influx(
        InfluxConfig(enabled=True, url=influxd.url, database=influx_db), password=None, token=None
    )
    assert brief(up) == [
        ("influx.ping", Status.OK, "influx_ping_ok"),
        ("influx.auth", Status.OK, "influx_auth_ok"),
    ]
    assert str(up[0].values["version"]).startswith("1.")
    assert influxd.query(influx_db, "SHOW MEASUREMENTS") == []  # the write check wrote nothing
    missing = check_influx(
        InfluxConfig(enabled=True, url=influxd.url, database="nao_existe"),
        password=None,
        token=None,
    )
    assert brief(missing)[-1] == ("influx.auth", Status.FAIL, "influx_missing")
    assert missing[-1].fix == "fix_influx_missing"


def test_influx_down(influxd_factory: Callable[[], InfluxServer]) -> None:
    server = influxd_factory()
    server.stop()
    [down] = check_influx(
        InfluxConfig(enabled=True, url=server.url), password=None, token=None, timeout_s=2
    )
    assert (down.status, down.message, down.fix) == (
        Status.FAIL,
        "influx_unreachable",
        "fix_influx_down",
    )
