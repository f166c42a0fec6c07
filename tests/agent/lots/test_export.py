"""CSV and PDF exports of lot records (``agent.lots.export``)."""

from __future__ import annotations

import dataclasses
import io
import math
import re
import shutil
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pypdf import PdfReader

from coffee_telemetry.agent.lots.drying import estimate_for_record
from coffee_telemetry.agent.lots.export import (
    canonical_json,
    format_pct,
    lot_report_pdf,
    printable,
    read_csv,
    read_trailer,
    record_sha256,
    records_csv,
)
from coffee_telemetry.agent.lots.model import LotEvent, LotReading, LotRecord
from tests.agent.lots.lotfixtures import (
    ARABIC,
    H_NS,
    HOSTILE_PRODUCER,
    RTL,
    T0_NS,
    drying_readings,
    make_record,
)

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "artifacts" / "lot-report"
SP = ZoneInfo("America/Sao_Paulo")
HOSTILE_NOTE = '=HYPERLINK("http://x") ; "aspas", vírgula\nsegunda linha \u202eLOT-OVERRIDE'
HOSTILE_EVENTS = (
    LotEvent(T0_NS, "assigned", "lot L-0042 set on secador", "maria", "cli"),
    LotEvent(T0_NS + H_NS, "alert", "wet lot: 24.2 % >= 13.0 %", "agent", "rules",
             {"rule": "wet_lot", "value": 24.2}),
    LotEvent(T0_NS + 2 * H_NS, "ack", "<script>alert(1)</script> " + "x" * 150, "joão", "web"),
    LotEvent(T0_NS + 3 * H_NS, "resolved", "back under the threshold", "agent", "rules"),
)  # fmt: skip


def big_record() -> LotRecord:
    """5 000 readings of a drying run (last one 11,8 %), 200 weighments, hostile strings."""
    run = drying_readings(me=9.0, m0=24.0, k_per_h=0.1, hours=4999 / 6, every_min=10)[:4999]
    last = LotReading(
        ts_ns=run[-1].ts_ns + 600_000_000_000, seq=5000, device="medidor-bancada",
        station="recepcao", moisture_pct=11.8, temperature_c=24.5, sample_id="A-77",
        audit="GEHAKA G650\nUMIDADE 11.8%",
    )  # fmt: skip
    return make_record(
        readings=(*run, last),
        weighments=200,
        producer=HOSTILE_PRODUCER,
        note=HOSTILE_NOTE,
        events=HOSTILE_EVENTS,
    )


@pytest.fixture(scope="module")
def big() -> tuple[LotRecord, bytes, str]:
    record = big_record()
    pdf = lot_report_pdf(
        record,
        site_name="Cooperativa dos Cafeicultores de Três Pontas",
        generated_ns=T0_NS + 900 * H_NS,
        tz=SP,
        drying=estimate_for_record(record),
    )
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return record, pdf, text


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_pdf_text_has_the_lot_in_portuguese(big: tuple[LotRecord, bytes, str]) -> None:
    record, _pdf, text = big
    for expected in (
        "Relatório do lote L-0042",
        "Cooperativa dos Cafeicultores de Três Pontas",
        "Leituras: 5.000",
        "Última: 11,8 %",
        "Limite de lote úmido: 13,0 %",
        "Veredito: ÚMIDO",
        "Máxima: 24,0 %",
        "Sacas declaradas: 42",
        "Tipo de café: pergaminho",
        "Total líquido: 265.550,0 kg (200)",
        "estável",
        "alerta reconhecido",
        "joão / web",
        "Umidade ao longo do tempo",
        "medidor-bancada",
        "Horários em America/Sao_Paulo.",
        "Gerado em",
        "A lista completa das leituras está na exportação CSV do lote.",
        "Estimativa de secagem",
        "a umidade alvo já foi atingida",
        "Umidade alvo: 11,5 %",
    ):
        assert expected in text, expected
    mean = record.summary.mean_moisture_pct
    assert mean is not None
    assert f"Média: {format_pct(mean, 'pt-BR')}" in text
    assert "11.8" not in text  # no English decimal point slipped through


def test_pdf_hostile_strings_are_shown_whole(big: tuple[LotRecord, bytes, str]) -> None:
    _record, _pdf, text = big
    flat = squeeze(text)
    # 200+ characters of producer name, wrapped over lines but all there, in order.
    assert len(HOSTILE_PRODUCER) > 200
    # Right-to-left letters are drawn unshaped; pypdf reads them back in either order.
    before, after = HOSTILE_PRODUCER.replace(RTL, "<U+200F>").split(ARABIC)
    assert squeeze(before) + ARABIC + squeeze(after) in flat or (
        squeeze(before) + ARABIC[::-1] + squeeze(after) in flat
    )
    assert "<script>alert('x')</script>" in text
    assert "<U+200F>" in text
    assert "<U+202E>" in text
    assert RTL not in text
    assert "\u202e" not in text
    assert "☕" in text
    assert "Açaí" in text
    assert squeeze("<script>alert(1)</script> " + "x" * 150) in flat
    assert squeeze('=HYPERLINK("http://x") ; "aspas", vírgula segunda linha') in flat


def test_pdf_carries_the_data_hash(big: tuple[LotRecord, bytes, str]) -> None:
    record, pdf, text = big
    digest = record_sha256(record)
    assert digest in text
    meta = PdfReader(io.BytesIO(pdf)).metadata
    assert meta is not None
    assert str(meta["/Keywords"]) == f"coffee-telemetry-lot-report lot=L-0042 data-sha256={digest}"
    assert str(meta["/Title"]) == "Relatório do lote L-0042"
    trailer = read_trailer(pdf)
    assert trailer is not None
    assert trailer.file_ok
    assert (trailer.code, trailer.data_sha256) == ("L-0042", digest)


def test_pdf_in_english() -> None:
    record = make_record(readings=drying_readings(me=9, m0=24, k_per_h=0.1, hours=12, every_min=10))
    pdf = lot_report_pdf(
        record, site_name="Coop", generated_ns=T0_NS + 20 * H_NS, lang="en",
        drying=estimate_for_record(record),
    )  # fmt: skip
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "Lot report L-0042" in text
    assert "Wet-lot threshold: 13.0 %" in text
    assert "Drying estimate" in text
    assert "estimate from the exponential fit" in text
    assert "Total net: 2,949.0 kg (3)" in text
    assert "Time remaining: 5.9 h" in text  # ln(15 / 2.5) / 0.1 h - 12 h, noise-free
    assert "Expected to reach the target: 2026-11-04 05:55" in text
    assert "Fitted equilibrium moisture: 9.0 %" in text
    assert "Relatório" not in text


def test_pdf_of_an_empty_lot() -> None:
    record = make_record(readings=(), weighments=0, producer=None, note=None, events=())
    pdf = lot_report_pdf(record, site_name="", generated_ns=T0_NS)
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "sem leituras de umidade" in text
    assert "Nenhuma pesagem registrada." in text
    assert "Nenhum evento registrado." in text


def test_pdf_rendered_to_png(big: tuple[LotRecord, bytes, str]) -> None:
    """Rendered with poppler's pdftoppm, kept under artifacts/lot-report/ to look at."""
    pdftoppm = shutil.which("pdftoppm")
    assert pdftoppm, "pdftoppm is missing: install poppler-utils (scripts/install-system-deps)"
    _record, pdf, _text = big
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("lote-L-0042*"):
        old.unlink()
    (ARTIFACTS / "lote-L-0042.pdf").write_bytes(pdf)
    subprocess.run(
        [pdftoppm, "-r", "70", "-png", str(ARTIFACTS / "lote-L-0042.pdf"),
         str(ARTIFACTS / "lote-L-0042")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    pages = sorted(ARTIFACTS.glob("lote-L-0042-*.png"))
    assert len(pages) == len(PdfReader(io.BytesIO(pdf)).pages) >= 2
    with Image.open(pages[0]) as first:
        gray = first.convert("L")
        histogram = gray.histogram()
        dark = sum(histogram[:128])
        assert 0.005 < dark / (gray.width * gray.height) < 0.5  # text and chart, not blank
        # The chart's lines are in colour (devices, threshold): some pixels are not gray.
        raw = first.convert("RGB").tobytes()
        coloured = sum(
            1 for i in range(0, len(raw), 3) if max(raw[i : i + 3]) - min(raw[i : i + 3]) > 80
        )
        assert coloured > 200


def test_printable_shows_what_the_font_cannot_draw() -> None:
    drawable = frozenset(ord(c) for c in "abc ")
    assert printable("a\u200fb\nc\x00", drawable) == "a<U+200F>b c<U+0000>"
    assert printable("a😀", drawable) == "a<U+1F600>"


# -- CSV ------------------------------------------------------------------------------------


def test_csv_round_trip_with_decimal_comma() -> None:
    record = big_record()
    data = records_csv([record], decimal_comma=True, tz=SP)
    assert data.startswith(b"\xef\xbb\xbf")
    first_line = data[3:].split(b"\r\n", 1)[0].decode()
    assert first_line.startswith("lote;tipo;hora_local;hora_utc;dispositivo;estacao;umidade_pct")
    rows = read_csv(data)
    readings = [r for r in rows if r["tipo"] == "leitura"]
    weighments = [r for r in rows if r["tipo"] == "pesagem"]
    assert len(readings) == 5000
    assert len(weighments) == 200
    assert [float(r["umidade_pct"].replace(",", ".")) for r in readings] == [
        r.moisture_pct for r in record.readings
    ]
    assert readings[-1]["umidade_pct"] == "11,8"
    assert readings[-1]["temperatura_c"] == "24,5"
    assert readings[-1]["ticket"] == "GEHAKA G650\nUMIDADE 11.8%"
    assert weighments[0]["liquido_kg"] == "979,5"
    assert weighments[0]["gatilho"] == "estável"
    assert {r["produtor"] for r in rows} == {HOSTILE_PRODUCER}
    assert readings[0]["hora_local"] == "2026-11-03 09:00:00"
    assert readings[0]["hora_utc"] == "2026-11-03T12:00:00.000Z"
    stamps = [r["hora_utc"] for r in rows]
    assert stamps == sorted(stamps)


def test_csv_with_points_and_commas_in_english() -> None:
    record = make_record(readings=drying_readings(me=9, m0=24, k_per_h=0.1, hours=2, every_min=30))
    data = records_csv(
        [
            record,
            dataclasses.replace(record, summary=dataclasses.replace(record.summary, code="L-0043")),
        ],
        lang="en",
    )
    text = data.decode("utf-8-sig")
    assert text.startswith("lot,kind,local_time,utc_time,device,station,moisture_pct,")
    rows = read_csv(data)
    assert {r["lot"] for r in rows} == {"L-0042", "L-0043"}
    assert [float(r["moisture_pct"]) for r in rows if r["kind"] == "reading"][:5] == [
        r.moisture_pct for r in record.readings
    ]
    assert "," in rows[0]["producer"] or rows[0]["producer"] == "Sítio Boa Vista"


def test_csv_neutralises_formulas() -> None:
    evil = ("=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tTAB", "'quoted", 'plain, with "quotes"')
    record = make_record(
        readings=tuple(
            LotReading(ts_ns=T0_NS + i, seq=i, device=d, station="s", moisture_pct=-1.5 + i,
                       sample_id=d)
            for i, d in enumerate(evil)
        ),
        weighments=0,
        producer="=cmd|' /C calc'!A0",
    )  # fmt: skip
    data = records_csv([record], decimal_comma=True)
    text = data.decode("utf-8-sig")
    for line in text.split("\r\n")[1:]:
        for cell in re.split(r";(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", line):
            cell = cell.strip('"')
            if cell and cell[0] in "=+@\t":
                pytest.fail(f"formula-like cell {cell!r}")
    rows = read_csv(data)
    assert [r["dispositivo"] for r in rows] == list(evil)
    assert [r["amostra"] for r in rows] == list(evil)
    assert rows[0]["produtor"] == "=cmd|' /C calc'!A0"
    assert rows[0]["umidade_pct"] == "-1,5"  # numbers are never prefixed
    assert "'=1+1" in text
    assert "''quoted" in text


text_st = st.text(max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    device=text_st,
    producer=st.one_of(st.none(), text_st),
    audit=st.one_of(st.none(), text_st),
    value=st.floats(allow_nan=False, allow_infinity=False),
    decimal_comma=st.booleans(),
)
def test_csv_round_trips_any_text(
    device: str, producer: str | None, audit: str | None, value: float, decimal_comma: bool
) -> None:
    reading = LotReading(
        ts_ns=T0_NS, seq=1, device=device, station="s", moisture_pct=value, audit=audit
    )
    record = make_record(readings=(reading,), weighments=0, producer=producer)
    rows = read_csv(records_csv([record], decimal_comma=decimal_comma))
    assert len(rows) == 1
    # The csv module reads a lone \r inside a quoted field back as written.
    assert rows[0]["dispositivo"] == device
    assert rows[0]["produtor"] == (producer or "")
    assert rows[0]["ticket"] == (audit or "")
    number = rows[0]["umidade_pct"]
    assert float(number.replace(",", ".") if decimal_comma else number) == value


def test_canonical_json_is_stable_and_documented() -> None:
    record = make_record(readings=drying_readings(me=9, m0=24, k_per_h=0.1, hours=1, every_min=30))
    doc = canonical_json(record)
    assert doc.startswith(b'{"format":"coffee-telemetry/lot-record/1","record":{')
    assert b" " not in doc.replace(b"S\xc3\xadtio Boa Vista", b"").split(b'"note"')[0][:80]
    assert "Sítio Boa Vista".encode() in doc  # not \u-escaped
    assert record_sha256(record) == record_sha256(dataclasses.replace(record))
    changed = dataclasses.replace(record, readings=record.readings[:-1])
    assert record_sha256(changed) != record_sha256(record)
    # Defaults are left out: a record says only what it has.
    assert b'"temperature_c"' not in doc
    assert b'"time_quality"' not in doc
    nan = dataclasses.replace(record, threshold_pct=math.nan)
    assert b'"threshold_pct":"NaN"' in canonical_json(nan)
