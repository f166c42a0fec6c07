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
    monkeypatch.setenv("COFFEE_API_TOKEN", "t")
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
