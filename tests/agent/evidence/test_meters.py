"""Meters as evidence: config, the id on each reading, the records store, lot reports."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from pypdf import PdfReader

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.config import (
    DeviceConfig,
    StreamDeviceBase,
    load_config,
    parse_config,
)
from coffee_telemetry.agent.devices.runner import DeviceRunner
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.evidence.meter_report import (
    cross_checks,
    csv_cells,
    meter_bias,
    reading_meters,
)
from coffee_telemetry.agent.evidence.meters import (
    STEP,
    calibration_ref,
    calibration_status,
    calibrations,
    configured_records,
    meter_record,
    parse_oven,
    record_calibrations,
    run_calibration_status,
    set_oven,
)
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.lots.export import (
    configured_csv,
    configured_report,
    read_csv,
    record_sha256,
    verify_report,
)
from coffee_telemetry.agent.lots.model import LotReading
from coffee_telemetry.agent.lots.records import STEPS, LotRecords, configured_thresholds
from coffee_telemetry.agent.readings import Draft, Reading, Stamper
from coffee_telemetry.drivers.moisture_ticket import encode_ticket
from tests.agent.lots.test_records import assignment
from tests.fakes import FakePorts, stage

CASES = Path(__file__).resolve().parents[2] / "cases" / "evidence" / "meter_refs.json"
NS = 1_000_000_000
#: 2026-11-03 12:00 UTC.
T0 = 1_793_707_200 * NS

METER: dict[str, object] = {
    "make": "Gehaka",
    "model": "G650i",
    "serial": "SN 0042-A",
    "inmetro_approval": "Portaria 47/2022 nº 123",
    "method": "ISO 6673-indexed",
    "calibration": {
        "date": "2026-01-10",
        "certificate": "RBC-1234/26",
        "offset_pct": 0.2,
        "due": "2026-11-20",
    },
}


def device(meter: dict[str, object] | None = METER, **extra: object) -> DeviceConfig:
    dev: dict[str, object] = {
        "id": "umid-1",
        "driver": "moisture.ticket",
        "port": "/dev/fake",
        "station": "recepcao",
        **extra,
    }
    if meter is not None:
        dev["meter"] = meter
    return parse_config({"site": {"id": "s1"}, "devices": [dev]}).devices[0]


def config_error(meter: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "site": {"id": "s1"},
                "devices": [
                    {"id": "u", "driver": "moisture.tesma", "port": "/dev/x", "meter": meter}
                ],
            }
        )
    return str(info.value)


# -- config --------------------------------------------------------------------------------


def test_meter_table_is_parsed_and_due_defaults_to_a_year() -> None:
    meter = device().meter
    assert meter is not None
    assert meter.calibration is not None
    assert meter.serial == "SN 0042-A"
    assert meter.calibration.due_date == datetime.date(2026, 11, 20)
    plain = device({"calibration": {"date": "2026-02-28", "certificate": "C1"}}).meter
    assert plain is not None
    assert plain.calibration is not None
    assert plain.calibration.due_date == datetime.date(2027, 2, 28)
    leap = device({"calibration": {"date": "2028-02-29", "certificate": "C1"}}).meter
    assert leap is not None
    assert leap.calibration is not None
    assert leap.calibration.due_date == datetime.date(2029, 2, 28)
    assert device(None).meter is None


@pytest.mark.parametrize(
    ("meter", "expected"),
    [
        ({"make": "<b>Gehaka</b>"}, "devices[0].meter.make: '<b>Gehaka</b>' is not allowed"),
        ({"serial": "=cmd|' /C calc'!A0"}, "devices[0].meter.serial:"),
        ({"method": "ISO\u202e6673"}, "devices[0].meter.method:"),
        ({"model": ""}, "devices[0].meter.model:"),
        ({"model": "x" * 65}, "devices[0].meter.model:"),
        ({"colour": "red"}, "devices[0].meter.colour: unknown key"),
        ({"calibration": {"certificate": "C1"}}, "devices[0].meter.calibration.date: Field"),
        (
            {"calibration": {"date": "2026-02-30", "certificate": "C1"}},
            "devices[0].meter.calibration.date:",
        ),
        (
            {"calibration": {"date": "2026-03-01", "certificate": "C1", "due": "2026-02-01"}},
            "due (2026-02-01) must be after the calibration date (2026-03-01)",
        ),
        (
            {"calibration": {"date": "1999-03-01", "certificate": "C1"}},
            "must be between 2000-01-01 and 2200-01-01",
        ),
        (
            {"calibration": {"date": "2026-03-01", "certificate": "C1", "offset_pct": "nan"}},
            "devices[0].meter.calibration.offset_pct: Input should be a finite number",
        ),
        (
            {"calibration": {"date": "2026-03-01", "certificate": "C1", "offset_pct": 11}},
            "devices[0].meter.calibration.offset_pct:",
        ),
    ],
)
def test_bad_meter_tables_are_refused_naming_the_key(meter: object, expected: str) -> None:
    assert expected in config_error(meter)


def test_check_config_shows_the_meter_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[site]\nid = "s1"\n[[devices]]\nid = "u"\ndriver = "moisture.tesma"\nport = "/dev/x"\n'
        '[devices.meter]\nmake = "Gehaka"\n[devices.meter.calibration]\n'
        'date = 2026-03-01\ncertificate = "C 1"\ndue = 2026-01-01\n',
        encoding="utf-8",
    )
    assert main(["check-config", str(site)]) != 0
    err = capsys.readouterr()
    assert "devices[0].meter.calibration" in err.out + err.err
    assert "must be after the calibration date" in err.out + err.err


# -- the id --------------------------------------------------------------------------------


def test_the_id_is_the_hash_of_the_canonical_record() -> None:
    dev = device()
    # Written out by hand: keys sorted, compact separators, UTF-8.
    canonical = (
        '{"certificate":"RBC-1234/26","date":"2026-01-10","device":"umid-1","due":"2026-11-20",'
        '"inmetro_approval":"Portaria 47/2022 nº 123","make":"Gehaka","method":"ISO 6673-indexed",'
        '"model":"G650i","offset_pct":0.2,"serial":"SN 0042-A"}'
    )
    expected = "cal-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert calibration_ref(dev.id, dev.meter) == expected
    assert calibration_ref(dev.id, None) is None


def test_golden_ids_do_not_drift() -> None:
    cases = json.loads(CASES.read_text(encoding="utf-8"))
    assert len(cases) >= 3
    for case in cases:
        dev = device(case["meter"], id=case["device"])
        assert calibration_ref(dev.id, dev.meter) == case["ref"], case["name"]
        assert dev.meter is not None
        record = meter_record(dev.id, dev.meter)
        assert record.due == case["due"], case["name"]


def test_any_change_of_the_record_gives_a_new_id() -> None:
    base = calibration_ref("umid-1", device().meter)
    changed = [
        device({**METER, "serial": "SN 0043"}),
        device({**METER, "method": "curva café 2"}),
        device({**METER, "calibration": {**METER["calibration"], "certificate": "X-2"}}),  # type: ignore[dict-item]
        device({**METER, "calibration": {**METER["calibration"], "offset_pct": 0.21}}),  # type: ignore[dict-item]
        device(METER, id="umid-2"),
    ]
    ids = {calibration_ref(d.id, d.meter) for d in changed}
    assert base not in ids
    assert len(ids) == len(changed)


class _Harness:
    def __init__(self, dev: DeviceConfig) -> None:
        assert isinstance(dev, StreamDeviceBase)
        self.accepted: list[Reading] = []
        self.ports = FakePorts()
        self.runner = DeviceRunner(
            dev,
            site="s1",
            accept=stage(self._accept, Stamper()).accept,
            health=Health(),
            open_port=self.ports.open,
            backoff=Backoff(initial_s=0.01, maximum_s=0.02, jitter=0.0),
        )

    async def _accept(self, readings: Sequence[Reading]) -> None:
        self.accepted.extend(readings)

    async def one_ticket(self) -> Reading:
        task = asyncio.create_task(self.runner.run_loop())
        try:
            async with asyncio.timeout(5):
                while self.ports.current is None:
                    await asyncio.sleep(0.005)
                self.ports.current.queue.put_nowait(
                    encode_ticket(moisture_pct=11.8, product="CAFE", lot="L-7", sample_id="1")
                )
                while not self.accepted:
                    await asyncio.sleep(0.005)
        finally:
            task.cancel()
        return self.accepted[0]


async def test_each_reading_carries_the_id_as_a_field_not_a_tag() -> None:
    dev = device()
    reading = await _Harness(dev).one_ticket()
    assert reading.fields["calibration"] == calibration_ref(dev.id, dev.meter)
    assert "calibration" not in reading.tags
    assert set(reading.tags) == {"site", "device", "station", "product", "lot"}


async def test_a_device_without_a_meter_table_adds_nothing() -> None:
    reading = await _Harness(device(None)).one_ticket()
    assert "calibration" not in reading.fields


# -- the store -----------------------------------------------------------------------------


def moisture(
    seq: int, pct: float, *, device: str = "umid-1", ref: str | None = None, at: int = 0
) -> Reading:
    fields: dict[str, str | float] = {"moisture_pct": pct}
    if ref is not None:
        fields["calibration"] = ref
    return Reading(
        ts_ns=T0 + at * NS if at else T0 + seq * 60 * NS,
        seq=seq,
        device=device,
        measurement="moisture",
        fields=fields,
        tags={"site": "s1", "device": device, "station": "recepcao", "lot": "L-0042"},
    )


def test_the_step_is_one_of_the_lot_records_store() -> None:
    assert STEP in STEPS


def test_records_resolve_after_the_config_changed(tmp_path: Path) -> None:
    store = LotRecords.open(tmp_path / "lots-records.sqlite3")
    try:
        old = device()
        new = device({**METER, "calibration": {**METER["calibration"], "certificate": "RBC-9"}})  # type: ignore[dict-item]
        old_ref, new_ref = (calibration_ref(d.id, d.meter) for d in (old, new))
        assert old_ref is not None
        assert new_ref is not None
        added = store.write_with(
            lambda c: record_calibrations(c, configured_records([old]), at_ns=T0)
        )
        assert added == 1
        store.write([moisture(1, 11.2, ref=old_ref), moisture(2, 11.4)])
        # The site file changes: a new certificate. The old id stays resolvable.
        store.write_with(lambda c: record_calibrations(c, configured_records([new]), at_ns=T0))
        assert (
            store.write_with(lambda c: record_calibrations(c, configured_records([new]), at_ns=T0))
            == 0
        )  # already kept
        store.write([moisture(3, 11.6, ref=new_ref)])
        record = store.record("L-0042")
        assert record is not None
        assert record.meters is not None
        assert record.meters.refs == (("umid-1", 1, old_ref), ("umid-1", 3, new_ref))
        by_ref = {c.ref: c for c in record.meters.calibrations}
        assert by_ref[old_ref].certificate == "RBC-1234/26"
        assert by_ref[new_ref].certificate == "RBC-9"
        assert by_ref[old_ref].serial == "SN 0042-A"
        assert store.read_with(lambda c: sorted(calibrations(c, [old_ref, "cal-unknown"]))) == [
            old_ref
        ]
    finally:
        store.close()


def test_a_lot_without_meters_keeps_its_old_hash(tmp_path: Path) -> None:
    store = LotRecords.open(tmp_path / "lots-records.sqlite3")
    try:
        store.write([moisture(1, 11.2), moisture(2, 11.4)])
        record = store.record("L-0042")
        assert record is not None
        assert record.meters is None
        assert '"meters"' not in json.dumps(record_sha256(record))
    finally:
        store.close()


# -- reports -------------------------------------------------------------------------------


def site(tmp_path: Path, meters: Sequence[tuple[str, dict[str, object]]]) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    lines = [
        '[site]\nid = "s1"\nname = "Cooperativa Três Pontas"\ntimezone = "America/Sao_Paulo"',
        f'[agent]\ndata_dir = "{data}"',
        "[alerts.meter_disagreement]\ntolerance_pp = 0.8\nwindow_s = 1800",
    ]
    for i, (dev_id, meter) in enumerate(meters):
        lines.append(
            f'[[devices]]\nid = "{dev_id}"\ndriver = "moisture.ticket"\nport = "/dev/x{i}"\n'
            'station = "recepcao"'
        )
        cal = meter.get("calibration")
        lines.append("[devices.meter]")
        for key, value in meter.items():
            if key != "calibration":
                lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        if isinstance(cal, dict):
            lines.append("[devices.meter.calibration]")
            for key, value in cal.items():
                text = value if key in ("date", "due") else json.dumps(value)
                lines.append(f"{key} = {text}")
    path = tmp_path / "site.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


OTHER: dict[str, object] = {
    "make": "Motomco",
    "model": "919",
    "serial": "M-77",
    "method": "curva café verde",
    "calibration": {"date": "2026-06-01", "certificate": "CAL-77", "offset_pct": -0.1},
}


def fill_two_meters(path: Path) -> tuple[str, str]:
    """Readings of L-0042 by umid-1 (due 2026-11-20) and umid-2, around the due date."""
    cfg = load_config(path)
    ref1, ref2 = (calibration_ref(d.id, d.meter) for d in cfg.devices)
    assert ref1 is not None
    assert ref2 is not None
    store = LotRecords.open(cfg.lot_records_path, thresholds=configured_thresholds(cfg))
    day = 86400
    try:
        store.write(
            [
                assignment(1, "set"),
                # 2026-11-03 12:00 UTC: umid-1 in force; umid-2 0.3 pp above, 10 min later.
                moisture(1, 11.2, ref=ref1, at=0),
                moisture(1, 11.5, device="umid-2", ref=ref2, at=600),
                # 2026-11-25: umid-1 past its due date; umid-2 1.3 pp above within the window.
                moisture(2, 11.0, ref=ref1, at=22 * day),
                moisture(2, 12.3, device="umid-2", ref=ref2, at=22 * day + 900),
                # umid-2 alone, far from any umid-1 reading: no pair.
                moisture(3, 11.9, device="umid-2", ref=ref2, at=30 * day),
            ]
        )
    finally:
        store.close()
    return ref1, ref2


def test_csv_shows_meter_method_calibration_and_the_overdue_flag(tmp_path: Path) -> None:
    path = site(tmp_path, [("umid-1", METER), ("umid-2", OTHER)])
    ref1, ref2 = fill_two_meters(path)
    out = tmp_path / "l.csv"
    assert main(["lot", "report", "-c", str(path), "L-0042", "--csv", "-o", str(out)]) == 0
    rows = [r for r in read_csv(out.read_bytes()) if r["tipo"] == "leitura"]
    assert len(rows) == 5  # nothing dropped
    first = rows[0]
    assert first["medidor"] == "umid-1 (Gehaka G650i nº SN 0042-A)"
    assert first["metodo"] == "ISO 6673-indexed"
    assert first["calibracao"] == f"{ref1} RBC-1234/26"
    assert [r["calibracao_vencida"] for r in rows] == ["não", "não", "sim", "não", "não"]
    english = tmp_path / "en.csv"
    argv = ["lot", "report", "-c", str(path), "L-0042", "--csv", "--lang", "en", "-o"]
    assert main([*argv, str(english)]) == 0
    en_rows = [r for r in read_csv(english.read_bytes()) if r["kind"] == "reading"]
    assert en_rows[2]["calibration_overdue"] == "yes"
    assert en_rows[1]["calibration"] == f"{ref2} CAL-77"


def test_pdf_shows_meters_cross_checks_oven_and_bias(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site(tmp_path, [("umid-1", METER), ("umid-2", OTHER)])
    ref1, _ = fill_two_meters(path)
    argv = ["lot", "oven", "-c", str(path), "L-0042", "11,4", "--by", "ana"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "estufa 11,40 % por ana" in out
    assert "umid-1: 2 leituras, média 11,10 %, viés -0,30 pp" in out
    assert "umid-2: 3 leituras, média 11,90 %, viés +0,50 pp" in out
    pdf = tmp_path / "l.pdf"
    assert main(["lot", "report", "-c", str(path), "L-0042", "-o", str(pdf)]) == 0
    text = "\n".join(p.extract_text() for p in PdfReader(pdf).pages)
    flat = " ".join(text.split())
    assert "Medidores e calibração" in text
    assert "Portaria 47/2022 nº 123" in flat
    assert ref1 in flat
    assert "VENCIDA" in text
    assert "1 leituras com calibração VENCIDA" in flat
    assert "Comparação entre medidores" in text
    assert "+0,30" in flat
    assert "+1,30" in flat
    assert "ACIMA DA TOLERÂNCIA" in flat
    assert "11,40 % por ana" in flat
    assert "-0,30" in flat
    assert "+0,50" in flat
    # The report still verifies against the store (its hash covers the meter evidence).
    assert main(["lot", "verify", "-c", str(path), str(pdf)]) == 0


def test_report_resolves_ids_kept_before_the_meter_left_the_config(tmp_path: Path) -> None:
    path = site(tmp_path, [("umid-1", METER), ("umid-2", OTHER)])
    fill_two_meters(path)
    assert main(["meters", "-c", str(path)]) == 0  # keeps the configured records
    later = site(tmp_path, [("umid-3", OTHER)])  # both meters gone from the site file
    cfg = load_config(later)
    store = LotRecords.open(cfg.lot_records_path)
    try:
        record = store.record("L-0042")
    finally:
        store.close()
    assert record is not None
    rows = reading_meters(record, cfg.site.zone)
    assert all(r.record is not None for r in rows)
    assert {r.record.serial for r in rows if r.record} == {"SN 0042-A", "M-77"}
    csv = configured_csv([record], cfg)
    assert b"Gehaka G650i" in csv
    pdf = configured_report(record, cfg, generated_ns=T0)
    assert verify_report(pdf, lambda code: record).ok


def test_an_unknown_id_is_shown_not_hidden(tmp_path: Path) -> None:
    store = LotRecords.open(tmp_path / "lots-records.sqlite3")
    try:
        store.write([moisture(1, 11.2, ref="cal-000000000000")])
        record = store.record("L-0042")
    finally:
        store.close()
    assert record is not None
    cells = csv_cells(record, datetime.UTC, "pt-BR")
    assert cells[("umid-1", 1)] == ("umid-1", "", "cal-000000000000", "não")


def reading(device: str, minute: float, pct: float) -> LotReading:
    return LotReading(
        ts_ns=T0 + round(minute * 60 * NS), seq=int(minute), device=device, station="",
        moisture_pct=pct,
    )  # fmt: skip


def test_cross_checks_pair_the_nearest_reading_within_the_window() -> None:
    readings = [
        reading("a", 0, 11.0),
        reading("b", 5, 11.5),
        reading("b", 50, 12.5),
        reading("a", 58, 11.4),
        reading("a", 200, 11.0),
        reading("c", 201, 11.9),
    ]
    checks = cross_checks(readings, window_s=1800, tolerance_pp=0.8)
    got = [(c.first.device, c.second.device, c.diff_pp, c.beyond) for c in checks]
    assert got == [("a", "b", 0.5, False), ("a", "b", 1.1, True), ("a", "c", 0.9, True)]
    assert cross_checks(readings, window_s=59, tolerance_pp=0.8) == []


def test_bias_without_an_oven_result_is_none(tmp_path: Path) -> None:
    store = LotRecords.open(tmp_path / "lots-records.sqlite3")
    try:
        store.write([moisture(1, 11.2, ref="cal-000000000000"), moisture(2, 11.6)])
        record = store.record("L-0042")
        assert record is not None
        assert [(b.readings, b.mean_pct, b.bias_pp) for b in meter_bias(record)] == [
            (2, 11.4, None)
        ]
        store.write_with(lambda c: set_oven(c, "L-0042", 11.0, "ana", at_ns=T0))
        store.write_with(lambda c: set_oven(c, "L-0042", 11.1, "joao", at_ns=T0 + NS))
        record = store.record("L-0042")
        assert record is not None
        assert record.meters is not None
        assert [o.by for o in record.meters.oven] == ["ana", "joao"]
        assert meter_bias(record)[0].bias_pp == pytest.approx(0.3)  # the latest is the reference
    finally:
        store.close()


# -- CLI -------------------------------------------------------------------------------------


def test_meters_lists_state_in_portuguese_and_english(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site(tmp_path, [("umid-1", METER), ("umid-2", OTHER)])
    assert main(["meters", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    ref1 = calibration_ref("umid-1", load_config(path).devices[0].meter)
    assert f"umid-1\tGehaka G650i nº SN 0042-A\t{ref1}" in out
    assert "aprovação Inmetro Portaria 47/2022 nº 123; método ISO 6673-indexed" in out
    assert "calibração 2026-01-10, certificado RBC-1234/26, desvio 0,20 pp, vence 2026-11-20" in out
    assert "VENCIDA há" in out or "VENCENDO" in out or "em dia" in out
    assert main(["meters", "-c", str(path), "--lang", "en", "--history"]) == 0
    out = capsys.readouterr().out
    assert "calibrated 2026-06-01, certificate CAL-77, offset -0.10 pp, due 2027-06-01" in out
    assert "records kept" in out
    assert out.count("\tumid-") == 2


def test_calibration_state_words() -> None:
    from coffee_telemetry.agent.cli.meters import calibration_state

    rec = meter_record("umid-1", device().meter)  # type: ignore[arg-type]
    day = datetime.date(2026, 11, 20)
    assert calibration_state(rec, day - datetime.timedelta(days=31), 30, "pt-BR") == (
        "em dia (vence em 31 dias)"
    )
    assert calibration_state(rec, day - datetime.timedelta(days=30), 30, "en") == "DUE in 30 days"
    assert calibration_state(rec, day, 30, "pt-BR") == "VENCE HOJE"
    assert calibration_state(rec, day + datetime.timedelta(days=2), 30, "en") == "OVERDUE by 2 days"


def test_lot_oven_refuses_bad_input_and_unknown_lots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site(tmp_path, [("umid-1", METER)])
    for argv, code, words in [
        (["L-0042", "abc", "--by", "ana"], 2, "invalid oven moisture"),
        (["L-0042", "0", "--by", "ana"], 2, "out of range"),
        (["L-0042", "nan", "--by", "ana"], 2, "out of range"),
        (["L 0042;x", "11.4", "--by", "ana"], 2, "lot code"),
        (["L-0042", "11.4", "--by", "ana\u202e"], 2, "printable"),
        (["L-9999", "11.4", "--by", "ana"], 1, "lote desconhecido"),
    ]:
        assert main(["lot", "oven", "-c", str(path), *argv]) == code, argv
        assert words in capsys.readouterr().err, argv


def test_parse_oven_accepts_comma_and_point() -> None:
    assert parse_oven("11,4", "ana") == (11.4, "ana")
    assert parse_oven(11.45, "  ana  ") == (11.45, "ana")
    with pytest.raises(ValueError, match="invalid oven moisture"):
        parse_oven(True, "ana")


# -- status readings -------------------------------------------------------------------------


def test_status_readings_count_days_to_the_due_date() -> None:
    devs = [device(), device(None, id="umid-2", port="/dev/y")]
    (draft,) = calibration_status(devs, datetime.date(2026, 10, 21))
    assert draft.measurement == "calibration_status"
    assert draft.fields["days_left"] == 30
    assert draft.fields["due"] == "2026-11-20"
    assert draft.fields["calibration"] == calibration_ref("umid-1", devs[0].meter)
    off = device(enabled=False)
    assert calibration_status([off], datetime.date(2026, 10, 21)) == []


async def test_the_status_loop_keeps_records_and_publishes() -> None:
    sent: list[Sequence[Draft]] = []
    kept: list[list[str]] = []

    async def accept(drafts: Sequence[Draft]) -> None:
        sent.append(drafts)

    async def remember(records: Sequence[object]) -> None:
        kept.append([getattr(r, "ref", "") for r in records])

    task = asyncio.create_task(
        run_calibration_status(
            lambda: [device()],
            accept=accept,
            site="s1",
            tz=datetime.UTC,
            remember=remember,
            interval_s=3600,
            clock_ns=lambda: T0,
        )
    )
    async with asyncio.timeout(5):
        while not sent:
            await asyncio.sleep(0.005)
    task.cancel()
    assert kept == [[calibration_ref("umid-1", device().meter)]]
    (draft,) = sent[0]
    assert draft.tags["site"] == "s1"
    assert draft.fields["days_left"] == 17


async def test_the_status_goes_out_on_a_change_and_hourly_not_every_pass() -> None:
    sent: list[Draft] = []
    clock = [T0]
    meters = [device()]

    async def accept(drafts: Sequence[Draft]) -> None:
        sent.extend(drafts)

    task = asyncio.create_task(
        run_calibration_status(
            lambda: meters,
            accept=accept,
            site="s1",
            tz=datetime.UTC,
            interval_s=0.001,
            republish_s=3600,
            clock_ns=lambda: clock[0],
        )
    )

    async def passes(n: int, step_s: float) -> None:
        for _ in range(n):
            clock[0] += round(step_s * NS)
            await asyncio.sleep(0.003)

    try:
        await passes(20, 60)  # 20 minutes, same day, same meter: once
        assert len(sent) == 1
        new = {**METER["calibration"], "certificate": "RBC-9"}  # type: ignore[dict-item]
        meters[0] = device({**METER, "calibration": new})  # a reload
        await passes(3, 60)
        assert len(sent) == 2
        assert sent[-1].fields["certificate"] == "RBC-9"
        await passes(2, 3600)  # an hour on: again, even unchanged
        assert len(sent) >= 3
    finally:
        task.cancel()


def test_oven_results_go_with_a_pruned_lot_and_records_stay(tmp_path: Path) -> None:
    store = LotRecords.open(tmp_path / "r.sqlite3", retention_years=1.0)
    try:
        dev = device()
        ref = calibration_ref(dev.id, dev.meter)
        store.write_with(lambda c: record_calibrations(c, configured_records([dev]), at_ns=T0))
        store.write([moisture(1, 11.0, ref=ref)])
        store.write_with(lambda c: set_oven(c, "L-0042", 11.2, "ana", at_ns=T0))
        assert store.prune(T0 + 370 * 86_400 * NS) == 1
        assert store.read_with(lambda c: c.execute("SELECT COUNT(*) FROM lot_oven").fetchone()) == (
            0,
        )
        # The calibration record outlives the lot (other lots may name it).
        assert store.read_with(lambda c: list(calibrations(c, [ref or ""]))) == [ref]
        store.write([moisture(2, 11.1)])  # a new lot with the same code starts clean
        record = store.record("L-0042")
        assert record is not None
        assert record.meters is None
    finally:
        store.close()


def test_the_lot_pack_carries_the_meter_evidence(tmp_path: Path) -> None:
    path = site(tmp_path, [("umid-1", METER), ("umid-2", OTHER)])
    ref1, _ = fill_two_meters(path)
    assert main(["lot", "oven", "-c", str(path), "L-0042", "11.4", "--by", "ana"]) == 0
    pack = tmp_path / "pacote"
    assert main(["lot", "pack", "-c", str(path), "L-0042", "-o", str(pack)]) == 0
    rows = read_csv((pack / "lote-L-0042.csv").read_bytes())
    assert {r["calibracao"] for r in rows if r["tipo"] == "leitura"} >= {f"{ref1} RBC-1234/26"}
    text = " ".join(
        " ".join(p.extract_text() for p in PdfReader(pack / "lote-L-0042.pdf").pages).split()
    )
    assert "Medidores e calibração" in text
    assert "11,40 % por ana" in text
    assert main(["lot", "verify-pack", str(pack)]) == 0


def test_a_meter_without_calibration_is_shown_as_such(tmp_path: Path) -> None:
    path = site(tmp_path, [("umid-1", {"make": "Tesma", "method": "curva do fabricante"})])
    cfg = load_config(path)
    ref = calibration_ref("umid-1", cfg.devices[0].meter)
    store = LotRecords.open(cfg.lot_records_path)
    try:
        store.write([moisture(1, 11.2, ref=ref)])
    finally:
        store.close()
    out = tmp_path / "l.csv"
    assert main(["lot", "report", "-c", str(path), "L-0042", "--csv", "-o", str(out)]) == 0
    (row,) = [r for r in read_csv(out.read_bytes()) if r["tipo"] == "leitura"]
    assert (row["medidor"], row["metodo"]) == ("umid-1 (Tesma)", "curva do fabricante")
    assert row["calibracao"] == ref
    assert row["calibracao_vencida"] == "sem calibração"


def test_a_moved_reading_takes_its_calibration_to_its_new_lot(tmp_path: Path) -> None:
    from coffee_telemetry.agent.lots.corrections import move_reading, parse_move

    store = LotRecords.open(tmp_path / "r.sqlite3")
    try:
        store.write([moisture(1, 11.0, ref="cal-aaaaaaaaaaaa"), moisture(2, 11.4)])
        request = parse_move({"reading": "umid-1:1", "to": "L-0043", "reason": "lote errado"})
        store.write_with(
            lambda c: move_reading(c, request, from_lot="L-0042", by="ana", source="cli", at_ns=T0)
        )
        moved = store.record("L-0043")
        left = store.record("L-0042")
    finally:
        store.close()
    assert moved is not None
    assert moved.meters is not None
    assert moved.meters.refs == (("umid-1", 1, "cal-aaaaaaaaaaaa"),)
    assert left is not None
    assert left.meters is None


def test_check_config_names_each_meter_and_its_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site(tmp_path, [("umid-1", METER)])
    assert main(["check-config", str(path)]) == 0
    ref = calibration_ref("umid-1", load_config(path).devices[0].meter)
    assert f"Gehaka G650i nº SN 0042-A; calibration due 2026-11-20; id {ref}" in (
        capsys.readouterr().out
    )
