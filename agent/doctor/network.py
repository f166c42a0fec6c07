"""Network checks: the MQTT broker, InfluxDB, and their TLS certificates.

Theory of operation
-------------------

Each check does what the agent will do, once, with the configured credentials and a
timeout, and says what the server answered:

- MQTT: a TCP (or TLS) connection and an MQTT 3.1.1 CONNECT; the CONNACK's code says
  whether the user name and password are right (``Bad user name or password``,
  ``Not authorized``) or the broker refused for another reason.
- InfluxDB: ``GET /ping`` (is it there, which version), then a request that needs the
  credentials: for the v1 API an InfluxQL ``SHOW MEASUREMENTS`` on the database and a
  ``POST /write`` with no points (InfluxDB checks the database and the write
  permission and writes nothing); for the v2 API a look-up of the bucket.
- TLS: a handshake with the client's context (``agent.tls``); the server's certificate
  must verify, and its days to expiry are shown (a warning within ``EXPIRY_WARN_DAYS``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from coffee_telemetry.agent.config import InfluxConfig, MqttConfig, TlsConfig
from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.tls import client_context

__all__ = ["EXPIRY_WARN_DAYS", "check_influx", "check_mqtt", "check_tls_server", "error_text"]

#: A server certificate that expires within this many days is a warning.
EXPIRY_WARN_DAYS = 30
#: CONNACK codes (MQTT 5 numbering, as paho reports 3.1.1's too) that mean credentials.
CREDENTIAL_CODES = frozenset({134, 135})


def check_tls_server(
    subject: str,
    host: str,
    port: int,
    tls: TlsConfig,
    *,
    timeout_s: float = 5.0,
    now: Callable[[], float] = time.time,
) -> Result:
    """The server at ``host:port`` shows a certificate ``tls`` trusts; its days to expiry."""
    values: dict[str, object] = {"server": f"{host}:{port}"}
    try:
        ctx = client_context(tls)
    except (OSError, ssl.SSLError) as exc:
        values["error"] = str(exc)
        return Result("tls.files", subject, Status.FAIL, "tls_files", "fix_tls_files", values)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as conn,
        ):
            cert = conn.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        values["error"] = exc.verify_message or str(exc)
        return Result("tls.cert", subject, Status.FAIL, "tls_invalid", "fix_tls_invalid", values)
    except (OSError, ssl.SSLError) as exc:
        values["error"] = str(exc)
        return Result(
            "tls.cert", subject, Status.FAIL, "tls_handshake", "fix_tls_handshake", values
        )
    if tls.insecure or not cert or "notAfter" not in cert:
        return Result("tls.cert", subject, Status.WARN, "tls_unchecked", "fix_tls_insecure", values)
    not_after = ssl.cert_time_to_seconds(str(cert["notAfter"]))
    days = int((not_after - now()) // 86400)
    values["days"] = days
    values["expires"] = time.strftime("%Y-%m-%d", time.gmtime(not_after))
    if days < EXPIRY_WARN_DAYS:
        return Result("tls.cert", subject, Status.WARN, "tls_expiring", "fix_tls_renew", values)
    return Result("tls.cert", subject, Status.OK, "tls_ok", None, values)


def check_mqtt(mqtt: MqttConfig, password: str | None, *, timeout_s: float = 5.0) -> list[Result]:
    """The broker accepts a CONNECT with the configured credentials (and TLS)."""
    results: list[Result] = []
    server = f"{mqtt.host}:{mqtt.port}"
    if mqtt.tls is not None:
        results.append(
            check_tls_server("mqtt", mqtt.host, mqtt.port, mqtt.tls, timeout_s=timeout_s)
        )
        if results[-1].failed:
            return results
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"coffee-doctor-{uuid.uuid4().hex[:8]}",
        protocol=paho.MQTTv311,
    )
    if mqtt.username is not None:
        client.username_pw_set(mqtt.username, password)
    if mqtt.tls is not None:
        client.tls_set_context(client_context(mqtt.tls))
        if mqtt.tls.insecure:
            client.tls_insecure_set(True)
    client.connect_timeout = timeout_s
    answer: list[ReasonCode] = []

    def on_connect(
        _client: paho.Client, _data: object, _flags: object, code: ReasonCode, _p: object
    ) -> None:
        answer.append(code)

    client.on_connect = on_connect
    values: dict[str, object] = {"server": server, "user": mqtt.username or "-"}
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=10)
        deadline = time.monotonic() + timeout_s
        while not answer and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != paho.MQTT_ERR_SUCCESS:
                break
    except (OSError, ssl.SSLError, ValueError) as exc:
        values["error"] = str(exc) or type(exc).__name__
        results.append(
            Result("mqtt.connect", "mqtt", Status.FAIL, "mqtt_unreachable", "fix_mqtt_down", values)
        )
        return results
    finally:
        with contextlib.suppress(OSError, ssl.SSLError):
            client.disconnect()
    if not answer:
        results.append(
            Result("mqtt.connect", "mqtt", Status.FAIL, "mqtt_no_connack", "fix_mqtt_down", values)
        )
        return results
    code = answer[0]
    values |= {"code": code.value, "reason": str(code)}
    if not code.is_failure:
        results.append(Result("mqtt.connect", "mqtt", Status.OK, "mqtt_ok", None, values))
    elif code.value in CREDENTIAL_CODES:
        results.append(
            Result(
                "mqtt.connect", "mqtt", Status.FAIL, "mqtt_refused", "fix_mqtt_credentials", values
            )
        )
    else:
        results.append(
            Result("mqtt.connect", "mqtt", Status.FAIL, "mqtt_refused", "fix_mqtt_refused", values)
        )
    return results


def _request(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    ctx: ssl.SSLContext | None,
    timeout_s: float,
) -> tuple[int, Mapping[str, str], bytes]:
    # (status, headers, body); HTTP errors are answers too, not exceptions.
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=ctx) as answer:
            return answer.status, dict(answer.headers), answer.read(65536)
    except urllib.error.HTTPError as exc:
        body = exc.read(65536) if exc.fp is not None else b""
        return exc.code, dict(exc.headers or {}), body


def error_text(body: bytes) -> str:
    """The ``error`` (or ``message``) of an InfluxDB answer, v1's inside ``results[]`` too."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace").strip()
    if not isinstance(doc, dict):
        return ""
    if isinstance(doc.get("error"), str):
        return str(doc["error"])
    if isinstance(doc.get("message"), str):
        return str(doc["message"])
    results = doc.get("results")
    for result in results if isinstance(results, list) else []:
        if isinstance(result, dict) and isinstance(result.get("error"), str):
            return str(result["error"])
    return ""


def check_influx(
    influx: InfluxConfig,
    *,
    password: str | None,
    token: str | None,
    timeout_s: float = 5.0,
) -> list[Result]:
    """InfluxDB answers ``/ping`` and accepts the configured credentials."""
    results: list[Result] = []
    parsed = urllib.parse.urlsplit(influx.url)
    host = parsed.hostname or "127.0.0.1"
    https = parsed.scheme == "https"
    port = parsed.port or (443 if https else 80)
    ctx: ssl.SSLContext | None = None
    if https:
        tls = influx.tls or TlsConfig()
        results.append(check_tls_server("influx", host, port, tls, timeout_s=timeout_s))
        if results[-1].failed:
            return results
        ctx = client_context(tls)
    base = influx.url
    values: dict[str, object] = {"server": f"{host}:{port}", "api": influx.api}
    try:
        status, headers, _ = _request(f"{base}/ping", ctx=ctx, timeout_s=timeout_s)
    except (OSError, ssl.SSLError, ValueError) as exc:
        values["error"] = str(getattr(exc, "reason", exc))
        results.append(
            Result(
                "influx.ping",
                "influx",
                Status.FAIL,
                "influx_unreachable",
                "fix_influx_down",
                values,
            )
        )
        return results
    version = next((v for k, v in headers.items() if k.lower() == "x-influxdb-version"), "?")
    values |= {"status": status, "version": version}
    if status not in (200, 204):
        results.append(
            Result(
                "influx.ping",
                "influx",
                Status.FAIL,
                "influx_ping_status",
                "fix_influx_down",
                values,
            )
        )
        return results
    results.append(Result("influx.ping", "influx", Status.OK, "influx_ping_ok", None, values))
    auth: dict[str, str] = {}
    if influx.api == "v2":
        auth["Authorization"] = f"Token {token or ''}"
        query = urllib.parse.urlencode({"name": influx.bucket or "", "org": influx.org or ""})
        checks = [("GET", f"{base}/api/v2/buckets?{query}")]
        target = influx.bucket or ""
    else:
        if influx.username is not None:
            pair = f"{influx.username}:{password or ''}".encode()
            auth["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        db = {"db": influx.database}
        if influx.retention_policy:
            db["rp"] = influx.retention_policy
        show = urllib.parse.urlencode({**db, "q": "SHOW MEASUREMENTS LIMIT 1"})
        checks = [
            ("GET", f"{base}/query?{show}"),
            ("POST", f"{base}/write?{urllib.parse.urlencode(db)}"),
        ]
        target = influx.database
    values["target"] = target
    for method, url in checks:
        try:
            status, _, body = _request(
                url, method=method, headers=auth, ctx=ctx, timeout_s=timeout_s
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            values["error"] = str(getattr(exc, "reason", exc))
            results.append(
                Result(
                    "influx.auth",
                    "influx",
                    Status.FAIL,
                    "influx_unreachable",
                    "fix_influx_down",
                    values,
                )
            )
            return results
        error = error_text(body) if status >= 300 or method == "GET" else ""
        values |= {"status": status, "error": error or "-", "method": method}
        if status in (401, 403):
            results.append(
                Result(
                    "influx.auth",
                    "influx",
                    Status.FAIL,
                    "influx_denied",
                    "fix_influx_credentials",
                    values,
                )
            )
            return results
        missing = "not found" in error or (
            influx.api == "v2" and status == 200 and b'"buckets":[]' in body.replace(b" ", b"")
        )
        if missing or status == 404:
            results.append(
                Result(
                    "influx.auth",
                    "influx",
                    Status.FAIL,
                    "influx_missing",
                    "fix_influx_missing",
                    values,
                )
            )
            return results
        if status >= 300 or error:
            results.append(
                Result(
                    "influx.auth", "influx", Status.FAIL, "influx_error", "fix_influx_down", values
                )
            )
            return results
    results.append(Result("influx.auth", "influx", Status.OK, "influx_auth_ok", None, values))
    return results
