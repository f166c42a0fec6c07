"""``coffee-telemetry lot dried`` and ``lot receipt``: what they write, and clear refusals."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.lots.records import LotQuery, LotRecords
from tests.agent.lots.test_service import site_file


def _record_count(tmp_path: Path) -> int:
    path = tmp_path / "lots-records.sqlite3"
    if not path.exists():
        return 0
    store = LotRecords.open(path)
    try:
        return store.search(LotQuery())[1]
    finally:
        store.close()


def test_lot_dried(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = site_file(tmp_path)
    args = ["lot", "dried", "-c", str(site), "L-0042", "--dryer", "patio", "--by", "ana"]
    assert main([*args, "--at", "2026-01-10T08:00"]) == 0
    out = capsys.readouterr().out
    assert "L-0042: Descanso concluído; aguardando leituras (0 de 3 desde a secagem)" in out
    store = LotRecords.open(tmp_path / "lots-records.sqlite3")
    record = store.record("L-0042")
    store.close()
    assert record is not None
    assert record.drying is not None
    assert (record.drying.dryer, record.drying.by, record.drying.source) == ("patio", "ana", "cli")
    assert main(["lot", "dried", "-c", str(site), "L-0042", "--dryer", "mechanical"]) == 0
    assert "Em descanso após secador mecânico: faltam 10 d 0 h" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["L 42", "--dryer", "patio"], "lot code may only use"),
        (["L-1", "--dryer", "sol"], "dryer must be one of patio, mechanical"),
        (["L-1", "--dryer", "patio", "--at", "amanhã"], "ISO 8601"),
        (["L-1", "--dryer", "patio", "--at", "2999-01-01"], "in the future"),
        (["L-1", "--dryer", "patio", "--by", "a\x1bb"], '"by" must be printable'),
    ],
)
def test_lot_dried_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    site = site_file(tmp_path)
    assert main(["lot", "dried", "-c", str(site), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "nothing was written" in err
    assert _record_count(tmp_path) == 0


def test_lot_receipt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = site_file(tmp_path)
    assert (
        main(
            [
                "lot",
                "receipt",
                "-c",
                str(site),
                "L-0042",
                "--member",
                "M-77",
                "--invoice",
                "123456",
                "--sacks",
                "40",
                "--gross-kg",
                "2450,5",
                "--net-kg",
                "2400",
                "--stack",
                "Pilha 3",
                "--by",
                "ana",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "member=M-77, invoice=123456, sacks=40, gross_kg=2450.5, net_kg=2400.0" in out
    assert "stack=Pilha 3, weight_source=entered" in out
    assert main(["lot", "receipt", "-c", str(site), "L-0042"]) == 0
    assert "member=M-77" in capsys.readouterr().out
    assert main(["lot", "receipt", "-c", str(site), "L-0042", "--stack", "<b>A</b>"]) == 2
    err = capsys.readouterr().err
    assert "stack may only use letters" in err
    assert "nothing was written" in err
    assert main(["lot", "receipt", "-c", str(site), "L-0042", "--net-kg", "9999"]) == 2
    assert "net_kg may not be above gross_kg" in capsys.readouterr().err
    assert main(["lot", "receipt", "-c", str(site), "L-9"]) == 1
    assert "unknown lot" in capsys.readouterr().err


_TEXT = st.text(max_size=50)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    lot=_TEXT,
    member=_TEXT,
    invoice=_TEXT,
    stack=_TEXT,
    sacks=st.sampled_from(["1", "-1", "x", "99999999", ""]),
    at=_TEXT,
    dryer=st.sampled_from(["patio", "mechanical", "sol", ""]) | _TEXT,
)
def test_cli_fuzz(
    capsys: pytest.CaptureFixture[str],
    lot: str,
    member: str,
    invoice: str,
    stack: str,
    sacks: str,
    at: str,
    dryer: str,
) -> None:
    """Any arguments: exit 0 with the record written, or a refusal; never a traceback."""
    if any("\x00" in a for a in (lot, member, invoice, stack, at, dryer)):
        return  # argv cannot carry NUL
    with tempfile.TemporaryDirectory() as tmp:
        site = site_file(Path(tmp))
        for argv in (
            ["lot", "receipt", "-c", str(site), "--member", member, "--invoice", invoice,
             "--stack", stack, "--sacks", sacks, "--", lot],
            ["lot", "dried", "-c", str(site), "--dryer", dryer, "--at", at, "--", lot],
        ):  # fmt: skip
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse refused an option: usage and status 2
                code = int(exc.code or 0)
            assert code in (0, 1, 2)
            captured = capsys.readouterr()
            assert "Traceback" not in captured.err
            if code != 0:
                assert "error" in captured.err


def test_lot_info_shows_readiness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = site_file(tmp_path)
    assert main(["lot", "dried", "-c", str(site), "L-0042", "--dryer", "patio"]) == 0
    capsys.readouterr()
    assert main(["lot", "info", "-c", str(site), "L-0042"]) == 0
    out = capsys.readouterr().out
    assert (
        "Em descanso após terreiro: faltam 8 d 0 h / Resting after the patio: 8 d 0 h left" in out
    )
