"""Blends: a lot made of source lots, carrying their summaries, members and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.config import load_config
from coffee_telemetry.agent.errors import LotError
from coffee_telemetry.agent.evidence.store import EvidenceStore
from coffee_telemetry.agent.lots import blends
from coffee_telemetry.agent.lots.export import read_csv
from coffee_telemetry.agent.lots.records import LotRecords, configured_thresholds
from tests.agent.evidence.test_pack import import_car
from tests.agent.lots.test_records import moisture, weighment
from tests.agent.lots.test_verify import site_file


@pytest.fixture
def site(tmp_path: Path) -> str:
    path = site_file(tmp_path)
    cfg = load_config(path)
    store = LotRecords.open(cfg.lot_records_path, thresholds=configured_thresholds(cfg))
    try:
        store.write(
            [
                *[moisture(i, 11.0 + i / 10, lot="L-0042") for i in range(1, 5)],  # 11.1..11.4
                *[moisture(i, 12.0 + i / 10, lot="L-0043") for i in range(5, 7)],  # 12.5, 12.6
                moisture(7, 10.9, lot="L-0044"),
                weighment(1, 1000.0, lot="L-0042"),
                weighment(2, 510.0, lot="L-0043"),
            ]
        )
    finally:
        store.close()
    return str(path)


def record(site: str, code: str) -> object:
    cfg = load_config(Path(site))
    store = LotRecords.open(cfg.lot_records_path, thresholds=configured_thresholds(cfg))
    try:
        return store.record(code)
    finally:
        store.close()


def evidence(site: str) -> EvidenceStore:
    return EvidenceStore.open(load_config(Path(site)).agent.data_dir / "evidence.sqlite3")


def test_a_blend_carries_its_sources(
    site: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["lot", "blend", "-c", site, "L-0100", "--from", "L-0042", "L-0043", "--by", "ana"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "L-0100" in out
    assert "6 leituras/readings" in out
    blend = record(site, "L-0100")
    assert blend is not None
    (event,) = [e for e in blend.events if e.kind == "blend"]  # type: ignore[attr-defined]
    assert event.by == "ana"
    assert event.source == "cli"
    assert event.data["sources"] == "L-0042,L-0043"
    assert event.data["readings"] == 6
    assert event.data["mean_pct"] == pytest.approx((11.1 + 11.2 + 11.3 + 11.4 + 12.5 + 12.6) / 6)
    assert event.data["max_pct"] == 12.6
    assert event.data["min_pct"] == 11.1
    assert event.data["net_kg"] == pytest.approx(990.0 + 500.0)
    assert event.data["L-0042.verdict"] == "ok"
    assert event.data["L-0043.verdict"] == "wet"  # the site's threshold is 12.5 %
    assert event.data["verdict"] == "wet"
    for code in ("L-0042", "L-0043"):
        source = record(site, code)
        assert [e.data for e in source.events if e.kind == "blended"] == [  # type: ignore[attr-defined]
            {"blend": "L-0100"}
        ]
    # The blend's own readings stay its own: none yet.
    assert blend.summary.readings == 0  # type: ignore[attr-defined]

    # The reports carry it: the PDF's timeline, the CSV's rows, and lot verify.
    pdf = tmp_path / "L-0100.pdf"
    assert main(["lot", "report", "-c", site, "L-0100", "-o", str(pdf)]) == 0
    text = "\n".join(p.extract_text() for p in PdfReader(pdf).pages)
    assert "mistura" in text
    assert "L-0042" in text
    assert "L-0043" in text
    assert main(["lot", "verify", "-c", site, str(pdf)]) == 0
    csv_path = tmp_path / "L-0100.csv"
    assert main(["lot", "report", "-c", site, "L-0100", "--csv", "-o", str(csv_path)]) == 0
    rows = read_csv(csv_path.read_bytes())
    assert [r["tipo"] for r in rows] == ["mistura (blend)"]
    assert "L-0043 (2 readings" in rows[0]["ticket"]


def test_refusals(site: str, capsys: pytest.CaptureFixture[str]) -> None:
    def blend(*argv: str) -> tuple[int, str]:
        code = main(["lot", "blend", "-c", site, *argv, "--by", "ana"])
        return code, capsys.readouterr().err

    assert blend("L-0100", "--from", "L-0042", "L-0999") == (
        1,
        "erro/error: unknown source lot 'L-0999': nothing of it was recorded;"
        " nada foi gravado / nothing was written\n",
    )
    code, err = blend("L-0100", "--from", "L-0042")
    assert code == 2
    assert "two source lots" in err
    assert blend("L-0100", "--from", "L-0042", "L-0042")[0] == 2
    assert blend("L-0042", "--from", "L-0042", "L-0043")[0] == 2
    assert blend("L 100", "--from", "L-0042", "L-0043")[0] == 2
    assert record(site, "L-0100") is None  # nothing written
    assert blend("L-0100", "--from", "L-0042", "L-0043")[0] == 0
    code, err = blend("L-0100", "--from", "L-0042", "L-0044")
    assert code == 1
    assert "already a blend" in err


def test_a_geolocated_lot_is_never_blended_with_one_without(
    site: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_car(site)
    assert main(["lot", "members", "-c", site, "L-0042", "--add", "M-017"]) == 0
    capsys.readouterr()
    argv = ["lot", "blend", "-c", site, "L-0100", "--from", "L-0042", "L-0043", "--by", "ana"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "L-0043 está sem geolocalização e L-0042 tem talhões geolocalizados" in err
    assert "blend refused" in err
    assert record(site, "L-0100") is None
    store = evidence(site)
    try:
        assert store.lot_members("L-0100") == []
    finally:
        store.close()

    # Two geolocated sources blend; the blend's members and plots are theirs.
    import_car(site, code="M-018", name="João Batista")
    assert main(["lot", "members", "-c", site, "L-0043", "--add", "M-018"]) == 0
    assert main(argv) == 0
    assert "geolocalizado/geolocated" in capsys.readouterr().out
    store = evidence(site)
    try:
        assert [m.code for m in store.lot_members("L-0100")] == ["M-017", "M-018"]
    finally:
        store.close()
    out = tmp_path / "pack"
    assert main(["lot", "pack", "-c", site, "L-0100", "-o", str(out)]) == 0
    features = json.loads((out / "talhoes.geojson").read_bytes())["features"]
    assert {f["properties"]["MemberCode"] for f in features} == {"M-017", "M-018"}
    assert all(f["geometry"] is not None for f in features)
    assert main(["lot", "verify-pack", str(out)]) == 0
    csv_rows = read_csv(next(out.glob("*.csv")).read_bytes())
    assert any(r["tipo"] == "mistura (blend)" for r in csv_rows)


def test_two_lots_without_geolocation_blend(site: str) -> None:
    argv = ["lot", "blend", "-c", site, "L-0100", "--from", "L-0043", "L-0044", "--by", "ana"]
    assert main(argv) == 0
    store = LotRecords.open(load_config(Path(site)).lot_records_path)
    try:
        carried = blends.carried(store, "L-0100")
    finally:
        store.close()
    assert [(s.code, s.readings, s.geolocated) for s in carried] == [
        ("L-0043", 2, False),
        ("L-0044", 1, False),
    ]


def test_combine() -> None:
    a = blends.SourceSummary("A", 2, 22.0, 10.0, 12.0, 12.0, 1, 100.0, "ok", True)
    b = blends.SourceSummary("B", 0, 0.0, None, None, None, 0, 0.0, "none", True)
    both = blends.combine([a, b])
    assert both == blends.Combined(2, 11.0, 10.0, 12.0, 100.0, "ok")
    assert blends.combine([b]).verdict == "none"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.lists(st.text(max_size=40), max_size=40))
def test_fuzz_blend_codes_only_refuse(code: str, sources: list[str]) -> None:
    try:
        request = blends.parse_blend(code, sources)
    except LotError:
        return
    assert 2 <= len(request.sources) <= blends.MAX_SOURCES
    assert request.code not in request.sources
    assert len(set(request.sources)) == len(request.sources)
