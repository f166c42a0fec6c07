"""Hostile meter tables and oven entries: each is accepted clean or refused with a reason."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.cli.main import main
from coffee_telemetry.agent.config import load_config, parse_config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.evidence.meters import calibration_ref, parse_oven
from tests.agent.evidence.test_meters import METER, fill_two_meters, site

#: What an accepted meter text may contain (the report prints it as is).
CLEAN = re.compile(r"[^\W_][\w .,/()#:+-]{0,63}")

HOSTILE = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "<script>alert(1)</script>",
            '=HYPERLINK("http://x")',
            "ISO\u202e6673",
            "Gehaka\x00",
            "G650i\r\nX-Injected: 1",
            " leading",
            "trailing ",
            "ok" * 40,
            "Gehaka",
            "Nº 123/2022",
        ]
    ),
)
TEXT_KEYS = ("make", "model", "serial", "inmetro_approval", "method")


def parse(meter: object) -> object:
    return parse_config(
        {
            "site": {"id": "s1"},
            "devices": [{"id": "u", "driver": "moisture.ticket", "port": "/dev/x", "meter": meter}],
        }
    ).devices[0]


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(TEXT_KEYS), value=HOSTILE)
def test_fuzz_meter_text_is_clean_or_refused_naming_its_key(key: str, value: str) -> None:
    try:
        dev = parse({key: value})
    except ConfigError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert f"devices[0].meter.{key}:" in refusal
        return
    assert CLEAN.fullmatch(value)
    assert value == value.strip()
    assert value.isprintable()
    assert not set(value) & set("<>&\"'`=;\\\r\n\t")
    assert calibration_ref("u", dev.meter).startswith("cal-")  # type: ignore[attr-defined, union-attr]


DATES = st.one_of(
    st.dates(min_value=__import__("datetime").date(1990, 1, 1)).map(str),
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=True),
    st.none(),
)


@settings(max_examples=400, deadline=None)
@given(
    date=DATES,
    due=DATES,
    certificate=HOSTILE,
    offset=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
)
def test_fuzz_calibration_records_are_clean_or_refused(
    date: object, due: object, certificate: str, offset: object
) -> None:
    cal: dict[str, object] = {"date": date, "certificate": certificate, "offset_pct": offset}
    if due is not None:
        cal["due"] = due
    try:
        dev = parse({"calibration": cal})
    except ConfigError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert "devices[0].meter.calibration" in refusal
        return
    meter = dev.meter  # type: ignore[attr-defined]
    assert -10 <= meter.calibration.offset_pct <= 10
    assert meter.calibration.due_date > meter.calibration.date
    assert CLEAN.fullmatch(meter.calibration.certificate)


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.text(max_size=24), st.floats(), st.integers(), st.booleans()), by=HOSTILE)
def test_fuzz_parse_oven_returns_a_clean_pair_or_a_reason(value: object, by: str) -> None:
    try:
        pct, who = parse_oven(value, by)
    except ValueError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert "/" in refusal  # pt-BR / English
        return
    assert 0 < pct <= 80
    assert who == who.strip()
    assert who.isprintable()
    assert 0 < len(who) <= 64


def test_fuzz_toml_site_file_with_hostile_meter_text(tmp_path: Path) -> None:
    @settings(max_examples=60, deadline=None)
    @given(value=HOSTILE)
    def run(value: str) -> None:
        path = tmp_path / "site.toml"
        path.write_text(
            '[site]\nid = "s1"\n[[devices]]\nid = "u"\ndriver = "moisture.tesma"\n'
            f'port = "/dev/x"\n[devices.meter]\nmodel = {json.dumps(value)}\n',
            encoding="utf-8",
        )
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            refusal = str(exc)
        else:
            refusal = ""
        if refusal:
            assert "devices[0].meter.model" in refusal or "TOML" in refusal.upper()
            return
        meter = cfg.devices[0].meter
        assert meter is not None
        assert meter.model == value

    run()


@pytest.fixture(scope="module")
def lot_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = site(tmp_path_factory.mktemp("oven"), [("umid-1", METER)])
    fill_two_meters_single(path)
    return path


def fill_two_meters_single(path: Path) -> None:
    """The lot L-0042 with readings (the two-meter fixture needs two devices)."""
    text = path.read_text(encoding="utf-8")
    two = text + (
        '[[devices]]\nid = "umid-2"\ndriver = "moisture.ticket"\nport = "/dev/y"\n'
        'station = "recepcao"\n[devices.meter]\nmodel = "919"\n'
    )
    path.write_text(two, encoding="utf-8")
    fill_two_meters(path)


def oven_rows(path: Path) -> int:
    cfg = load_config(path)
    with sqlite3.connect(cfg.lot_records_path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM lot_oven").fetchone()[0])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(lot=st.one_of(st.just("L-0042"), st.text(max_size=40)), pct=st.text(max_size=12), by=HOSTILE)
def test_fuzz_lot_oven_cli_writes_only_what_it_accepts(
    lot_site: Path, capsys: pytest.CaptureFixture[str], lot: str, pct: str, by: str
) -> None:
    if lot.startswith("-") or pct.startswith("-") or by.startswith("-"):
        return  # options, for argparse
    before = oven_rows(lot_site)
    code = main(["lot", "oven", "-c", str(lot_site), lot, pct, "--by", by])
    out = capsys.readouterr()
    after = oven_rows(lot_site)
    assert code in (0, 1, 2)
    assert "Traceback" not in out.err
    if code == 0:
        assert after == before + 1
    else:
        assert after == before
        assert "erro/error:" in out.err
