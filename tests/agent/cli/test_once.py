"""``coffee-telemetry run --once``: one reading per device, printed, nothing stored or sent."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.cli.once import print_readings, read_once
from coffee_telemetry.agent.config import load_config
from coffee_telemetry.simulators.moisture import TesmaMeterSim, TicketMeterSim
from coffee_telemetry.simulators.pty import open_pty_port

pytestmark = pytest.mark.integration

SITE = """\
[site]
id = "once"
[agent]
data_dir = "{data}"
[mqtt]
port = 1
[influx]
enabled = true
url = "http://127.0.0.1:1"
[[devices]]
id = "umid-recepcao"
driver = "moisture.ticket"
port = "{ticket}"
station = "recepcao"
[devices.ticket]
idle_gap_s = 0.3
[[devices]]
id = "umid-secador"
driver = "moisture.tesma"
port = "{tesma}"
station = "secador"
[[devices]]
id = "balanca-sumida"
driver = "scale.toledo_continuous"
port = "{missing}"
"""


def _site(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        SITE.format(
            data=tmp_path / "data",
            ticket=tmp_path / "ticket",
            tesma=tmp_path / "tesma",
            missing=tmp_path / "no-such-port",
        )
    )
    return path


async def test_each_device_gives_its_first_reading_and_nothing_is_stored(tmp_path: Path) -> None:
    cfg = load_config(_site(tmp_path))
    with (
        open_pty_port(link=tmp_path / "ticket") as ticket_port,
        open_pty_port(link=tmp_path / "tesma") as tesma_port,
    ):
        ticket = TicketMeterSim(ticket_port, interval_s=0.5, product="CAFE", lot="L-0007")
        tesma = TesmaMeterSim(tesma_port, interval_s=0.2, moisture_pct=12.3)
        sims = [asyncio.create_task(ticket.run()), asyncio.create_task(tesma.run())]
        try:
            results = await read_once(cfg, cfg.devices, timeout_s=6.0)
        finally:
            for sim in sims:
                sim.cancel()
            await asyncio.gather(*sims, return_exceptions=True)
    assert results["balanca-sumida"] == []
    (first_ticket, *_) = results["umid-recepcao"]
    assert first_ticket.tags["lot"] == "L-0007"
    assert first_ticket.tags["site"] == "once"
    assert "moisture_pct" in first_ticket.fields
    assert results["umid-secador"][0].fields["moisture_pct"] == pytest.approx(12.3)
    # No outbox, history or state: the data directory was never made.
    assert not (tmp_path / "data").exists()

    out = io.StringIO()
    print_readings(results["umid-recepcao"][:1], fmt="both", out=out)
    line, doc = out.getvalue().splitlines()
    assert line.startswith("moisture,")
    assert "lot=L-0007" in line
    assert line.endswith(f" {first_ticket.ts_ns}")
    parsed = json.loads(doc)
    assert parsed["device"] == "umid-recepcao"
    assert parsed["tags"]["lot"] == "L-0007"
    assert parsed["fields"]["moisture_pct"] == first_ticket.fields["moisture_pct"]


@pytest.mark.parametrize("fmt", ["line", "json"])
def test_one_format(fmt: str) -> None:
    from coffee_telemetry.agent.readings import Reading

    reading = Reading(ts_ns=1, seq=1, device="d", measurement="m", fields={"v": 1.5})
    out = io.StringIO()
    print_readings([reading], fmt=fmt, out=out)
    (text,) = out.getvalue().splitlines()
    assert text.startswith("{") == (fmt == "json")


def test_a_silent_device_fails_the_run_and_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site(tmp_path)
    argv = ["run", "--once", "-c", str(site), "--device", "balanca-sumida", "--timeout", "0.5"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "error: balanca-sumida: no reading within 0.5 s" in captured.err
    assert captured.out == ""
    assert not (tmp_path / "data").exists()


def test_an_unknown_device_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--once", "-c", str(_site(tmp_path)), "--device", "nada"]) == 2
    assert "no device nada" in capsys.readouterr().err


def test_a_site_without_devices_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "new")]) == 0
    capsys.readouterr()
    assert main(["run", "--once", "-c", str(tmp_path / "new" / "site.toml")]) == 1
    assert "has no enabled devices" in capsys.readouterr().err
