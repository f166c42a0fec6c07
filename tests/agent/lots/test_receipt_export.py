"""The intake receipt, the dryer and the bags hulled in a lot's CSV and PDF report."""

from __future__ import annotations

import dataclasses
import io

from pypdf import PdfReader

from coffee_telemetry.agent.lots.export import (
    lot_report_pdf,
    read_csv,
    record_sha256,
    records_csv,
)
from coffee_telemetry.agent.lots.model import LotDrying, LotReading, LotReceipt, LotRecord
from tests.agent.lots.lotfixtures import T0_NS, make_record

RECEIPT = LotReceipt(
    member="M-77",
    invoice="000.123.456",
    sacks=40,
    gross_kg=2450.5,
    net_kg=2400.0,
    weight_source="entered",
    stack="Pilha 3 / Fila B",
    updated_by="ana",
    updated_ns=T0_NS,
)


def _record() -> LotRecord:
    readings = (LotReading(T0_NS, 1, "umid-1", "recepcao", 11.0),)
    return dataclasses.replace(
        make_record(readings=readings),
        receipt=RECEIPT,
        drying=LotDrying(T0_NS - 86_400_000_000_000, "mechanical", "ana", "cli", T0_NS),
        hulled_bags=37.5,
    )


def test_csv_carries_the_receipt_on_every_row() -> None:
    rows = read_csv(records_csv([_record()], decimal_comma=True))
    assert len(rows) == 4  # one reading, three weighments
    for row in rows:
        assert (row["membro"], row["nota_fiscal"], row["sacas_recebidas"]) == (
            "M-77",
            "000.123.456",
            "40",
        )
        assert (row["bruto_recebido_kg"], row["liquido_recebido_kg"]) == ("2450,5", "2400,0")
        assert (row["origem_peso"], row["pilha"]) == ("entered", "Pilha 3 / Fila B")
        assert (row["fim_secagem_utc"], row["secador"]) == ("2026-11-02T12:00:00Z", "mechanical")
        assert row["sacas_beneficiadas"] == "37,5"
    english = read_csv(records_csv([_record()], lang="en"))
    assert (english[0]["member"], english[0]["bags_hulled"]) == ("M-77", "37.5")


def test_csv_without_a_receipt_has_empty_cells() -> None:
    rows = read_csv(records_csv([make_record()]))
    assert rows[0]["membro"] == rows[0]["sacas_beneficiadas"] == rows[0]["secador"] == ""


def test_pdf_shows_the_receipt_and_hulling() -> None:
    pdf = lot_report_pdf(_record(), site_name="Coop", generated_ns=T0_NS)
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    for expected in (
        "Recibo de entrada",
        "Membro (produtor): M-77",
        "Nota fiscal: 000.123.456",
        "Sacas recebidas: 40",
        "Peso bruto recebido: 2.450,5 kg (informado)",
        "Pilha: Pilha 3 / Fila B",
        "Secagem e beneficiamento",
        "secador mecânico",
        "Sacas beneficiadas: 37,5",
    ):
        assert expected in text, expected
    english = lot_report_pdf(_record(), site_name="Coop", generated_ns=T0_NS, lang="en")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(english)).pages)
    assert "Intake receipt" in text
    assert "Bags hulled: 37.5" in text


def test_the_receipt_is_part_of_the_checked_data() -> None:
    """An edited receipt changes the record's hash; a lot without one keeps its old hash."""
    record = _record()
    changed = dataclasses.replace(record, receipt=dataclasses.replace(RECEIPT, sacks=41))
    assert record_sha256(record) != record_sha256(changed)
    plain = make_record()
    assert record_sha256(plain) == record_sha256(dataclasses.replace(plain, receipt=None))
