"""Meter evidence end to end: a calibrated meter on a pty, the real agent, MQTT, InfluxDB.

The reading that reaches the broker and the database carries its meter's calibration id
as a field (no new tag); the agent publishes the meter's calibration status, raises
``calibration_due`` for a certificate about to run out, and the lot report the CLI
writes from the agent's lot records resolves the id to the full record.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pypdf import PdfReader

from coffee_telemetry.agent.config import load_config
from coffee_telemetry.agent.evidence.meters import calibration_ref
from coffee_telemetry.agent.lots.export import read_csv
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import (
    ROOT,
    AgentProcess,
    DeviceSpec,
    MqttCollector,
    eventually,
    write_site_config,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coffee_telemetry.agent.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def rule_of(doc: dict[str, object]) -> object:
    tags = doc.get("tags")
    return tags.get("rule") if isinstance(tags, dict) else None


async def test_calibration_id_travels_with_the_reading_and_the_report_resolves_it(
    mosquitto: MosquittoServer, influxd: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    (tmp_path / "dev").mkdir()
    port = PtyPort(link=tmp_path / "dev" / "umid-1")
    port.open()
    # Due in ten days: inside the 30-day warning.
    due = datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=10)
    meter = (
        "[devices.meter]\n"
        'make = "Gehaka"\nmodel = "G650i"\nserial = "SN 0042-A"\n'
        'inmetro_approval = "Portaria 47/2022 nº 123"\nmethod = "ISO 6673-indexed"\n'
        "[devices.meter.calibration]\n"
        f'date = 2026-01-10\ncertificate = "RBC-1234/26"\noffset_pct = 0.2\ndue = {due}\n'
    )
    config = write_site_config(
        tmp_path / "site.toml",
        data_dir=tmp_path / "data",
        devices=[DeviceSpec("umid-1", "moisture.ticket", port.path, "recepcao", extra=meter)],
        mqtt_port=mosquitto.port,
        prefix=prefix,
        influx_url=influxd.url,
        database=influx_db,
    )
    cfg = load_config(config)
    ref = calibration_ref("umid-1", cfg.devices[0].meter)
    assert ref is not None
    days_left = (due - datetime.datetime.now(cfg.site.zone).date()).days  # the site's today
    collector = MqttCollector(port=mosquitto.port, prefix=prefix, client_id=f"c-{prefix}")
    collector.start()
    agent = AgentProcess(config, tmp_path / "agent.log")
    agent.start()
    try:

        def online() -> bool:
            status = collector.last_status("umid-1")
            return isinstance(status, dict) and status.get("state") == "online"

        await eventually(online, timeout_s=20, what="umid-1 online", context=agent.log_tail)
        sim = TicketMeterSim(port, lot="L-0042")
        assert await sim.emit(moisture_pct=11.6) is not None
        assert await sim.emit(moisture_pct=11.8) is not None

        def moisture_docs() -> list[dict[str, object]]:
            return [d for d in collector.of("umid-1") if d.get("measurement") == "moisture"]

        await eventually(lambda: len(moisture_docs()) == 2, timeout_s=20, what="two readings")
        for doc in moisture_docs():
            fields, tags = doc["fields"], doc["tags"]
            assert isinstance(fields, dict)
            assert isinstance(tags, dict)
            assert fields["calibration"] == ref
            assert "calibration" not in tags
            assert tags["lot"] == "L-0042"

        # The meter's calibration status, and the alert it raises through the rules.
        await eventually(
            lambda: any(
                d.get("measurement") == "calibration_status" for d in collector.of("umid-1")
            ),
            timeout_s=20,
            what="calibration_status reading",
        )
        status = next(
            d for d in collector.of("umid-1") if d.get("measurement") == "calibration_status"
        )
        assert status["fields"] == {
            "days_left": days_left,
            "due": due.isoformat(),
            "certificate": "RBC-1234/26",
            "calibration": ref,
        }
        await eventually(
            lambda: any(
                d.get("measurement") == "alert" and rule_of(d) == "calibration_due"
                for d in collector.of("alerts")
            ),
            timeout_s=20,
            what="calibration_due alert",
            context=agent.log_tail,
        )

        # InfluxDB got the id as a string field of the moisture points, no tag.
        def influx_rows() -> list[dict[str, object]]:
            return influxd.query(influx_db, 'SELECT "calibration", "lot" FROM "moisture"')

        await eventually(lambda: len(influx_rows()) == 2, timeout_s=20, what="points in InfluxDB")
        assert {row["calibration"] for row in influx_rows()} == {ref}
        tag_keys = influxd.query(influx_db, 'SHOW TAG KEYS FROM "moisture"')
        assert "calibration" not in {row.get("tagKey") for row in tag_keys}
        field_keys = influxd.query(influx_db, 'SHOW FIELD KEYS FROM "moisture"')
        assert {"fieldKey": "calibration", "fieldType": "string"} in field_keys

        # The lot record has them; the report resolves the id to the whole record.
        csv_path = tmp_path / "lote.csv"

        def report_has_both() -> bool:
            done = cli("lot", "report", "-c", str(config), "L-0042", "--csv", "-o", str(csv_path))
            if done.returncode != 0:
                return False
            rows = [r for r in read_csv(csv_path.read_bytes()) if r["tipo"] == "leitura"]
            return len(rows) == 2

        await eventually(report_has_both, timeout_s=30, what="both readings in the lot record")
        rows = [r for r in read_csv(csv_path.read_bytes()) if r["tipo"] == "leitura"]
        assert {r["calibracao"] for r in rows} == {f"{ref} RBC-1234/26"}
        assert {r["medidor"] for r in rows} == {"umid-1 (Gehaka G650i nº SN 0042-A)"}
        assert {r["metodo"] for r in rows} == {"ISO 6673-indexed"}
        assert {r["calibracao_vencida"] for r in rows} == {"não"}

        oven = cli("lot", "oven", "-c", str(config), "L-0042", "11.4", "--by", "ana")
        assert oven.returncode == 0, oven.stderr
        assert "viés +0,30 pp" in oven.stdout
        pdf = tmp_path / "lote.pdf"
        done = cli("lot", "report", "-c", str(config), "L-0042", "-o", str(pdf))
        assert done.returncode == 0, done.stderr
        text = " ".join(" ".join(p.extract_text() for p in PdfReader(pdf).pages).split())
        assert ref in text
        assert "Portaria 47/2022 nº 123" in text
        assert "11,40 % por ana" in text
        listed = cli("meters", "-c", str(config), "--lang", "en")
        assert listed.returncode == 0, listed.stderr
        assert f"DUE in {days_left} days" in listed.stdout
    finally:
        agent.stop()
        collector.stop()
        port.close()
