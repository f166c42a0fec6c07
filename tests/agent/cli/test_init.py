"""``coffee-telemetry init``: a new site's files, valid as written, never overwritten by halves."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.cli.init import render_site_toml
from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.config import load_config, parse_config
from coffee_telemetry.agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]

EXPECTED = {
    "site.toml",
    "systemd/coffee-telemetry.service",
    "systemd/secrets.env.example",
    "udev/99-coffee-telemetry.rules",
    "mosquitto/coffee-telemetry.conf",
    "mosquitto/coffee-telemetry-listeners.conf",
    "mosquitto/coffee-telemetry.acl",
    "mosquitto/README.md",
    "grafana/README.md",
    "grafana/provisioning/datasources/coffee-telemetry.yaml",
    "grafana/provisioning/dashboards/coffee-telemetry.yaml",
    "grafana/dashboards/coffee-telemetry/warehouse-moisture.json",
    "grafana/dashboards/coffee-telemetry/devices-agent.json",
    "grafana/dashboards/coffee-telemetry/hullers-maintenance.json",
    "grafana/dashboards/coffee-telemetry/cooperative-overview.json",
    "grafana/dashboards/coffee-telemetry-en/warehouse-moisture.json",
    "grafana/dashboards/coffee-telemetry-en/devices-agent.json",
    "grafana/dashboards/coffee-telemetry-en/hullers-maintenance.json",
    "grafana/dashboards/coffee-telemetry-en/cooperative-overview.json",
}


def _written(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_init_writes_a_site_that_check_config_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    assert main(["init", str(site), "--site", "ourofino", "--name", "Armazém 1"]) == 0
    assert _written(site) == EXPECTED
    out = capsys.readouterr().out
    assert f"wrote {site / 'site.toml'}" in out
    assert f"coffee-telemetry check-config {site / 'site.toml'}" in out
    cfg = load_config(site / "site.toml")
    assert (cfg.site.id, cfg.site.name) == ("ourofino", "Armazém 1")
    assert main(["check-config", str(site / "site.toml")]) == 0
    assert (site / "site.toml").stat().st_mode & 0o777 == 0o640


def test_the_unit_runs_this_sites_config(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path), "--data-dir", "/srv/coffee"]) == 0
    unit = (tmp_path / "systemd" / "coffee-telemetry.service").read_text()
    assert f"check-config {tmp_path / 'site.toml'}\n" in unit
    assert f" run -c {tmp_path / 'site.toml'}\n" in unit
    assert "ReadWritePaths=/srv/coffee\n" in unit
    assert load_config(tmp_path / "site.toml").agent.data_dir == Path("/srv/coffee")


def test_copies_are_the_shipped_files(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path)]) == 0
    pairs = {
        "udev/99-coffee-telemetry.rules": "deploy/99-coffee-telemetry.rules",
        "mosquitto/coffee-telemetry.acl": "broker_config/coffee-telemetry.acl",
        "mosquitto/coffee-telemetry.conf": "broker_config/mosquitto.conf",
        "grafana/provisioning/datasources/coffee-telemetry.yaml": (
            "dashboards/grafana/provisioning/datasources/coffee-telemetry.yaml"
        ),
        "grafana/dashboards/coffee-telemetry/warehouse-moisture.json": (
            "dashboards/grafana/json/warehouse-moisture.json"
        ),
    }
    for written, shipped in pairs.items():
        assert (tmp_path / written).read_bytes() == (ROOT / shipped).read_bytes(), written


def test_init_refuses_to_overwrite_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mosquitto").mkdir()
    (tmp_path / "mosquitto" / "coffee-telemetry.acl").write_text("mine\n")
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'mosquitto' / 'coffee-telemetry.acl'} already exists" in err
    assert "use --force" in err
    assert _written(tmp_path) == {"mosquitto/coffee-telemetry.acl"}
    assert (tmp_path / "mosquitto" / "coffee-telemetry.acl").read_text() == "mine\n"


def test_force_overwrites(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path), "--site", "a"]) == 0
    assert main(["init", str(tmp_path), "--site", "b"]) == 2
    assert load_config(tmp_path / "site.toml").site.id == "a"
    assert main(["init", str(tmp_path), "--site", "b", "--force"]) == 0
    assert load_config(tmp_path / "site.toml").site.id == "b"
    assert not list(tmp_path.rglob("*.init-tmp"))


@pytest.mark.parametrize("site", ["Ouro Fino", "", "-x", "a/b", 'x"\n[mqtt]', "a" * 49])
def test_a_bad_site_id_is_refused_before_anything_is_written(
    tmp_path: Path, site: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "s"), f"--site={site}"]) == 2
    assert "--site" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_init_onto_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("")
    assert main(["init", str(tmp_path / "f")]) == 2
    assert "is not a directory" in capsys.readouterr().err


@given(name=st.text(max_size=80), data_dir=st.text(min_size=1, max_size=40))
def test_any_name_and_data_dir_give_valid_toml_or_a_refusal(name: str, data_dir: str) -> None:
    # The name and data directory are typed by a person: whatever they are, the file
    # parses and says exactly them, or init refuses with a ConfigError.
    try:
        text = render_site_toml(site="s1", name=name, data_dir=data_dir, config="/x/site.toml")
    except ConfigError:
        return
    doc = tomllib.loads(text)
    assert doc["site"] == {"id": "s1", "name": name}
    assert doc["agent"]["data_dir"] == data_dir
    assert parse_config(doc).site.name == name


@given(site=st.text(max_size=60))
def test_any_site_id_is_valid_or_refused(site: str) -> None:
    try:
        text = render_site_toml(site=site, name="n", data_dir="/d", config="/x/site.toml")
    except ConfigError:
        return
    assert tomllib.loads(text)["site"]["id"] == site
