"""``lot verify``: a report's copy checked against the lot's record; the CLI and the API."""

from __future__ import annotations

import asyncio
import io
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.config import load_config
from coffee_telemetry.agent.lots.export import (
    lot_report_pdf,
    read_csv,
    read_trailer,
    record_sha256,
    verify_report,
)
from coffee_telemetry.agent.lots.model import LotRecord
from coffee_telemetry.agent.lots.records import LotRecords, configured_thresholds, open_lot_records
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.server import make_web_app, open_web
from tests.agent.lots.lotfixtures import T0_NS, drying_readings, make_record
from tests.agent.lots.test_records import alert, assignment, moisture, weighment
from tests.agent.web.test_server import TOKEN, make_config
from tests.services.net import free_port

RECORD = make_record(readings=drying_readings(me=9, m0=24, k_per_h=0.1, hours=12, every_min=10))


@pytest.fixture(scope="module")
def report() -> bytes:
    return lot_report_pdf(RECORD, site_name="Cooperativa", generated_ns=T0_NS)


def load(code: str) -> LotRecord | None:
    return RECORD if code == "L-0042" else None


def test_an_intact_copy_is_accepted(report: bytes) -> None:
    result = verify_report(report, load)
    assert result.ok
    assert result.status == "intact"
    assert result.code == "L-0042"
    assert result.report_sha256 == result.record_sha256 == record_sha256(RECORD)
    assert "íntegro" in result.describe()


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_a_changed_byte_is_detected(report: bytes, where: float) -> None:
    i = int(len(report) * where)
    changed = report[:i] + bytes([report[i] ^ 0x01]) + report[i + 1 :]
    result = verify_report(changed, load)
    assert result.status == "modified"
    assert "ALTERADO" in result.describe()


def test_a_changed_value_in_the_text_is_detected(report: bytes) -> None:
    """Editing the visible text (here the site name in the metadata) breaks the file hash."""
    assert b"Cooperativa" in report
    changed = report.replace(b"Cooperativa", b"Cooperativo", 1)
    assert verify_report(changed, load).status == "modified"


def test_edits_of_the_check_line_itself_are_detected(report: bytes) -> None:
    trailer = read_trailer(report)
    assert trailer is not None
    other = "0" * 64
    assert (
        verify_report(report.replace(trailer.data_sha256.encode(), other.encode()), load).status
        == "modified"
    )
    swapped = report.replace(b"lot=L-0042", b"lot=L-0043")
    assert verify_report(swapped, load).status == "modified"


def test_cut_or_foreign_files_are_not_reports(report: bytes) -> None:
    assert verify_report(report[:-10], load).status == "not_a_report"
    assert verify_report(report + b"\n", load).status == "not_a_report"
    assert verify_report(b"%PDF-1.4\n%%EOF\n", load).status == "not_a_report"
    assert verify_report(b"", load).status == "not_a_report"


def test_unknown_lot_and_changed_record(report: bytes) -> None:
    assert verify_report(report, lambda code: None).status == "unknown_lot"
    later = make_record(readings=drying_readings(me=9, m0=24, k_per_h=0.1, hours=13, every_min=10))
    result = verify_report(report, lambda code: later)
    assert result.status == "record_changed"
    assert not result.ok
    assert result.record_sha256 == record_sha256(later)


def test_the_check_line_leaves_the_pdf_readable(report: bytes) -> None:
    reader = PdfReader(io.BytesIO(report))
    assert "Relatório do lote L-0042" in reader.pages[0].extract_text()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2048), cut=st.integers(min_value=0, max_value=4096))
def test_fuzz_any_bytes_give_a_verdict(report: bytes, data: bytes, cut: int) -> None:
    for blob in (data, report[:cut] + data, report[: len(report) - cut] + data):
        result = verify_report(blob, load)
        assert result.status in (
            "intact",
            "modified",
            "record_changed",
            "unknown_lot",
            "not_a_report",
        )
        if result.ok:
            assert blob == report


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_fuzz_any_single_change_is_never_intact(report: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(report) - 1))
    byte = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != report[i]))
    changed = report[:i] + bytes([byte]) + report[i + 1 :]
    assert not verify_report(changed, load).ok


# -- the CLI and the API, on a real lot record store -----------------------------------


def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    path.write_text(
        f'[site]\nid = "s1"\nname = "Cooperativa Três Pontas"\n'
        f'[agent]\ndata_dir = "{data_dir}"\n'
        "[lots]\ntarget_moisture_pct = 11.5\n",
        encoding="utf-8",
    )
    return path


def fill(path: Path, *, extra: int = 0) -> None:
    cfg = load_config(path)
    store = LotRecords.open(cfg.lot_records_path, thresholds=configured_thresholds(cfg))
    try:
        store.write(
            [
                assignment(1, "set"),
                *[moisture(i, 11.0 + i / 10) for i in range(1, 21 + extra)],
                weighment(1, 1000.0),
                alert(1, "firing"),
                moisture(40, 12.0, lot="L/7"),
            ]
        )
    finally:
        store.close()


def test_cli_report_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = str(site_file(tmp_path))
    fill(Path(site))
    out = tmp_path / "L-0042.pdf"
    assert main(["lot", "report", "-c", site, "L-0042", "-o", str(out)]) == 0
    text = "\n".join(p.extract_text() for p in PdfReader(out).pages)
    assert "Cooperativa Três Pontas" in text
    assert "Leituras: 20" in text
    assert "Última: 13,0 %" in text
    assert main(["lot", "verify", "-c", site, str(out)]) == 0
    assert "íntegro" in capsys.readouterr().out

    changed = tmp_path / "changed.pdf"
    data = out.read_bytes()
    changed.write_bytes(data[:1000] + bytes([data[1000] ^ 0x20]) + data[1001:])
    assert main(["lot", "verify", "-c", site, str(changed), "--lang", "en"]) == 1
    assert "MODIFIED" in capsys.readouterr().out

    fill(Path(site), extra=1)  # a new reading of the lot after the report
    assert main(["lot", "verify", "-c", site, str(out)]) == 1
    assert "mudou" in capsys.readouterr().out

    assert main(["lot", "report", "-c", site, "L-9999", "-o", str(tmp_path / "x.pdf")]) == 1
    assert "unknown lot" in capsys.readouterr().err
    assert not (tmp_path / "x.pdf").exists()
    assert main(["lot", "verify", "-c", site, str(tmp_path / "missing.pdf")]) == 1


def test_cli_csv_of_a_lot_and_of_a_date_range(tmp_path: Path) -> None:
    site = str(site_file(tmp_path))
    fill(Path(site))
    one = tmp_path / "one.csv"
    assert main(["lot", "report", "-c", site, "L-0042", "--csv", "-o", str(one)]) == 0
    rows = read_csv(one.read_bytes())
    assert one.read_bytes().startswith(b"\xef\xbb\xbf")
    assert [r["tipo"] for r in rows].count("leitura") == 20
    assert [r["tipo"] for r in rows].count("pesagem") == 1
    assert rows[0]["umidade_pct"] == "11,1"  # pt-BR: decimal comma by default
    english = tmp_path / "en.csv"
    assert (
        main(["lot", "report", "-c", site, "L-0042", "--csv", "--lang", "en", "-o", str(english)])
        == 0
    )
    assert read_csv(english.read_bytes())[0]["moisture_pct"] == "11.1"

    day = "2026-12-01"
    both = tmp_path / "range.csv"
    argv = ["lot", "report", "-c", site, "--csv", "--from", "2026-01-01", "--to", "2027-12-31"]
    assert main([*argv, "-o", str(both)]) == 0
    assert {r["lote"] for r in read_csv(both.read_bytes())} == {"L-0042", "L/7"}
    assert main(["lot", "report", "-c", site, "--csv", "--from", "2027-01-01", "--to", day]) == 2
    assert main(["lot", "report", "-c", site, "--from", day, "--to", day]) == 2  # PDF of a range


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession, Path]]:
    cfg = make_config(tmp_path)
    path = tmp_path / "r.sqlite3"
    async with open_lot_records(path) as records:
        await records.write(
            [
                assignment(1, "set"),
                *[moisture(i, 11.0 + i / 10) for i in range(1, 21)],
                weighment(1, 1000.0),
                moisture(40, 12.0, lot="L/7"),
            ]
        )
        app = make_web_app(
            WebDeps(cfg=cfg), token=TOKEN, session_key=b"k" * 32, lot_records=records
        )
        port = free_port()
        async with open_web(app, host="127.0.0.1", port=port), aiohttp.ClientSession() as session:
            yield f"http://127.0.0.1:{port}", session, path


async def test_api_report_pdf_and_csv(server: tuple[str, aiohttp.ClientSession, Path]) -> None:
    base, session, path = server
    async with session.get(base + "/api/lots/L-0042/report.pdf") as r:
        assert r.status == 200
        assert r.content_type == "application/pdf"
        assert r.headers["Content-Disposition"] == 'attachment; filename="lote-L-0042.pdf"'
        pdf = await r.read()
    store = LotRecords.open(path)
    try:
        result = await asyncio.to_thread(verify_report, pdf, store.record)
    finally:
        store.close()
    assert result.status == "intact"
    assert "Relatório do lote L-0042" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    async with session.get(base + "/api/lots/L-0042/report.pdf?lang=en") as r:
        assert "Lot report L-0042" in PdfReader(io.BytesIO(await r.read())).pages[0].extract_text()

    async with session.get(base + "/api/lots/L-0042/report.csv") as r:
        assert r.status == 200
        assert r.content_type == "text/csv"
        assert r.headers["Content-Disposition"] == 'attachment; filename="lote-L-0042.csv"'
        rows = read_csv(await r.read())
    assert len(rows) == 21
    assert rows[0]["umidade_pct"] == "11,1"
    async with session.get(base + "/api/lots/L-0042/report.csv?lang=en&decimal_comma=0") as r:
        assert read_csv(await r.read())[0]["moisture_pct"] == "11.1"


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/api/lots/L-9999/report.pdf", 404, "unknown lot 'L-9999'"),
        ("/api/lots/L-9999/report.csv", 404, "unknown lot 'L-9999'"),
        ("/api/lots/" + urllib.parse.quote("<script>") + "/report.pdf", 400, "not a lot code"),
        ("/api/lots/" + "A" * 40 + "/report.csv", 400, "not a lot code"),
        ("/api/lots/L-0042/report.pdf?lang=fr", 400, "lang must be pt-BR or en"),
        ("/api/lots/L-0042/report.csv?decimal_comma=yes", 400, "decimal_comma must be 0 or 1"),
        ("/api/lots/L-0042/report.csv?lang=en&lang=en", 400, "more than once"),
        ("/api/lots/L-0042/report.pdf?x=1", 400, "unknown parameter"),
    ],
)
async def test_api_bad_requests_are_clear(
    server: tuple[str, aiohttp.ClientSession, Path], path: str, status: int, error: str
) -> None:
    base, session, _ = server
    async with session.get(base + path) as r:
        assert r.status == status
        body = await r.json()
    assert body["ok"] is False
    assert error in body["error"]


async def test_api_lot_code_with_a_slash(server: tuple[str, aiohttp.ClientSession, Path]) -> None:
    base, session, _ = server
    async with session.get(base + "/api/lots/L%2F7/report.pdf") as r:
        assert r.status == 200
        assert r.headers["Content-Disposition"] == 'attachment; filename="lote-L_7.pdf"'
        trailer = read_trailer(await r.read())
    assert trailer is not None
    assert trailer.code == "L/7"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    code=st.text(max_size=40),
    params=st.dictionaries(
        st.sampled_from(["lang", "decimal_comma", "x", "lang\x00"]),
        st.text(max_size=12),
        max_size=3,
    ),
    kind=st.sampled_from(["pdf", "csv"]),
)
async def test_fuzz_report_requests_are_answered_or_refused(
    server: tuple[str, aiohttp.ClientSession, Path],
    code: str,
    params: dict[str, str],
    kind: str,
) -> None:
    base, session, _ = server
    url = (
        f"{base}/api/lots/{urllib.parse.quote(code, safe='')}/report.{kind}"
        f"?{urllib.parse.urlencode(params)}"
    )
    async with session.get(url) as r:
        assert r.status in (200, 400, 404), r.status
        # A code that is empty, "." or "..", or has { or }, never reaches the route: the
        # router's own 404 (text).
        if r.status != 200 and r.content_type == "application/json":
            body = await r.json()
            assert body["ok"] is False
            assert body["error"]
        elif r.status == 404:
            assert code.strip(".") == "" or "{" in code or "}" in code
