"""Golden cases written by ``propose --golden``: each still reads the same way.

``tests/cases/onboard/<driver>/<case>/`` holds the capture with its timing
(``capture.txt``), its bytes (``input.bin``), the proposed block (``device.toml``) and
what the driver reported (``expected.jsonl``). A change to a driver or to the config
loader that alters any of these readings fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coffee_telemetry.agent.onboard.capfile import read_capture
from coffee_telemetry.agent.onboard.propose import (
    CASE_FOLDERS,
    Proposal,
    check_capture,
    event_json,
    load_block,
    propose,
)

CASES = Path(__file__).parents[2] / "cases" / "onboard"
ALL = sorted(p for p in CASES.glob("*/*") if p.is_dir())


@pytest.mark.parametrize("case", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden_case(case: Path) -> None:
    capture = read_capture(case / "capture.txt")
    assert (case / "input.bin").read_bytes() == capture.recorded_bytes()
    device = load_block((case / "device.toml").read_text(encoding="utf-8"))
    assert CASE_FOLDERS[device.driver] == case.parent.name
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    check = check_capture(device, capture.recording())
    assert [event_json(e) for e in check.events] == [json.loads(line) for line in lines]
    # And the proposal made today is still the one stored.
    proposal = propose(capture)
    assert isinstance(proposal, Proposal)
    assert proposal.block == (case / "device.toml").read_text(encoding="utf-8")


def test_golden_cases_cover_the_layouts() -> None:
    assert len(ALL) >= 8
    assert {p.parent.name for p in ALL} >= {"moisture_ticket", "moisture_tesma", "scale_toledo"}
