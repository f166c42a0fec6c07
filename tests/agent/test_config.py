"""Config validation: every error names its key; the CLI exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.config import TicketDevice, load_config, parse_config
from coffee_telemetry.agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "site.toml"


def problems(doc: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    return dict(info.value.problems)


def dev(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"id": "umid-1", "driver": "moisture.ticket", "port": "/dev/ttyUSB0"}
    base.update(kw)
    return base


def test_example_site_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COFFEE_MQTT_PASSWORD", "pw")
    monkeypatch.setenv("COFFEE_INFLUX_PASSWORD", "pw")
    monkeypatch.setenv("COFFEE_API_TOKEN", "9c1f0e3b5a7d2c4e6f8091a2b3c4d5e6")
    monkeypatch.setenv("COFFEE_WEBHOOK_AUTH", "Bearer x")
    cfg = load_config(EXAMPLE)
    assert cfg.site.id == "ourofino"
    assert cfg.devices
    assert cfg.mqtt_password is not None
    assert cfg.mqtt_password.get_secret_value() == "pw"


def test_minimal_config_gets_defaults() -> None:
    cfg = parse_config({"site": {"id": "s1"}, "devices": [dev()]})
    d = cfg.devices[0]
    assert isinstance(d, TicketDevice)
    assert d.serial.baudrate == 9600
    assert d.ticket.idle_gap_s == 2.0
    assert cfg.mqtt.prefix == "coffee"
    assert cfg.influx.enabled is False
    assert cfg.outbox_path == Path("/var/lib/coffee-telemetry/outbox.sqlite3")


def test_errors_name_the_key() -> None:
    found = problems(
        {
            "site": {"id": "s1"},
            "devices": [dev(serial={"baudrate": 9601}), dev(id="x", driver="moisture.bogus")],
        }
    )
    assert "devices[0].serial.baudrate" in found
    assert "unknown driver 'moisture.bogus'" in found["devices[1].driver"]


def test_unknown_keys_are_refused() -> None:
    found = problems({"site": {"id": "s1"}, "mqtt": {"hots": "x"}})
    assert found == {"mqtt.hots": "unknown key (check spelling)"}


@pytest.mark.parametrize(
    "bad", ["Our Fino", "a/b", "x+", "#", "../etc", "ção", "", "a" * 49, "agent"]
)
def test_topic_identifiers_are_restricted(bad: str) -> None:
    found = problems({"site": {"id": "s"}, "devices": [dev(id=bad)]})
    assert "devices[0].id" in found


def test_prefix_cannot_hold_wildcards() -> None:
    assert "mqtt.prefix" in problems({"site": {"id": "s"}, "mqtt": {"prefix": "coffee/#"}})


def test_duplicates_refused() -> None:
    found = problems({"site": {"id": "s"}, "devices": [dev(), dev(port="/dev/ttyUSB1")]})
    assert "duplicate device id" in found["devices[1].id"]
    found = problems({"site": {"id": "s"}, "devices": [dev(), dev(id="b")]})
    assert "used twice" in found["devices[1].port"]


def test_missing_secret_env_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VAR_X", raising=False)
    found = problems({"site": {"id": "s"}, "mqtt": {"password_env": "NO_SUCH_VAR_X"}})
    assert found == {"mqtt.password_env": "environment variable NO_SUCH_VAR_X is not set"}


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    cfg = parse_config(
        {
            "site": {"id": "s"},
            "influx": {
                "enabled": True,
                "api": "v2",
                "org": "o",
                "bucket": "b",
                "token_file": str(secret),
            },
        }
    )
    assert cfg.influx_token is not None
    assert cfg.influx_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)


def test_v2_requires_org_bucket_token() -> None:
    found = problems({"site": {"id": "s"}, "influx": {"enabled": True, "api": "v2"}})
    assert "org" in found["influx"]
    assert "token" in found["influx"]


def test_bad_regex_in_ticket_options() -> None:
    found = problems({"site": {"id": "s"}, "devices": [dev(ticket={"end_regex": "(unclosed"})]})
    assert "regular expression" in found["devices[0].ticket.end_regex"]


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[site\nid = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_check_config_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[site]\nid = "s1"\n')
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nid = "s1"\n[mqtt]\nport = 70000\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "mqtt.port" in err
    assert "less than or equal to 65535" in err
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2


def test_console_script_refuses_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nid = "s1"\n[[devices]]\nid = "u"\ndriver = "moisture.ticket"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "coffee_telemetry.agent.cli", "run", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "devices[0].port" in proc.stderr
    assert "Field required" in proc.stderr


def huller(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"id": "descascador-1", "bus": "rs485", "bag_counter": 1}
    base.update(kw)
    return base


BUS = {"id": "rs485", "port": "/dev/ttyUSB9"}


def test_huller_config_defaults() -> None:
    cfg = parse_config(
        {
            "site": {"id": "s"},
            "buses": [BUS],
            "hullers": [huller(hour_meter=2, tasks=[{"id": "facas", "interval_h": 300}])],
        }
    )
    assert cfg.buses[0].serial.stopbits == 2  # Autonics CT factory setting 8N2
    assert cfg.hullers[0].tasks[0].warn_before_h == 10.0
    assert cfg.maintenance_path.name == "maintenance.sqlite3"


def test_huller_config_errors() -> None:
    assert (
        "no [[buses]] entry"
        in problems({"site": {"id": "s"}, "hullers": [huller()]})["hullers[0].bus"]
    )
    found = problems(
        {
            "site": {"id": "s"},
            "buses": [BUS],
            "hullers": [huller(), huller(id="descascador-2", bag_counter=1)],
        }
    )
    assert "already used on bus" in found["hullers[1].bag_counter"]
    found = problems(
        {"site": {"id": "s"}, "buses": [BUS], "hullers": [huller(motor_input="timer.INA")]}
    )
    assert "needs hour_meter" in found["hullers[0]"]
    found = problems(
        {
            "site": {"id": "s"},
            "buses": [BUS],
            "hullers": [huller(tasks=[{"id": "a", "interval_h": 1}, {"id": "a", "interval_h": 2}])],
        }
    )
    assert "unique" in found["hullers[0]"]
    found = problems({"site": {"id": "s"}, "buses": [BUS], "hullers": [huller(bag_counter=300)]})
    assert "hullers[0].bag_counter" in found
    found = problems({"site": {"id": "s"}, "devices": [dev(port="/dev/ttyUSB9")], "buses": [BUS]})
    assert "used twice" in found["buses[0].port"]


# -- secrets, tokens, TLS, the web server behind a proxy -----------------------------

STRONG_TOKEN = "9c1f0e3b5a7d2c4e6f8091a2b3c4d5e6"


@pytest.mark.parametrize("weak", ["change-me", "x", "", "a" * 64, "change-me-change-me-change-me"])
def test_weak_api_tokens_are_refused_naming_the_key(
    weak: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COFFEE_API_TOKEN", weak)
    found = problems({"site": {"id": "s"}, "api": {"token_env": "COFFEE_API_TOKEN"}})
    assert list(found) == ["api.token_env"]
    assert "at least 128 bits" in found["api.token_env"]
    assert "openssl rand -hex 32" in found["api.token_env"]
    if len(weak) > 1:
        assert weak not in found["api.token_env"]
    token_file = tmp_path / "token"
    token_file.write_text(weak + "\n")
    named = {"name": "balanca", "token_file": str(token_file)}
    found = problems({"site": {"id": "s"}, "api": {"tokens": [named]}})
    assert list(found) == ["api.tokens[0].token_file"]


def test_strong_tokens_are_kept_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COFFEE_API_TOKEN", STRONG_TOKEN)
    other = tmp_path / "other"
    other.write_text("Zk3xQ9_vR2mT8pLw4nY6bH1cJ5dF7gS0\n")
    cfg = parse_config(
        {
            "site": {"id": "s"},
            "api": {
                "token_env": "COFFEE_API_TOKEN",
                "tokens": [{"name": "balanca", "token_file": str(other)}],
            },
        }
    )
    assert {k: v.get_secret_value() for k, v in cfg.api_tokens.items()} == {
        "api": STRONG_TOKEN,
        "balanca": "Zk3xQ9_vR2mT8pLw4nY6bH1cJ5dF7gS0",
    }
    assert cfg.secret_files == {"api.tokens[0].token_file": other}
    twice = {"token_env": "COFFEE_API_TOKEN", "tokens": [{"name": "api", "token_env": "X"}]}
    found = problems({"site": {"id": "s"}, "api": twice})
    assert "repeated: api" in found["api"]


def test_secret_files_may_come_from_systemd_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "mqtt-password").write_text("pw\n")
    doc: dict[str, object] = {
        "site": {"id": "s"},
        "mqtt": {"password_file": "$CREDENTIALS_DIRECTORY/mqtt-password"},
    }
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    found = problems(doc)
    assert "LoadCredential=" in found["mqtt.password_file"]
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = parse_config(doc)
    assert cfg.mqtt_password is not None
    assert cfg.mqtt_password.get_secret_value() == "pw"
    assert cfg.secret_files["mqtt.password_file"] == tmp_path / "mqtt-password"
    braces: dict[str, object] = {
        "site": {"id": "s"},
        "mqtt": {"password_file": "${CREDENTIALS_DIRECTORY}/nope"},
    }
    assert "cannot read" in problems(braces)["mqtt.password_file"]


def test_webhook_credentials_come_only_from_env_or_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hook = {"name": "plantao", "url": "https://hooks.example.coop/x"}
    for header in ("Authorization", "x-api-key", "X-Auth-Token", "Cookie", "X-Hub-Signature"):
        found = problems(
            {"site": {"id": "s"}, "alerts": {"webhooks": [{**hook, "headers": {header: "v"}}]}}
        )
        assert "headers_env" in found["alerts.webhooks[0].headers"], header
    secret = tmp_path / "hook-auth"
    secret.write_text("Bearer abc\n")
    monkeypatch.setenv("COFFEE_HOOK_SIG", "sig")
    cfg = parse_config(
        {
            "site": {"id": "s"},
            "alerts": {
                "webhooks": [
                    {
                        **hook,
                        "headers": {"X-Site": "ourofino"},
                        "headers_env": {"X-Signature": "COFFEE_HOOK_SIG"},
                        "headers_file": {"Authorization": str(secret)},
                    }
                ]
            },
        }
    )
    resolved = cfg.webhook_secret_headers["plantao"]
    assert {k: v.get_secret_value() for k, v in resolved.items()} == {
        "X-Signature": "sig",
        "Authorization": "Bearer abc",
    }


def test_tls_settings_are_checked_for_both_clients(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.crt")
    found = problems(
        {
            "site": {"id": "s"},
            "mqtt": {"tls": {"ca_file": missing}},
            "influx": {"url": "https://influx:8086", "tls": {"cert_file": missing}},
        }
    )
    assert "cannot read" in found["mqtt.tls.ca_file"]
    assert "cannot read" in found["influx.tls.cert_file"]
    found = problems({"site": {"id": "s"}, "influx": {"tls": {"insecure": True}}})
    assert "not https://" in found["influx"]
    found = problems({"site": {"id": "s"}, "mqtt": {"tls": {"key_file": missing}}})
    assert "key_file needs cert_file" in found["mqtt.tls"]
    cfg = parse_config(
        {"site": {"id": "s"}, "influx": {"url": "https://i:8086", "tls": {"insecure": True}}}
    )
    assert cfg.influx.tls is not None
    assert cfg.influx.tls.insecure


@pytest.mark.parametrize(
    ("api", "key", "message"),
    [
        ({"session_hours": 721}, "api.session_hours", "720"),
        (
            {"public_origin": "https://armazem.example.coop/painel"},
            "api.public_origin",
            "nothing else",
        ),
        ({"public_origin": "ftp://x"}, "api.public_origin", "scheme"),
        ({"trusted_proxies": ["proxy.local"]}, "api.trusted_proxies", "not an IP address"),
        ({"allowed_hosts": ["bad host"]}, "api.allowed_hosts", "not a host name"),
        ({"token_env": "A", "token_file": "/x"}, "api", "not both"),
    ],
)
def test_api_settings_are_checked(api: dict[str, object], key: str, message: str) -> None:
    found = problems({"site": {"id": "s"}, "api": api})
    assert message in found[key], found


def test_public_origin_is_normalised() -> None:
    cfg = parse_config(
        {
            "site": {"id": "s"},
            "api": {
                "public_origin": "HTTPS://Armazem.Example.coop:443/",
                "trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "::1"],
            },
        }
    )
    assert cfg.api.public_origin == "https://armazem.example.coop"
    assert len(cfg.api.proxy_networks) == 3


def test_check_config_masks_credentials_and_warns_about_modes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "api-token"
    token.write_text(STRONG_TOKEN)
    token.chmod(0o644)
    site = tmp_path / "site.toml"
    site.write_text(
        '[site]\nid = "s1"\n'
        '[influx]\nenabled = true\nurl = "https://admin:hunter2@influx.example:8086"\n'
        "[influx.tls]\ninsecure = true\n"
        f'[api]\ntoken_file = "{token}"\n'
    )
    site.chmod(0o666)
    assert main(["check-config", str(site)]) == 0
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err
    assert "admin" not in out + err
    assert "https://***@influx.example:8086" in out
    assert STRONG_TOKEN not in out + err
    assert f"the site file ({site}) is mode 0666: anyone may have it written" in err
    assert f"api.token_file ({token}) is mode 0644: anyone may have it read" in err
    assert "[influx.tls] insecure = true" in err
    site.chmod(0o600)
    token.chmod(0o600)
    assert main(["check-config", str(site)]) == 0
    assert "mode" not in capsys.readouterr().err
    token.chmod(0o640)
    assert main(["check-config", str(site)]) == 0
    assert "its group may have it read" in capsys.readouterr().err


# -- TLS: one reading of [*.tls] for every client ------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A private CA, the server's certificate for 127.0.0.1, a client certificate."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("agent@ourofino")
    files = {
        "ca": tmp_path / "ca.pem",
        "server": tmp_path / "server.pem",
        "client": tmp_path / "client.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return files


async def test_tls_settings_mean_the_same_for_every_client(
    tls_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import ssl

    from coffee_telemetry.agent.config import TlsConfig
    from coffee_telemetry.agent.health import Health
    from coffee_telemetry.agent.tls import client_context, report_tls

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(tls_files["server"]))
    server_ctx.load_verify_locations(str(tls_files["ca"]))
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    peers: list[object] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peercert"))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]

    async def talk(tls: TlsConfig) -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(tls), server_hostname="127.0.0.1"
        )
        got = await reader.read()
        writer.close()
        return got

    async with server:
        assert await talk(TlsConfig(ca_file=tls_files["ca"])) == b"ok"
        with pytest.raises(ssl.SSLCertVerificationError):
            await talk(TlsConfig())  # the system's CAs do not know this one
        mutual = TlsConfig(ca_file=tls_files["ca"], cert_file=tls_files["client"])
        assert await talk(mutual) == b"ok"
        assert await talk(TlsConfig(insecure=True)) == b"ok"
    assert [bool(p) for p in peers] == [False, True, False]  # a client certificate, once
    health = Health()
    report_tls(health, "mqtt", insecure=False)
    report_tls(health, "influx", insecure=True)
    assert health.counters["tls"]() == {
        "influx": {"tls": True, "certificates_checked": False},
        "mqtt": {"tls": True, "certificates_checked": True},
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "TLS to influx does not check the server's certificate ([influx.tls] insecure = true):"
        " anyone on the network path can read and change this traffic"
    ]


async def test_the_influx_sink_writes_over_tls_with_the_configured_ca(
    tls_files: dict[str, Path],
) -> None:
    import ssl

    from aiohttp import web

    from coffee_telemetry.agent.config import TlsConfig
    from coffee_telemetry.agent.errors import SinkUnavailable
    from coffee_telemetry.agent.outbox.sink import Record
    from coffee_telemetry.agent.readings import Stamper, encode_reading
    from coffee_telemetry.agent.sinks.influx import open_influx_v1
    from coffee_telemetry.agent.tls import client_context
    from tests.services.net import free_port

    bodies: list[bytes] = []

    async def write(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(tls_files["server"]))
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx).start()
    reading = Stamper().stamp(
        device="umid-1", measurement="moisture", fields={"moisture_pct": 11.5}, tags={}
    )
    record = Record(id=1, payload=encode_reading(reading), reading=reading)
    try:
        tls = TlsConfig(ca_file=tls_files["ca"])
        async with open_influx_v1(
            url=f"https://127.0.0.1:{port}",
            database="coffee",
            gzip=False,
            ssl_context=client_context(tls),
        ) as sink:
            assert await sink.deliver([record]) == []
        assert len(bodies) == 1
        assert bodies[0].startswith(b"moisture")
        async with open_influx_v1(
            url=f"https://127.0.0.1:{port}", database="coffee", timeout_s=5
        ) as unchecked:  # no [influx.tls]: the system's CAs, which refuse this server
            with pytest.raises(SinkUnavailable):
                await unchecked.deliver([record])
        assert len(bodies) == 1
    finally:
        await runner.cleanup()
