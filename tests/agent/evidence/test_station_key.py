"""The box's public key where people meet it: every lot report (CSV and PDF) and the
Dispositivos page, and always the key that signs the box's lot packs.

The reports are read back with independent readers (pypdf for the PDF, the csv module
for the CSV); the key they print is checked against the manifest ``lot pack`` wrote and
the fingerprint ``lot verify-pack`` reports.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st
from pypdf import PdfReader

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.config import load_config
from coffee_telemetry.agent.evidence.identity import KEY_NAME, BoxIdentity, box_identity
from coffee_telemetry.agent.lots.export import (
    configured_csv,
    read_csv,
    records_csv,
    station_key_line,
)
from coffee_telemetry.agent.lots.records import configured_lot_records
from tests.agent.lots.test_verify import fill, site_file
from tests.agent.web.test_server import Client, _site, make_config

KEY_RE = re.compile(r"\(Ed25519\): ([A-Za-z0-9+/]{43}=)")
FINGERPRINT_RE = re.compile(r"SHA256:[0-9a-f]{64}")


@pytest.fixture
def site(tmp_path: Path) -> str:
    path = site_file(tmp_path)
    fill(path)
    return str(path)


def pdf_text(path: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(path).pages]


def csv_key(data: bytes) -> tuple[str, str]:
    first = data.decode("utf-8-sig").split("\r\n", 1)[0]
    assert first.startswith("# ")
    key = KEY_RE.search(first)
    mark = FINGERPRINT_RE.search(first)
    assert key is not None
    assert mark is not None
    return key.group(1), mark.group(0)


def test_reports_and_pack_name_the_same_key(
    site: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pack"
    assert main(["lot", "pack", "-c", site, "L-0042", "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_bytes())
    capsys.readouterr()
    assert main(["lot", "verify-pack", str(out)]) == 0
    signed_by = FINGERPRINT_RE.search(capsys.readouterr().out.split("signed by", 1)[1])
    assert signed_by is not None
    assert signed_by.group(0) == manifest["public_key_fingerprint"]
    # The fingerprint is the raw key's SHA-256, recomputed here with hashlib alone.
    raw = base64.b64decode(manifest["public_key"])
    assert len(raw) == 32
    Ed25519PublicKey.from_public_bytes(raw)  # a valid Ed25519 point
    assert signed_by.group(0) == "SHA256:" + hashlib.sha256(raw).hexdigest()

    # The pack's own CSV: first line, read with the csv module.
    pack_csv = (out / "lote-L-0042.csv").read_bytes()
    assert csv_key(pack_csv) == (manifest["public_key"], signed_by.group(0))
    rows = list(csv.reader(io.StringIO(pack_csv.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert rows[0][0].startswith("# Chave pública desta estação (Ed25519): ")
    assert rows[1][0] == "lote"  # the header follows the key line
    assert len(read_csv(pack_csv)) == len(rows) - 2

    # The pack's PDF: every page's footer, read with pypdf.
    pages = pdf_text(out / "lote-L-0042.pdf")
    assert len(pages) >= 2
    for text in pages:
        flat = text.replace("\n", " ")
        assert f"Chave pública desta estação (Ed25519): {manifest['public_key']}" in flat
        assert f"impressão digital {signed_by.group(0)}" in flat

    # A report made on its own (``lot report``), in English too, names the same key.
    pdf = tmp_path / "report.pdf"
    assert main(["lot", "report", "-c", site, "L-0042", "-o", str(pdf), "--lang", "en"]) == 0
    for text in pdf_text(pdf):
        flat = text.replace("\n", " ")
        assert f"This station's public key (Ed25519): {manifest['public_key']}" in flat
        assert f"fingerprint {signed_by.group(0)}" in flat
    report_csv = tmp_path / "report.csv"
    assert main(["lot", "report", "-c", site, "L-0042", "--csv", "-o", str(report_csv)]) == 0
    assert csv_key(report_csv.read_bytes()) == (manifest["public_key"], signed_by.group(0))


def test_the_key_is_made_once_and_kept(tmp_path: Path) -> None:
    first = box_identity(tmp_path / "data")
    assert first is not None
    assert (tmp_path / "data" / KEY_NAME).stat().st_mode & 0o777 == 0o600
    assert box_identity(tmp_path / "data") == first
    assert box_identity(tmp_path / "other") != first


def test_an_unusable_key_file_gives_reports_without_a_key_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = site_file(tmp_path)
    fill(path)
    (tmp_path / "data" / KEY_NAME).write_bytes(b"not a key")
    cfg = load_config(path)
    assert box_identity(cfg.agent.data_dir) is None
    assert "unusable" in caplog.text
    records = configured_lot_records(cfg)
    try:
        record = records.record("L-0042")
    finally:
        records.close()
    assert record is not None
    body = configured_csv([record], cfg)
    assert not body.decode("utf-8-sig").startswith("#")
    assert read_csv(body)[0]["lote"] == "L-0042"


def test_a_csv_without_a_key_has_none() -> None:
    assert records_csv([]).decode("utf-8-sig").startswith("lote,")


@given(st.binary(min_size=32, max_size=32))
def test_the_key_line_round_trips(raw: bytes) -> None:
    key = BoxIdentity(
        public_key=base64.b64encode(raw).decode(),
        fingerprint="SHA256:" + hashlib.sha256(raw).hexdigest(),
    )
    for lang in ("pt-BR", "en"):
        line = station_key_line(key, lang)
        body = records_csv([], station_key=key, lang=lang)
        assert csv_key(body) == (key.public_key, key.fingerprint)
        assert body.decode("utf-8-sig").startswith(line + "\r\n")
        assert read_csv(body) == []


async def test_the_dispositivos_page_shows_the_key(tmp_path: Path) -> None:
    key = box_identity(tmp_path / "data")
    assert key is not None
    async for s in _site(tmp_path, make_config(tmp_path), None):
        async with s.client() as session:
            browser = Client(s.base, session)
            status, doc = await browser.request("GET", "/api/devices")
            assert status == 200
            assert isinstance(doc, dict)
            assert doc["agent"]["public_key"] is None  # not given: not shown
            s.deps.station_key = key
            status, doc = await browser.request("GET", "/api/devices")
            assert isinstance(doc, dict)
            assert doc["agent"]["public_key"] == {
                "key": key.public_key,
                "fingerprint": key.fingerprint,
            }
