"""``propose``: every layout the simulators print, read back through the agent's driver.

Each capture holds 100 tickets with random values, cut into chunks and spaced as a
person pressing PRINT would; the proposal must read at least 99 of them with exactly
the values printed (the simulators' own record, not the proposal's reading of it).
"""

from __future__ import annotations

import json
import random
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.config import TicketDevice
from coffee_telemetry.agent.onboard.capfile import parse_capture
from coffee_telemetry.agent.onboard.lineformat import LineSettings
from coffee_telemetry.agent.onboard.propose import (
    Proposal,
    Refusal,
    check_capture,
    event_json,
    load_block,
    propose,
    report,
    write_golden,
)
from coffee_telemetry.drivers.events import Measurement
from coffee_telemetry.drivers.moisture_tesma import encode_frame as tesma_frame
from coffee_telemetry.drivers.moisture_ticket import encode_ticket
from coffee_telemetry.drivers.scale_ascii import encode_line
from coffee_telemetry.drivers.scale_mtsics import encode_reply
from coffee_telemetry.drivers.scale_toledo import encode_frame as toledo_frame
from coffee_telemetry.simulators.tickets import LAYOUTS, expected, random_sample, render
from tests.agent.onboard.helpers import capture_text, make_capture

PRODUCTS = ("CAFE", "CAFE ARABICA", "Café arábica", "MILHO")
TICKETS = 100


def reading(m: Measurement) -> dict[str, object]:
    return {**m.fields, **m.tags}


def right(proposal: Proposal, wanted: Sequence[Mapping[str, object]]) -> int:
    got = [reading(m) for m in proposal.check.readings]
    return sum(1 for a, b in zip(got, wanted, strict=False) if a == b)


def accepted(result: Proposal | Refusal) -> Proposal:
    assert isinstance(result, Proposal), result
    return result


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_new_layouts_are_read_right(name: str) -> None:
    layout = LAYOUTS[name]
    rng = random.Random(name)
    samples = [random_sample(rng, i, products=PRODUCTS) for i in range(1, TICKETS + 1)]
    capture = make_capture([render(layout, s, number=i + 1) for i, s in enumerate(samples)])
    proposal = accepted(propose(capture))
    assert proposal.driver == "moisture.ticket"
    assert right(proposal, [expected(layout, s) for s in samples]) >= 0.99 * TICKETS
    assert isinstance(load_block(proposal.block), TicketDevice)


def gehaka_tickets(**options: object) -> tuple[list[bytes], list[dict[str, object]]]:
    """Tickets as ``simulators.moisture.TicketMeterSim`` prints them (``encode_ticket``)."""
    rng = random.Random(str(options))
    tickets, wanted = [], []
    for i in range(1, TICKETS + 1):
        values: dict[str, object] = {
            "moisture_pct": round(rng.uniform(9, 16), 1),
            "temperature_c": round(rng.uniform(15, 35), 1),
            "bulk_density_kg_hl": round(rng.uniform(35, 80), 2),
            "sample_id": f"{i:04d}",
            "meter_time": f"{rng.randint(1, 28):02d}/05/2025 14:{rng.randint(0, 59):02d}",
            "product": rng.choice(["CAFE", "Café arábica"]),
            "lot": f"L-{i:04d}",
        }
        tickets.append(encode_ticket(**values, **options))  # type: ignore[arg-type]
        wanted.append(values)
    return tickets, wanted


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"line_ending": b"\r", "decimal_comma": False},
        {"line_ending": b"\n", "escpos": False},
        {"form_feed": False, "escpos": False, "header": "MEDIDOR G939"},
    ],
    ids=["spec", "cr-point", "lf-plain", "no-ff-no-escpos"],
)
def test_simulator_layouts_are_read_right(options: dict[str, object]) -> None:
    tickets, wanted = gehaka_tickets(**options)
    proposal = accepted(propose(make_capture(tickets)))
    assert proposal.driver == "moisture.ticket"
    assert right(proposal, wanted) >= 0.99 * TICKETS


def test_tickets_without_any_marker_are_cut_by_pauses() -> None:
    # No FF, no ESC @, no header line: only the pauses between presses tell.
    rng = random.Random(5)
    tickets = [
        f"Umidade: {rng.uniform(9, 16):.1f} %\r\nAmostra: {i}\r\n".encode() for i in range(30)
    ]
    proposal = accepted(propose(make_capture(tickets, gap_s=(1.2, 2.0))))
    assert proposal.check.frames_ok == 30
    layout = proposal.layout
    assert layout is not None
    assert layout.split.header is None
    assert 0.1 < layout.idle_gap_s < 1.2
    assert "idle_gap_s" in proposal.block


def test_copies_are_reported_as_duplicates() -> None:
    ticket = encode_ticket(moisture_pct=11.8, sample_id="0001", product="CAFE")
    other = encode_ticket(moisture_pct=12.1, sample_id="0002", product="CAFE")
    capture = make_capture([ticket + ticket, other + other], gap_s=(3.0, 3.0))
    proposal = accepted(propose(capture))
    assert len(proposal.check.readings) == 2
    assert proposal.check.discarded["duplicate"] == 2


def test_unknown_labels_are_listed_not_guessed() -> None:
    layout = LAYOUTS["two_columns"]
    rng = random.Random(9)
    capture = make_capture(
        [render(layout, random_sample(rng, i, products=PRODUCTS)) for i in range(10)]
    )
    proposal = accepted(propose(capture))
    assert proposal.layout is not None
    assert set(proposal.layout.unexplained) == {"Fator", "Operador"}
    assert "#   Fator: 1,02" in proposal.block
    text = "\n".join(report(capture, "c.txt", proposal, "pt-BR"))
    assert "Não explicado" in text
    assert "Fator" in text


@pytest.mark.parametrize(
    ("driver", "bursts", "period"),
    [
        ("moisture.tesma", [tesma_frame("MAIZ", 14.4)] * 5 + [tesma_frame("SOJA", 12.0)] * 5, 1.0),
        ("scale.toledo_continuous", [toledo_frame(w / 4, 0.0) for w in range(60)], 1 / 7),
        ("scale.ascii", [encode_line(w / 8, kind="GS") for w in range(60)], 0.5),
        ("scale.mtsics", [encode_reply("S", "S", value=w / 16, unit="kg") for w in range(60)], 0.2),
    ],
)
def test_framed_protocols_get_their_driver(driver: str, bursts: list[bytes], period: float) -> None:
    capture = make_capture(bursts, gap_s=(period, period))
    proposal = accepted(propose(capture))
    assert proposal.driver == driver
    assert proposal.check.share == 1.0
    assert proposal.check.frames_ok == len(bursts)
    assert load_block(proposal.block).driver == driver


def test_serial_settings_go_into_the_block() -> None:
    tickets, _ = gehaka_tickets()
    capture = make_capture(tickets[:10], settings=LineSettings(2400, 7, "E", 1))
    block = accepted(propose(capture)).block
    serial = tomllib.loads(block)["devices"][0]["serial"]
    assert serial == {"baudrate": 2400, "bytesize": 7, "parity": "E", "stopbits": 1}


def test_garbage_is_refused_with_the_reason() -> None:
    rng = random.Random(4)
    capture = make_capture([bytes(rng.randrange(256) for _ in range(80)) for _ in range(20)])
    result = propose(capture)
    assert isinstance(result, Refusal)
    assert result.reason == "not-text"
    text = "\n".join(report(capture, "c.txt", result, "en"))
    assert "Nothing to propose" in text
    assert "look like text" in text


@pytest.mark.parametrize(
    ("bursts", "reason"),
    [
        ([b"Peso bruto: 1234 kg\r\nTara: 12 kg\r\n\x0c"] * 5, "no-moisture-label"),
        ([b"hello world, nothing to see here\r\n"] * 5, "unframed"),
        ([b"\x00\x00"], "empty"),
    ],
)
def test_text_nobody_reads_is_refused(bursts: list[bytes], reason: str) -> None:
    result = propose(make_capture(bursts))
    assert isinstance(result, Refusal)
    assert result.reason == reason


def test_capture_without_decision_is_refused() -> None:
    text = capture_text([b"x"]).replace("serial: 9600 8N1\n", "")
    result = propose(parse_capture(text.encode()))
    assert isinstance(result, Refusal)
    assert result.reason == "no-recording"


def test_golden_case_is_written_and_reproduces(tmp_path: Path) -> None:
    layout = LAYOUTS["es_dot_leaders"]
    rng = random.Random(2)
    text = capture_text(
        [render(layout, random_sample(rng, i, products=PRODUCTS)) for i in range(5)]
    )
    capture = parse_capture(text.encode())
    proposal = accepted(propose(capture))
    folder = write_golden(tmp_path, "es", proposal, text, capture)
    assert folder == tmp_path / "moisture_ticket" / "es"
    assert (folder / "input.bin").read_bytes() == capture.recorded_bytes()
    device = load_block((folder / "device.toml").read_text(encoding="utf-8"))
    lines = (folder / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    again = check_capture(device, parse_capture((folder / "capture.txt").read_bytes()).recording())
    assert [json.loads(line) for line in lines] == [event_json(e) for e in again.events]
    assert len(lines) == 5
    with pytest.raises(FileExistsError):
        write_golden(tmp_path, "es", proposal, text, capture)
    with pytest.raises(ValueError, match="plain folder"):
        write_golden(tmp_path, "../x", proposal, text, capture)


@settings(max_examples=60, deadline=None)
@given(bursts=st.lists(st.binary(min_size=1, max_size=120), min_size=1, max_size=8))
def test_any_recording_gets_a_proposal_or_a_reason(bursts: list[bytes]) -> None:
    capture = make_capture(bursts)
    result = propose(capture)
    lines = report(capture, "c.txt", result, "pt-BR")
    assert lines
    if isinstance(result, Proposal):
        assert load_block(result.block).driver == result.driver
