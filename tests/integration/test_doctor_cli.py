"""``coffee-telemetry doctor`` end to end: a site on ptys, a real broker and influxd.

The command runs as a technician runs it (a subprocess), against a config whose meter
is a simulator on a pseudo-terminal, whose broker and InfluxDB are the real test
services, and whose outbox was written by the real outbox. Exit codes: 0 when only
warnings remain (this container has no systemd and no NTP), 1 with a failure, 2 for a
config error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Stamper
from coffee_telemetry.simulators.moisture import TesmaMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

CLI = (sys.executable, "-m", "coffee_telemetry.agent.cli.main")


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90.0)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def site(
    tmp_path: Path, *, port: str, mqtt: MosquittoServer, influx: InfluxServer, db: str
) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    path = tmp_path / "site.toml"
    path.write_text(
        f"""
[site]
id = "fazenda-boa-vista"

[agent]
data_dir = "{data}"

[mqtt]
host = "{mqtt.host}"
port = {mqtt.port}

[influx]
enabled = true
url = "{influx.url}"
database = "{db}"

[[devices]]
id = "umidade-1"
driver = "moisture.tesma"
port = "{port}"
""",
        encoding="utf-8",
    )
    return path


async def delivered_outbox(data: Path) -> None:
    stamper = Stamper()
    reading = stamper.stamp(
        device="umidade-1",
        measurement="moisture",
        fields={"moisture_pct": 11.2},
        tags={"site": "fazenda-boa-vista", "device": "umidade-1"},
    )
    async with open_outbox(data / "outbox.sqlite3", sinks=["influx", "mqtt"]) as ob:
        await ob.accept([reading])
        await ob.ack("mqtt", 1)
        await ob.ack("influx", 1)
        await ob.flush()


async def test_a_healthy_site_exits_0_with_one_line_per_check(
    tmp_path: Path, mosquitto: MosquittoServer, influxd: InfluxServer, influx_db: str
) -> None:
    port = PtyPort(link=tmp_path / "medidor")
    port.open()
    sim = asyncio.create_task(TesmaMeterSim(port, interval_s=0.3).run())
    try:
        config = site(tmp_path, port=port.path, mqtt=mosquitto, influx=influxd, db=influx_db)
        await delivered_outbox(tmp_path / "data")
        code, out, err = await run_cli("doctor", "-c", str(config), "--listen", "1.5")
    finally:
        sim.cancel()
        port.close()
    lines = out.splitlines()
    assert code == 0, out + err
    assert [line.split()[0] for line in lines if "FALHA" in line] == []
    assert any(line.startswith("OK     umidade-1:") and "texto legível" in line for line in lines)
    assert any(line.startswith("OK     mqtt: broker") for line in lines)
    assert any(line.startswith("OK     influx: InfluxDB aceita") for line in lines)
    assert any(line.startswith("OK     outbox:mqtt: em dia") for line in lines)
    assert any(line.startswith("AVISO  systemd:") for line in lines)  # no systemd here
    # 4 port checks, mqtt, 2 influx, clock, 3 time sources (ntp, rtc, user), 2 disk,
    # 2 outbox sinks, systemd.
    assert len(lines) == 16
    assert any(line.startswith("OK     time:user:") for line in lines)
    assert err == ""


async def test_failures_exit_1_in_english_and_as_json(
    tmp_path: Path, mosquitto: MosquittoServer, influxd: InfluxServer
) -> None:
    config = site(
        tmp_path, port=str(tmp_path / "ttyUSB9"), mqtt=mosquitto, influx=influxd, db="nao_existe"
    )
    code, out, _ = await run_cli("doctor", "-c", str(config), "--lang", "en")
    assert code == 1
    assert any(
        line.startswith("FAIL   umidade-1:") and "does not exist" in line and "— fix:" in line
        for line in out.splitlines()
    )
    code, out, _ = await run_cli("doctor", "-c", str(config), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    by_check = {(c["subject"], c["check"]): c for c in report["checks"]}
    assert by_check[("umidade-1", "serial.exists")]["status"] == "fail"
    assert by_check[("influx", "influx.auth")]["status"] == "fail"
    assert by_check[("influx", "influx.auth")]["fix"].startswith("crie o banco")
    assert by_check[("mqtt", "mqtt.connect")]["status"] == "ok"


async def test_a_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text('[site]\nid = "Not Valid"\n', encoding="utf-8")
    code, _, err = await run_cli("doctor", "-c", str(bad))
    assert code == 2
    assert "site.id" in err
    code, _, err = await run_cli("doctor", "-c", str(bad), "--listen", "0")
    assert code == 2
    assert "--listen" in err
