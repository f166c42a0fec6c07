"""Every meter profile reads its golden cases, and ``propose`` names it for them.

The cases (``tests/cases/profiles/<profile>/<case>/``) are made by ``profile_cases.py``
from the drivers' encoders, in the shapes the profiles' manuals document.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.onboard.capfile import read_capture
from coffee_telemetry.agent.onboard.propose import (
    Proposal,
    check_capture,
    event_json,
    load_block,
    propose,
    report,
)
from coffee_telemetry.drivers.profiles import PROFILES
from tests.agent.onboard.helpers import make_capture
from tests.agent.onboard.profile_cases import CASE_LIST, CASES, Case, proposal_of

ALL = sorted(p for p in CASES.glob("*/*") if p.is_dir())


def expected(case: Path) -> list[dict[str, object]]:
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_every_profile_has_a_golden_case() -> None:
    assert {p.parent.name for p in ALL} == set(PROFILES)
    assert {(c.profile, c.name) for c in CASE_LIST} == {(p.parent.name, p.name) for p in ALL}


@pytest.mark.parametrize("case", CASE_LIST, ids=lambda c: f"{c.profile}/{c.name}")
def test_stored_case_is_what_its_builder_makes(case: Case) -> None:
    folder = CASES / case.profile / case.name
    assert (folder / "capture.txt").read_text(encoding="ascii") == case.text()
    capture = read_capture(folder / "capture.txt")
    assert (folder / "input.bin").read_bytes() == capture.recorded_bytes()


@pytest.mark.parametrize("case", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_profile_reads_its_case(case: Path) -> None:
    profile = PROFILES[case.parent.name]
    capture = read_capture(case / "capture.txt")
    wanted = expected(case)
    assert any(e["event"] == "measurement" for e in wanted)
    # The stored block names the profile and reads the capture as recorded.
    device = load_block((case / "device.toml").read_text(encoding="utf-8"))
    assert device.profile == profile.name
    assert device.driver == profile.driver
    assert [event_json(e) for e in check_capture(device, capture.recording()).events] == wanted
    # The profile alone (id, port, profile: nothing else) reads it the same.
    doc: dict[str, object] = {
        "site": {"id": "t"},
        "devices": [{"id": "m", "port": "/dev/x", "profile": profile.name}],
    }
    bare = parse_config(doc).devices[0]
    assert bare.driver == profile.driver
    assert [event_json(e) for e in check_capture(bare, capture.recording()).events] == wanted
    # And the proposal made today names it, in the block stored.
    proposal = propose(capture)
    assert isinstance(proposal, Proposal)
    assert proposal.profile == profile.name
    assert proposal.block == (case / "device.toml").read_text(encoding="utf-8")


def test_report_names_the_profile_and_its_manual() -> None:
    case = next(c for c in CASE_LIST if c.profile == "tesma-plus2")
    proposal = proposal_of(case)
    capture = read_capture(CASES / case.profile / case.name / "capture.txt")
    text = "\n".join(report(capture, "c.txt", proposal, "pt-BR"))
    assert "Perfil: tesma-plus2" in text
    assert "manualslib.mx/manual/59471" in text
    english = "\n".join(report(capture, "c.txt", proposal, "en"))
    assert "Profile: tesma-plus2" in english


def test_ticket_block_with_a_profile_leaves_out_the_field_table() -> None:
    proposal = proposal_of(next(c for c in CASE_LIST if c.profile == "moisture-ticket-pt"))
    assert "[[devices.ticket.fields]]" not in proposal.block
    assert "profile = 'moisture-ticket-pt'" in proposal.block


def test_mtsics_block_with_the_profile_gets_xonxoff_from_it() -> None:
    proposal = proposal_of(next(c for c in CASE_LIST if c.profile == "mettler-mtsics"))
    assert "xonxoff" not in proposal.block
    assert proposal.device.serial.xonxoff is True


def test_no_profile_when_none_reads_the_capture_the_same() -> None:
    # A ticket with Spanish labels: the Portuguese profile finds no moisture in it.
    ticket = b"\x1b@HUMEDIMETRO\r\nHumedad: 12,5 %\r\nMuestra: 0007\r\n\x0c"
    capture = make_capture([ticket] * 6)
    proposal = propose(capture)
    assert isinstance(proposal, Proposal)
    assert proposal.driver == "moisture.ticket"
    assert proposal.profile is None
    assert "profile" not in proposal.block
    text = "\n".join(report(capture, "c.txt", proposal, "en"))
    assert "No known profile reads this capture the same" in text
    assert "moisture-ticket-pt" in text


def test_profiles_of_one_driver_are_told_apart_by_their_frames() -> None:
    balance = next(c for c in CASE_LIST if c.profile == "ad-balance")
    indicator = next(c for c in CASE_LIST if c.profile == "st-gs-indicator")
    assert proposal_of(balance).profile == "ad-balance"
    assert proposal_of(indicator).profile == "st-gs-indicator"
    assert not PROFILES["ad-balance"].seen_in(b"".join(indicator.bursts))
    assert not PROFILES["st-gs-indicator"].seen_in(b"".join(balance.bursts))
