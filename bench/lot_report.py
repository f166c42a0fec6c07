"""Lot report benchmark: PDF and CSV of a lot with 5 000 readings and 200 weighments.

Prints one JSON document with the machine (cores, load average before and after) and:

* ``pdf``: ``agent.lots.export.lot_report_pdf`` for one synthetic lot: ``--readings``
  moisture readings of a drying run from two meters (0.2 pp noise), ``--weighments``
  weighments, 50 timeline events, a 200-character producer name with accents,
  ``<script>``, a right-to-left mark and an emoji; with its drying estimate. ``first_s``
  is the first report of the process (imports fpdf2, reads the fonts); then
  ``--repeats`` more: median, p95 and max wall time (``time.perf_counter``) and median
  process CPU (``time.process_time``); the size in bytes and pages.
* ``parts``: median seconds of the pieces a report is made of: the record's SHA-256
  (canonical JSON), the drying fit, the CSV (and its size).
* ``libraries`` (``--compare``): the same small document (Portuguese text in DejaVu
  Sans, a 5 000-point vector line, a 200-row table) in fpdf2 and in reportlab, best of
  five each, time and size: how the PDF library was chosen. Needs reportlab installed
  (``pip install reportlab``; not a dependency of the agent).

Usage: ``python bench/lot_report.py [--readings 5000] [--weighments 200] [--repeats 20]
[--compare]``. Not a test: numbers go in the README. The target is a PDF in under 1 s.
Other processes share the cores; the load average is printed so a slow run can be
told from a busy machine.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coffee_telemetry.agent.lots.drying import estimate_for_record  # noqa: E402
from coffee_telemetry.agent.lots.export import (  # noqa: E402
    FONT_DIRS,
    lot_report_pdf,
    record_sha256,
    records_csv,
)
from coffee_telemetry.agent.lots.model import (  # noqa: E402
    EventKind,
    LotDetails,
    LotEvent,
    LotReading,
    LotRecord,
    LotSummary,
    LotWeighment,
)

T0_NS = 1_793_707_200_000_000_000
PRODUCER = (
    "Sítio Boa Vista <script>alert(1)</script> \u200f☕ "
    + "Associação dos Produtores de Café da Região de Três Corações " * 3
)[:200]


def synthetic_lot(readings: int, weighments: int) -> LotRecord:
    rnd = random.Random(7)
    rows = tuple(
        LotReading(
            ts_ns=T0_NS + i * 60_000_000_000,
            seq=i,
            device="secador-1" if i % 10 else "medidor-bancada",
            station="secador",
            moisture_pct=round(9.0 + 15.0 * math.exp(-0.1 * i / 60) + rnd.gauss(0, 0.2), 1),
            temperature_c=38.0,
            sample_id=f"A{i}",
        )
        for i in range(readings)
    )
    ws = tuple(
        LotWeighment(
            ts_ns=T0_NS + i * 300_000_000_000,
            seq=i,
            device="balanca-1",
            station="recepcao",
            gross_kg=1000.0 + i,
            tare_kg=20.5,
            net_kg=979.5 + i,
            trigger="estável",
        )
        for i in range(weighments)
    )
    kinds: tuple[EventKind, ...] = ("assigned", "alert", "ack", "resolved", "details")
    events = tuple(
        LotEvent(T0_NS + i * 3_600_000_000_000, kind, f"event {i} of the lot", "maria", "web")
        for i, kind in enumerate(kinds * 10)
    )
    values = [r.moisture_pct for r in rows]
    summary = LotSummary(
        code="L-0042",
        first_ns=T0_NS,
        last_ns=rows[-1].ts_ns,
        stations=("recepcao", "secador"),
        devices=("balanca-1", "medidor-bancada", "secador-1"),
        product="pergaminho",
        readings=len(rows),
        mean_moisture_pct=sum(values) / len(values),
        min_moisture_pct=min(values),
        max_moisture_pct=max(values),
        last_moisture_pct=values[-1],
        weighments=len(ws),
        net_kg=sum(w.net_kg for w in ws),
        verdict="wet",
        producer=PRODUCER,
    )
    return LotRecord(
        summary=summary,
        details=LotDetails(producer=PRODUCER, bags=42, product_type="pergaminho", note="nota"),
        readings=rows,
        weighments=ws,
        events=events,
        threshold_pct=13.0,
    )


def timed(fn: object, repeats: int) -> list[float]:
    assert callable(fn)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def compare_libraries() -> dict[str, object]:
    font = str(FONT_DIRS[0] / "DejaVuSans.ttf")
    points = [(i, 12 + 5 * math.exp(-i / 1000) + 0.1 * math.sin(i)) for i in range(5000)]
    rows = [
        (f"03/11/2026 10:{i % 60:02d}", f"{1000 + i * 3.5:.1f}", "20,5", "980,0")
        for i in range(200)
    ]
    text = "Relatório do lote L-0042 — Sítio Boa Vista, umidade média 11,8 %"

    def with_fpdf2() -> bytes:
        from fpdf import FPDF

        pdf = FPDF()
        pdf.add_font("DejaVu", "", font)
        pdf.set_font("DejaVu", size=10)
        pdf.add_page()
        pdf.multi_cell(0, 5, text)
        pdf.polyline([(20 + 170 * i / 5000, 120 - (y - 10) * 10) for i, y in points])
        pdf.set_y(130)
        for row in rows:
            for cell in row:
                pdf.cell(45, 5, cell, border=1)
            pdf.ln()
        return bytes(pdf.output())

    def with_reportlab() -> bytes:
        from reportlab.pdfbase import pdfmetrics  # type: ignore[import-untyped]
        from reportlab.pdfbase.ttfonts import TTFont  # type: ignore[import-untyped]
        from reportlab.pdfgen import canvas  # type: ignore[import-untyped]

        pdfmetrics.registerFont(TTFont("DejaVu", font))
        out = io.BytesIO()
        c = canvas.Canvas(out)
        c.setFont("DejaVu", 10)
        c.drawString(50, 800, text)
        path = c.beginPath()
        path.moveTo(50, 500)
        for i, y in points:
            path.lineTo(50 + 500 * i / 5000, 500 + (y - 10) * 20)
        c.drawPath(path)
        y = 450
        for row in rows:
            for j, cell in enumerate(row):
                c.drawString(50 + 120 * j, y, cell)
            y -= 14
            if y < 50:
                c.showPage()
                c.setFont("DejaVu", 10)
                y = 800
        c.save()
        return out.getvalue()

    result: dict[str, object] = {}
    for name, make in (("fpdf2", with_fpdf2), ("reportlab", with_reportlab)):
        try:
            make()
        except ImportError:
            result[name] = "not installed"
            continue
        times = timed(make, 5)
        result[name] = {"best_s": round(min(times), 4), "bytes": len(make())}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=5000)
    parser.add_argument("--weighments", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    record = synthetic_lot(args.readings, args.weighments)
    drying = estimate_for_record(record)

    def make() -> bytes:
        return lot_report_pdf(record, site_name="Cooperativa", generated_ns=T0_NS, drying=drying)

    start = time.perf_counter()
    body = make()
    first_s = time.perf_counter() - start
    walls, cpus = [], []
    for _ in range(args.repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        make()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    from pypdf import PdfReader

    csv_body = records_csv([record], decimal_comma=True)
    doc: dict[str, object] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.machine(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "lot": {
            "readings": args.readings,
            "weighments": args.weighments,
            "events": len(record.events),
            "drying": drying.status,
        },
        "pdf": {
            "first_s": round(first_s, 3),
            "median_s": round(statistics.median(walls), 3),
            "p95_s": round(p95(walls), 3),
            "max_s": round(max(walls), 3),
            "median_cpu_s": round(statistics.median(cpus), 3),
            "bytes": len(body),
            "pages": len(PdfReader(io.BytesIO(body)).pages),
        },
        "parts": {
            "sha256_s": round(statistics.median(timed(lambda: record_sha256(record), 5)), 4),
            "drying_fit_s": round(
                statistics.median(timed(lambda: estimate_for_record(record), 5)), 4
            ),
            "csv_s": round(
                statistics.median(timed(lambda: records_csv([record], decimal_comma=True), 5)),
                4,
            ),
            "csv_bytes": len(csv_body),
        },
    }
    if args.compare:
        doc["libraries"] = compare_libraries()
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
