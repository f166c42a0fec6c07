"""``member`` and ``lot pack``/``verify-pack`` end to end, each file read back independently."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pypdf import PdfReader
from pyproj import Geod
from shapely.geometry import shape

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.evidence.pack import KEY_NAME, NO_GEOLOCATION
from coffee_telemetry.agent.lots.export import read_csv
from tests.agent.lots.test_verify import fill, site_file

CASES = Path(__file__).parents[2] / "cases" / "evidence"
NAME = "Maria Aparecida da Silva"
DOCUMENT = "123.456.789-09"


@pytest.fixture
def site(tmp_path: Path) -> str:
    path = site_file(tmp_path)
    fill(path)
    return str(path)


def import_car(site: str, code: str = "M-017", name: str = NAME) -> None:
    argv = ["member", "import", "-c", site, str(CASES / "car_sirgas2000_utm23s.zip")]
    argv += ["--code", code, "--name", name, "--document", DOCUMENT, "--place", "Três Pontas, MG"]
    assert main(argv) == 0


def pack(site: str, out: Path, lot: str = "L-0042") -> None:
    assert main(["lot", "pack", "-c", site, lot, "-o", str(out)]) == 0


def test_pack_files_read_back_independently(
    site: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_car(site)
    assert main(["lot", "members", "-c", site, "L-0042", "--add", "M-017"]) == 0
    assert main(["member", "list", "-c", site]) == 0
    assert NAME in capsys.readouterr().out
    out = tmp_path / "pack"
    pack(site, out)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "lote-L-0042.csv",
        "lote-L-0042.pdf",
        "manifest.json",
        "manifest.sig",
        "talhoes.geojson",
    ]
    # GeoJSON: shapely and pyproj, with the exporters' fields.
    doc = json.loads((out / "talhoes.geojson").read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection"
    (feat,) = doc["features"]
    props = feat["properties"]
    assert props["ProducerName"] == NAME
    assert props["ProducerCountry"] == "BR"
    assert props["ProductionPlace"] == "Três Pontas, MG"
    assert props["WholeProperty"] is True
    geom = shape(feat["geometry"])
    assert geom.is_valid
    assert geom.geom_type == "Polygon"
    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(geom)
    assert props["Area"] == pytest.approx(abs(area) / 10_000, abs=1e-3)
    assert DOCUMENT not in (out / "talhoes.geojson").read_text(encoding="utf-8")
    # PDF (pypdf) and CSV (the lot export's own reader).
    text = "".join(page.extract_text() for page in PdfReader(out / "lote-L-0042.pdf").pages)
    assert "L-0042" in text
    rows = read_csv((out / "lote-L-0042.csv").read_bytes())
    assert len(rows) > 20
    assert {r["lote"] for r in rows} == {"L-0042"}
    # Manifest: hashes recomputed, signature verified with cryptography directly.
    body = (out / "manifest.json").read_bytes()
    manifest = json.loads(body)
    assert manifest["lot"] == "L-0042"
    assert manifest["geolocation"] == "ok"
    for name, entry in manifest["files"].items():
        data = (out / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
    assert set(manifest["files"]) == set(names) - {"manifest.json", "manifest.sig"}
    raw_key = base64.b64decode(manifest["public_key"])
    Ed25519PublicKey.from_public_bytes(raw_key).verify(
        base64.b64decode((out / "manifest.sig").read_bytes()), body
    )
    assert manifest["public_key_fingerprint"] == "SHA256:" + hashlib.sha256(raw_key).hexdigest()
    key_file = tmp_path / "data" / KEY_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # verify-pack accepts it; the box recorded the manifest; the key is reused.
    capsys.readouterr()
    assert main(["lot", "verify-pack", str(out)]) == 0
    assert manifest["public_key_fingerprint"] in capsys.readouterr().out
    again = tmp_path / "again"
    pack(site, again)
    assert (
        json.loads((again / "manifest.json").read_bytes())["public_key"] == manifest["public_key"]
    )
    with sqlite3.connect(tmp_path / "data" / "evidence.sqlite3") as conn:
        issued = conn.execute("SELECT sha256 FROM manifests WHERE lot = 'L-0042'").fetchall()
    assert hashlib.sha256(body).hexdigest() in {r[0] for r in issued}
    assert len(issued) == 2


def tamper_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "tamper",
    ["csv byte", "pdf byte", "geojson byte", "manifest byte", "signature", "extra file", "missing"],
)
def test_a_tampered_pack_is_refused(site: str, tmp_path: Path, tamper: str) -> None:
    import_car(site)
    assert main(["lot", "members", "-c", site, "L-0042", "--add", "M-017"]) == 0
    out = tmp_path / "pack"
    pack(site, out)
    if tamper.endswith(" byte"):
        target = {
            "csv": "lote-L-0042.csv",
            "pdf": "lote-L-0042.pdf",
            "geojson": "talhoes.geojson",
            "manifest": "manifest.json",
        }[tamper.split()[0]]
        tamper_byte(out / target)
    elif tamper == "signature":
        other = tmp_path / "other"
        pack(site, other)  # a genuine signature, of another manifest
        (out / "manifest.sig").write_bytes((other / "manifest.sig").read_bytes())
    elif tamper == "extra file":
        (out / "extra.geojson").write_text("{}", encoding="utf-8")
    else:
        (out / "talhoes.geojson").unlink()
    assert main(["lot", "verify-pack", str(out)]) == 1


def test_a_lot_without_plots_is_marked_sem_geolocalizacao(site: str, tmp_path: Path) -> None:
    out = tmp_path / "pack"
    pack(site, out)
    assert json.loads((out / "manifest.json").read_bytes())["geolocation"] == NO_GEOLOCATION
    assert json.loads((out / "talhoes.geojson").read_bytes())["features"] == []
    assert main(["lot", "verify-pack", str(out)]) == 0


def test_forget_erases_personal_data_and_the_lot_still_packs(
    site: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_car(site)
    assert main(["lot", "members", "-c", site, "L-0042", "--add", "M-017"]) == 0
    pack(site, tmp_path / "before")
    assert main(["member", "forget", "-c", site, "M-017"]) == 0
    pseudonym = capsys.readouterr().out.split()[-1]
    assert pseudonym.startswith("membro-")
    db = tmp_path / "data" / "evidence.sqlite3"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name, document, place FROM members").fetchall() == [
            (None, None, None)
        ]
        assert conn.execute("SELECT geometry FROM plots").fetchall() == [(None,)]
    stored = b"".join(p.read_bytes() for p in db.parent.glob("evidence.sqlite3*"))
    assert NAME.encode() not in stored
    assert DOCUMENT.encode() not in stored
    out = tmp_path / "after"
    pack(site, out)
    (feat,) = json.loads((out / "talhoes.geojson").read_bytes())["features"]
    assert feat["properties"]["ProducerName"] == pseudonym
    assert feat["properties"]["Geolocated"] is False
    assert feat["geometry"] is None
    assert feat["properties"]["Area"] > 6
    manifest = json.loads((out / "manifest.json").read_bytes())
    assert manifest["geolocation"] == NO_GEOLOCATION
    assert manifest["members"] == [pseudonym]
    assert NAME not in "".join(p.read_text(errors="replace") for p in out.iterdir())
    assert main(["lot", "verify-pack", str(out)]) == 0
    assert main(["member", "forget", "-c", site, "M-404"]) == 1


def test_refused_imports_write_nothing(site: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}')
    assert main(["member", "import", "-c", site, str(bad), "--code", "M-1", "--name", "X"]) == 2
    assert main(["member", "import", "-c", site, str(bad), "--code", "../x", "--name", "X"]) == 2
    assert main(["lot", "members", "-c", site, "L-0042", "--add", "M-1"]) == 2  # unknown member
    with sqlite3.connect(tmp_path / "data" / "evidence.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM members").fetchone() == (0,)


def test_pack_refuses_an_unknown_lot_and_a_non_empty_folder(site: str, tmp_path: Path) -> None:
    assert main(["lot", "pack", "-c", site, "L-9999", "-o", str(tmp_path / "p")]) == 1
    assert not (tmp_path / "p").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert main(["lot", "pack", "-c", site, "L-0042", "-o", str(busy)]) == 2


def test_without_the_evidence_extra_the_commands_say_how_to_get_it(
    site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "shapely" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert main(["member", "list", "-c", site]) == 1
    assert "coffee-telemetry[evidence]" in capsys.readouterr().err
    assert main(["lot", "pack", "-c", site, "L-0042", "-o", str(tmp_path / "p")]) == 1
    assert not (tmp_path / "p").exists()
