"""moisture.ticket: printed tickets in, one Measurement per sample out."""

from __future__ import annotations

import itertools
import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, assert_never

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.errors import DriverUsageError
from coffee_telemetry.agent.onboard.propose import event_json
from coffee_telemetry.drivers._framing import LineEnding
from coffee_telemetry.drivers.events import Discarded, FieldValue, Measurement
from coffee_telemetry.drivers.moisture_ticket import (
    DEFAULT_PATTERNS,
    FieldPattern,
    TicketOptions,
    TicketParser,
    decode_ticket,
    encode_ticket,
)

CASES_DIR = Path(__file__).parents[1] / "cases" / "moisture_ticket"

#: The ticket of device-protocols.md §6 A2, byte for byte.
SPEC_TICKET = (
    b"\x1b@"
    b"GEHAKA G650\r\n"
    b"12/05/2025  14:03\r\n"
    b"Produto: CAFE\r\n"
    b"Umidade:  11,8 %\r\n"
    b"Temp.: 24,6 C\r\n"
    b"PH: 38,20\r\n"
    b"Amostra: 0042\r\n"
    b"\x1dVB\x00"
    b"\x0c"
)
SPEC_FIELDS: dict[str, FieldValue] = {
    "moisture_pct": 11.8,
    "temperature_c": 24.6,
    "bulk_density_kg_hl": 38.2,
    "sample_id": "0042",
    "meter_time": "12/05/2025 14:03",
}
SPEC_AUDIT = (
    "GEHAKA G650\n12/05/2025  14:03\nProduto: CAFE\nUmidade:  11,8 %\n"
    "Temp.: 24,6 C\nPH: 38,20\nAmostra: 0042"
)


DEFAULTS = TicketOptions()


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed(
    chunks: list[bytes],
    options: TicketOptions = DEFAULTS,
    *,
    silent_before: bool = True,
    end_with_idle: bool = False,
) -> list[Measurement | Discarded]:
    """Feed chunks all at t=10; optionally after known silence, and end with an idle gap."""
    parser = TicketParser(options)
    if silent_before:
        parser.tick(0.0)
    for chunk in chunks:
        parser.receive_data(chunk, 10.0)
        assert parser.buffered_bytes <= options.max_bytes
    if end_with_idle:
        parser.tick(10.0 + options.idle_gap_s)
    return parser.events()


def summary(events: list[Measurement | Discarded]) -> list[tuple[str, object, object]]:
    out: list[tuple[str, object, object]] = []
    for event in events:
        match event:
            case Measurement():
                out.append(("measurement", dict(event.fields), dict(event.tags)))
            case Discarded():
                out.append(("discarded", event.reason, None))
            case _:
                assert_never(event)
    return out


def measured(fields: Mapping[str, FieldValue], tags: Mapping[str, str] | None = None) -> object:
    return ("measurement", dict(fields), dict(tags or {}))


def dropped(reason: str) -> object:
    return ("discarded", reason, None)


# -- the spec's example ------------------------------------------------------------


def test_spec_ticket_decodes_to_the_spec_values() -> None:
    [event] = feed([SPEC_TICKET])
    assert event == Measurement(
        measurement="moisture",
        fields=SPEC_FIELDS,
        tags={"product": "CAFE"},
        raw=SPEC_TICKET[2:-5],
        audit=SPEC_AUDIT,
    )


def test_encode_ticket_prints_the_spec_example() -> None:
    assert (
        encode_ticket(
            moisture_pct=11.8,
            product="CAFE",
            temperature_c=24.6,
            bulk_density_kg_hl=38.2,
            sample_id="0042",
            meter_time="12/05/2025 14:03",
        )
        == SPEC_TICKET
    )


# -- tables, bytes -> events (fed whole, byte by byte, with trailing bytes) ---------

T = b"\x1b@"  # a print job starts: the ticket is known to be whole
BYTE_CASES: list[tuple[str, bytes, list[object]]] = [
    ("spec", SPEC_TICKET, [measured(SPEC_FIELDS, {"product": "CAFE"})]),
    (
        "decimal point, LF, lot, mass",
        T + b"Lote: 17B\nUmidade: 12.25%\nPeso amostra: 100,5 g\n\x0c",
        [measured({"moisture_pct": 12.25, "sample_mass_g": 100.5}, {"lot": "17B"})],
    ),
    (
        "labels anchored: 'id' inside Umidade is no sample id",
        T + b"Umidade: 9,5\r\nTemp 25,0C\r\n\x0c",
        [measured({"moisture_pct": 9.5, "temperature_c": 25.0})],
    ),
    (
        "first matching line wins",
        T + b"Umidade: 9,5\r\nUmidade: 19,5\r\n\x0c",
        [measured({"moisture_pct": 9.5})],
    ),
    (
        "ESC/POS inside lines",
        T + b"\x1bE\x01Umidade:\x1bE\x00 11,0 %\r\n\x1bd\x02\x0c",
        [measured({"moisture_pct": 11.0})],
    ),
    (
        "latin-1 accents and ordinal",
        T + "Grão: Café\r\nUmid.: 10,0\r\nTemperatura: -2,5 ºC\r\n".encode("latin-1") + b"\x0c",
        [measured({"moisture_pct": 10.0, "temperature_c": -2.5}, {"product": "Café"})],
    ),
    ("no moisture", T + b"Produto: CAFE\r\n\x0c", [dropped("no-moisture")]),
    ("moisture out of range", T + b"Umidade: 60,1\r\n\x0c", [dropped("out-of-range")]),
    ("moisture at the limit", T + b"Umidade: 60,0\r\n\x0c", [measured({"moisture_pct": 60.0})]),
    (
        "wrong baud",
        T + b"Umidade: 11,0\r\n\x9a\xe3\x81\x8f\xff\xfe\r\n\x0c",
        [dropped("framing-suspect")],
    ),
    ("blank ticket: no event", T + b"\r\n  \r\n\x0c", []),
    (
        "two tickets, duplicate",
        SPEC_TICKET + SPEC_TICKET,
        [measured(SPEC_FIELDS, {"product": "CAFE"}), dropped("duplicate")],
    ),
    (
        "ESC @ ends a ticket that has no form feed",
        T + b"Umidade: 11,0\r\n" + T + b"Umidade: 12,0\r\n\x0c",
        [measured({"moisture_pct": 11.0}), measured({"moisture_pct": 12.0})],
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in BYTE_CASES], ids=[c[0] for c in BYTE_CASES]
)
def test_bytes_to_events(data: bytes, expected: list[object]) -> None:
    assert summary(feed([data])) == expected
    assert summary(feed([bytes([b]) for b in data])) == expected
    # Bytes of a next ticket that has not ended add nothing yet.
    assert summary(feed([data + b"\x1b@GEHAKA G650\r\nUmidade:  1"])) == expected


# -- tables, events -> bytes -> events ------------------------------------------------

ENCODE_CASES: list[tuple[str, dict[str, Any], dict[str, FieldValue], dict[str, str]]] = [
    ("moisture only", {"moisture_pct": 12.0}, {"moisture_pct": 12.0}, {}),
    (
        "everything, decimal point, LF",
        {
            "moisture_pct": 11.86,  # printed with one decimal, as the meter shows it
            "product": "Café arábica",
            "temperature_c": -0.04,
            "bulk_density_kg_hl": 999.99,
            "sample_mass_g": 0,
            "sample_id": "nº7",
            "lot": "L7/2025",
            "meter_time": "01/02/25 03:04:05",
            "line_ending": b"\n",
            "decimal_comma": False,
            "escpos": False,
        },
        {
            "moisture_pct": 11.9,
            "temperature_c": 0.0,  # -0.04 prints as 0.0, never as "-0.0"
            "bulk_density_kg_hl": 999.99,
            "sample_mass_g": 0.0,
            "sample_id": "nº7",
            "meter_time": "01/02/25 03:04:05",
        },
        {"product": "Café arábica", "lot": "L7/2025"},
    ),
    (
        "CR only, no form feed, no header",
        {"moisture_pct": 59.96, "line_ending": b"\r", "form_feed": False, "header": ""},
        {"moisture_pct": 60.0},
        {},
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "fields", "tags"), [c[1:] for c in ENCODE_CASES], ids=[c[0] for c in ENCODE_CASES]
)
def test_encode_then_decode(
    kwargs: dict[str, Any], fields: dict[str, FieldValue], tags: dict[str, str]
) -> None:
    data = encode_ticket(**kwargs)
    expected = [measured(fields, tags)]
    assert summary(decode_ticket(data)) == expected
    assert summary(feed([bytes([b]) for b in data], end_with_idle=True)) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"moisture_pct": -0.1},
        {"moisture_pct": 99.96},
        {"moisture_pct": float("nan")},
        {"moisture_pct": 11.0, "temperature_c": 100.0},
        {"moisture_pct": 11.0, "bulk_density_kg_hl": 9.99},
        {"moisture_pct": 11.0, "sample_mass_g": 10000.0},
        {"moisture_pct": 11.0, "product": "CAFÉ\u2122"},  # not latin-1
        {"moisture_pct": 11.0, "product": "CAFE\r\nUmidade: 99,0"},  # a line break
        {"moisture_pct": 11.0, "product": " CAFE"},
        {"moisture_pct": 11.0, "product": ""},
        {"moisture_pct": 11.0, "product": ":CAFE"},
        {"moisture_pct": 11.0, "product": "lote 01/02/2025 10:00"},  # reads as meter_time
        {"moisture_pct": 11.0, "sample_id": "00 42"},
        {"moisture_pct": 11.0, "lot": "L\t7"},
        {"moisture_pct": 11.0, "meter_time": "2025-05-12 14:03"},
        {"moisture_pct": 11.0, "header": "Umidade: 50,0"},
        {"moisture_pct": 11.0, "header": "G650\x1b"},
        {"moisture_pct": 11.0, "line_ending": b"\x0c"},
    ],
)
def test_encode_refuses_what_a_ticket_cannot_carry(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DriverUsageError):
        encode_ticket(**kwargs)


# -- golden cases ----------------------------------------------------------------------


def golden(chunks: list[bytes]) -> list[dict[str, object]]:
    # A capture starts when the port opened: nothing is known about the silence before.
    parser = TicketParser()
    for chunk in chunks:
        parser.receive_data(chunk, 0.0)
    parser.tick(100.0)
    return [event_json(e) for e in parser.events()]


@pytest.mark.parametrize("case", sorted(CASES_DIR.iterdir()), ids=lambda p: p.name)
def test_golden_case(case: Path) -> None:
    data = (case / "input.bin").read_bytes()
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in lines]
    assert golden([data]) == expected
    assert golden([bytes([b]) for b in data]) == expected


def test_golden_cases_exist() -> None:
    assert len(list(CASES_DIR.iterdir())) >= 5


# -- starts, ends and time ----------------------------------------------------------------


def test_ticket_cut_at_connect_is_never_a_reading() -> None:
    tail = SPEC_TICKET[SPEC_TICKET.index(b"Umidade") :]  # still holds the moisture line
    parser = TicketParser()
    parser.receive_data(tail, 5.0)
    assert summary(parser.events()) == [dropped("partial")]
    parser.receive_data(SPEC_TICKET[2:], 6.0)  # after an FF: known to be whole
    assert summary(parser.events()) == [measured(SPEC_FIELDS, {"product": "CAFE"})]


def test_first_tick_starts_the_silence_that_proves_a_clean_start() -> None:
    parser = TicketParser()
    assert parser.next_deadline() == 0.0  # "tick me now"
    parser.tick(100.0)
    assert parser.next_deadline() is None
    parser.receive_data(SPEC_TICKET[2:], 101.0)  # 1 s after opening: may be a tail
    assert summary(parser.events()) == [dropped("partial")]

    parser = TicketParser()
    parser.tick(100.0)
    parser.receive_data(SPEC_TICKET[2:], 102.0)  # 2 s of silence first: whole
    assert summary(parser.events()) == [measured(SPEC_FIELDS, {"product": "CAFE"})]


def test_idle_gap_ends_a_ticket_without_form_feed() -> None:
    parser = TicketParser(TicketOptions(idle_gap_s=1.5))
    parser.tick(0.0)
    parser.receive_data(b"Produto: CAFE\r\nUmid", 10.0)
    parser.receive_data(b"ade: 11,5 %", 10.5)  # no line end: the last line is flushed
    assert parser.next_deadline() == 12.0
    parser.tick(11.9)
    assert parser.events() == []
    parser.tick(12.0)
    assert summary(parser.events()) == [measured({"moisture_pct": 11.5}, {"product": "CAFE"})]
    assert parser.next_deadline() is None
    # The next bytes come after the gap: a clean start again.
    parser.receive_data(b"Umidade: 11,6\r\n", 30.0)
    parser.receive_data(b"", 40.0)  # no bytes is a tick
    assert summary(parser.events()) == [measured({"moisture_pct": 11.6})]


def test_data_after_a_gap_ends_the_previous_ticket_even_without_tick() -> None:
    parser = TicketParser()
    parser.tick(0.0)
    parser.receive_data(b"Umidade: 11,0\r\n", 5.0)
    parser.receive_data(b"Umidade: 12,0\r\n", 9.0)
    assert summary(parser.events()) == [measured({"moisture_pct": 11.0})]


def test_an_escape_cut_by_a_pause_does_not_eat_the_next_ticket() -> None:
    parser = TicketParser()
    parser.tick(0.0)
    parser.receive_data(b"junk\x1bd", 5.0)  # ESC d waits for its parameter...
    parser.receive_data(b"Umidade: 11,0\r\n\x0c", 9.0)  # ...but the line was idle
    assert summary(parser.events()) == [dropped("no-moisture"), measured({"moisture_pct": 11.0})]


def test_start_regex_starts_and_end_regex_ends() -> None:
    options = TicketOptions(start_regex=r"^GEHAKA", end_regex=r"^amostra\b")
    data = (
        b"Umidade: 10,0\r\n"  # before any start line: not a ticket
        b"GEHAKA G650\r\nUmidade: 11,0\r\nAmostra: 1\r\n"
        b"stray line\r\n"  # between tickets
        b"GEHAKA G650\r\nUmidade: 12,0\r\n"
        b"GEHAKA G650\r\nUmidade: 13,0\r\n\x0c"  # a start line ends the previous ticket
    )
    expected = [
        dropped("partial"),
        measured({"moisture_pct": 11.0, "sample_id": "1"}),
        dropped("partial"),
        measured({"moisture_pct": 12.0}),
        measured({"moisture_pct": 13.0}),
    ]
    assert summary(feed([data], options)) == expected
    assert summary(feed([bytes([b]) for b in data], options)) == expected


@pytest.mark.parametrize(
    ("ending", "data"),
    [
        ("cr", b"\x1b@Umidade: 11,0\r\nAmostra: 7\r\n\x0c"),
        ("lf", b"\x1b@Umidade: 11,0\r\nAmostra: 7\r\n\x0c"),
        ("crlf", b"\x1b@Umidade: 11,0\r\nAmostra: 7\r\n\x0c"),
        ("crlf", b"\x1b@Umidade: 11,0\r\nAmostra: 7\n\r\x0c"),  # lone CR/LF are not line ends
        ("auto", b"\x1b@Umidade: 11,0\rAmostra: 7\n\x0c"),
    ],
)
def test_line_endings(ending: LineEnding, data: bytes) -> None:
    expected = [measured({"moisture_pct": 11.0, "sample_id": "7"})]
    assert summary(feed([data], TicketOptions(line_ending=ending))) == expected


def test_duplicate_window() -> None:
    parser = TicketParser(TicketOptions(duplicate_window_s=10.0))
    parser.receive_data(SPEC_TICKET, 0.0)
    parser.receive_data(SPEC_TICKET, 10.0)  # a copy
    parser.receive_data(SPEC_TICKET, 21.0)  # 21 s after the accepted one: a new sample
    other = SPEC_TICKET.replace(b"11,8", b"11,9")
    parser.receive_data(other, 22.0)  # same sample id, other values: not a copy
    assert summary(parser.events()) == [
        measured(SPEC_FIELDS, {"product": "CAFE"}),
        dropped("duplicate"),
        measured(SPEC_FIELDS, {"product": "CAFE"}),
        measured({**SPEC_FIELDS, "moisture_pct": 11.9}, {"product": "CAFE"}),
    ]
    assert (parser.frames_ok, parser.frames_discarded) == (3, 1)


def test_audit_and_raw_are_capped() -> None:
    options = TicketOptions(max_audit_bytes=20)
    [event] = feed([SPEC_TICKET], options)
    assert isinstance(event, Measurement)
    assert event.audit == SPEC_AUDIT[:20]
    assert event.raw == SPEC_TICKET[2:22]


# -- limits ----------------------------------------------------------------------------


def test_too_many_lines_drops_the_ticket_and_skips_its_rest() -> None:
    options = TicketOptions(max_lines=3)
    data = T + b"Umidade: 11,0\r\n" + b"x\r\n" * 10 + b"\x0c" + T + b"Umidade: 12,0\r\n\x0c"
    expected = [dropped("too-long"), measured({"moisture_pct": 12.0})]
    assert summary(feed([data], options)) == expected
    assert summary(feed([bytes([b]) for b in data], options)) == expected


def test_too_many_bytes_drops_the_ticket() -> None:
    options = TicketOptions(max_bytes=64, max_audit_bytes=16)
    data = T + b"Umidade: 11,0\r\n" + b"y" * 100 + b"\r\n\x0c"
    [event] = feed([data], options)
    assert event == Discarded(data=b"Umidade: 11,0\r\nyy"[:16], reason="too-long")


def test_skipping_ends_at_an_end_line_or_a_start_line() -> None:
    options = TicketOptions(max_bytes=32, start_regex="^start", end_regex="^end")
    data = (
        b"start\r\n" + b"z" * 40 + b"\r\nmore\r\nend\r\n"  # too long, skipped to "end"
        b"start\r\nUmidade: 11,0\r\nend\r\n"
        b"start\r\n" + b"z" * 40 + b"\r\n"  # too long, skipped to the next start
        b"start\r\nUmidade: 12,0\r\n\x0c"
    )
    expected = [
        dropped("too-long"),
        measured({"moisture_pct": 11.0}),
        dropped("too-long"),
        measured({"moisture_pct": 12.0}),
    ]
    assert summary(feed([data], options)) == expected
    assert summary(feed([bytes([b]) for b in data], options)) == expected


def test_too_long_line_at_a_boundary_and_an_idle_gap() -> None:
    options = TicketOptions(max_lines=1)
    # The flushed last line is the second line: too long; the FF then ends the skip.
    assert summary(feed([T + b"Umidade: 11,0\r\nx\x0c"], options)) == [dropped("too-long")]
    parser = TicketParser(TicketOptions(max_bytes=16))
    parser.tick(0.0)
    parser.receive_data(b"w" * 40, 5.0)
    assert parser.next_deadline() == 7.0  # still skipping: an idle gap will end it
    parser.tick(7.0)
    assert parser.next_deadline() is None
    assert summary(parser.events()) == [dropped("too-long")]


def test_megabytes_without_terminator_stay_bounded() -> None:
    parser = TicketParser()
    parser.tick(0.0)
    block = bytes(range(0x20, 0x7F)) * 1000  # printable, no CR, LF or FF
    for i in range(5_000_000 // len(block) + 1):
        parser.receive_data(block, 10.0 + i * 0.01)
        assert parser.buffered_bytes <= 4096
    assert summary(parser.events()) == [dropped("too-long")]  # one event, not thousands
    parser.receive_data(b"\x0c" + SPEC_TICKET, 70.0)
    assert summary(parser.events()) == [measured(SPEC_FIELDS, {"product": "CAFE"})]


# -- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        TicketOptions(line_ending="cr lf"),  # type: ignore[arg-type]
        TicketOptions(idle_gap_s=0.0),
        TicketOptions(idle_gap_s=float("inf")),
        TicketOptions(duplicate_window_s=-1.0),
        TicketOptions(max_lines=0),
        TicketOptions(max_bytes=0),
        TicketOptions(start_regex="("),
        TicketOptions(end_regex="[a"),
        TicketOptions(patterns=(FieldPattern("moisture_pct", r"umid \d+", "float"),)),
        TicketOptions(patterns=(FieldPattern("moisture_pct", r"umid (\d+)", "text"),)),
        TicketOptions(patterns=(FieldPattern("moisture_pct", r"umid (\d+)", "int"),)),  # type: ignore[arg-type]
        TicketOptions(patterns=(FieldPattern("moisture_pct", r"umid ((\d+)", "float"),)),
    ],
)
def test_bad_options_are_a_usage_error(options: TicketOptions) -> None:
    with pytest.raises(DriverUsageError):
        TicketParser(options)


def test_custom_patterns() -> None:
    patterns = (
        FieldPattern("moisture_pct", r"^H2O\s+(\S+)", "float"),
        FieldPattern("moisture_pct", r"^umid\w*\W+(\d+,\d+)", "float"),  # a fallback label
        FieldPattern("station", r"^posto\s+(\w+)?(?:\s+(\w+))?", "text"),
        *DEFAULT_PATTERNS[1:],
    )
    options = TicketOptions(patterns=patterns)
    data = T + b"H2O 1e5\r\nH2O 11,25\r\nposto --\r\nPosto A 2\r\n\x0c"
    # "1e5" is no decimal, so the next line wins (and the fallback pattern is not
    # needed); an empty text capture is no value.
    assert summary(feed([data], options)) == [measured({"moisture_pct": 11.25, "station": "A 2"})]


# -- properties ---------------------------------------------------------------------------

FRAGMENTS = [
    SPEC_TICKET,
    SPEC_TICKET[:40],
    SPEC_TICKET[40:],
    b"\x1b@",
    b"\x1dVB\x00",
    b"\x1bd",
    b"\x0c",
    b"\r",
    b"\n",
    b"\r\n",
    b"Umidade: 12,5 %\r\n",
    b"Amostra: 7\r\n",
    b"Produto: CAFE\r\n",
    b"\xff\xfe\x9a",
]
streams = st.lists(st.one_of(st.binary(max_size=30), st.sampled_from(FRAGMENTS)), max_size=12).map(
    b"".join
)
small_limits = st.sampled_from(
    [
        TicketOptions(),
        TicketOptions(max_bytes=48, max_lines=3, max_audit_bytes=20),
        TicketOptions(line_ending="crlf", start_regex="^GEHAKA", end_regex="^amostra"),
        TicketOptions(line_ending="cr", max_bytes=20),
        TicketOptions(max_bytes=40, max_lines=4, start_regex="^GEHAKA", end_regex="^amostra"),
    ]
)


@settings(max_examples=200)
@given(
    data=streams,
    cuts=st.lists(st.integers(0, 400)),
    options=small_limits,
    silent_before=st.booleans(),
)
def test_chunking_never_changes_the_events(
    data: bytes, cuts: list[int], options: TicketOptions, silent_before: bool
) -> None:
    whole = feed([data], options, silent_before=silent_before, end_with_idle=True)
    assert (
        feed(pieces(data, cuts), options, silent_before=silent_before, end_with_idle=True) == whole
    )


@settings(max_examples=200)
@given(
    steps=st.lists(
        st.tuples(st.one_of(st.binary(max_size=200), st.sampled_from(FRAGMENTS)), st.floats(0, 5)),
        max_size=20,
    ),
    options=small_limits,
)
def test_any_bytes_at_any_times_never_raise_and_stay_bounded(
    steps: list[tuple[bytes, float]], options: TicketOptions
) -> None:
    parser = TicketParser(options)
    now = 0.0
    for data, delay in steps:
        now += delay
        if delay > 4:
            parser.tick(now)
        else:
            parser.receive_data(data, now)
        assert parser.buffered_bytes <= options.max_bytes
        deadline = parser.next_deadline()
        assert deadline is None or deadline <= now + options.idle_gap_s
        for event in parser.events():
            if isinstance(event, Measurement):
                moisture = event.fields["moisture_pct"]
                assert isinstance(moisture, float)
                assert 0.0 <= moisture <= 60.0
                assert event.audit is not None
                assert len(event.audit) <= options.max_audit_bytes
            else:
                assert len(event.data) <= options.max_audit_bytes


NO_U = bytes(b for b in range(256) if b not in b"uU")


@settings(max_examples=200)
@given(
    garbage=st.lists(st.sampled_from(NO_U), max_size=600).map(bytes),
    cuts=st.lists(st.integers(0, 600)),
)
def test_garbage_without_a_moisture_label_yields_no_measurement(
    garbage: bytes, cuts: list[int]
) -> None:
    # Precisely: the default moisture pattern needs the letters "umid", so bytes
    # without 'u'/'U' can never be a reading, however they are cut or framed.
    events = feed(pieces(garbage, cuts), end_with_idle=True)
    assert not any(isinstance(e, Measurement) for e in events)


words = st.text(
    alphabet=string.ascii_letters + string.digits + "-/_#ºãçé", min_size=1, max_size=12
).filter(lambda s: s[0] not in ".:=")
products = (
    st.text(alphabet=string.ascii_letters + string.digits + " -_#ãçéÁÉ", min_size=1, max_size=24)
    .map(str.strip)
    .filter(bool)
)


def tenths(low: int, high: int) -> st.SearchStrategy[float]:
    return st.integers(low, high).map(lambda n: n / 10)


def hundredths(low: int, high: int) -> st.SearchStrategy[float]:
    return st.integers(low, high).map(lambda n: n / 100)


@settings(max_examples=200)
@given(
    moisture=tenths(0, 600),
    product=st.none() | products,
    temperature=st.none() | tenths(-999, 999),
    density=st.none() | hundredths(1000, 99999),
    mass=st.none() | hundredths(0, 999999),
    sample_id=st.none() | words,
    lot=st.none() | words,
    meter_time=st.none()
    | st.sampled_from(["12/05/2025 14:03", "01/01/25 00:00:59", "31/12/1999 23:59"]),
    header=st.sampled_from(["GEHAKA G650", "", "  G939 Gehaka", "Medidor de umidade"]),
    escpos=st.booleans(),
    form_feed=st.booleans(),
    line_ending=st.sampled_from([b"\r\n", b"\r", b"\n"]),
    decimal_comma=st.booleans(),
)
def test_decode_of_encode_is_identity(
    moisture: float,
    product: str | None,
    temperature: float | None,
    density: float | None,
    mass: float | None,
    sample_id: str | None,
    lot: str | None,
    meter_time: str | None,
    header: str,
    escpos: bool,
    form_feed: bool,
    line_ending: bytes,
    decimal_comma: bool,
) -> None:
    data = encode_ticket(
        moisture_pct=moisture,
        product=product,
        temperature_c=temperature,
        bulk_density_kg_hl=density,
        sample_mass_g=mass,
        sample_id=sample_id,
        lot=lot,
        meter_time=meter_time,
        header=header,
        escpos=escpos,
        form_feed=form_feed,
        line_ending=line_ending,
        decimal_comma=decimal_comma,
    )
    values: dict[str, FieldValue | None] = {
        "moisture_pct": moisture,
        "temperature_c": temperature,
        "bulk_density_kg_hl": density,
        "sample_mass_g": mass,
        "sample_id": sample_id,
        "meter_time": meter_time,
    }
    fields = {k: v for k, v in values.items() if v is not None}
    tags = {k: v for k, v in {"product": product, "lot": lot}.items() if v is not None}
    assert summary(decode_ticket(data)) == [measured(fields, tags)]


@settings(max_examples=100)
@given(
    garbage=st.lists(st.binary(max_size=80), min_size=1, max_size=5),
    moistures=st.lists(tenths(0, 600), min_size=1, max_size=5),
)
def test_garbage_between_tickets_separated_by_form_feeds_loses_nothing(
    garbage: list[bytes], moistures: list[float]
) -> None:
    tickets = [
        encode_ticket(moisture_pct=m, sample_id=f"{i:04d}", product="CAFE")
        for i, m in enumerate(moistures)
    ]
    stream = b""
    for i, ticket in enumerate(tickets):
        # CR LF before the FF: a command cut at the end of the garbage takes at most
        # two bytes as its parameters (GS V B n), as it would on the printer.
        stream += garbage[i % len(garbage)] + b"\r\n\x0c" + ticket
    got = iter(
        (e.fields.get("sample_id"), e.fields["moisture_pct"])
        for e in feed([stream])
        if isinstance(e, Measurement)
    )
    # Every valid ticket comes out, in order (garbage alone may not add readings,
    # but that is the previous property's business).
    for i, moisture in enumerate(moistures):
        assert (f"{i:04d}", moisture) in got


@pytest.mark.parametrize("terminator", [b"\r\n", b"\n", b"", b"\x0c"])
def test_line_noise_between_two_tickets_costs_no_ticket(terminator: bytes) -> None:
    # A burst of line noise longer than a ticket may be, printed right after a ticket
    # ended: the noise is dropped and the parser stays at the boundary it was at, so
    # the next ticket still begins cleanly (it used to be skipped up to its own end).
    options = TicketOptions(max_bytes=256)
    noise = bytes(range(0x21, 0x7F)) * 10  # 940 printable bytes, no line ending
    first = T + b"Umidade: 11,0\r\n\x0c"
    second = T + b"Umidade: 12,0\r\n\x0c"
    data = first + noise + terminator + second
    expected = [
        measured({"moisture_pct": 11.0}),
        dropped("too-long"),
        measured({"moisture_pct": 12.0}),
    ]
    assert summary(feed([data], options)) == expected
    assert summary(feed([bytes([b]) for b in data], options)) == expected


def test_noise_inside_a_ticket_still_drops_that_ticket() -> None:
    options = TicketOptions(max_bytes=256)
    data = T + b"Umidade: 11,0\r\n" + b"n" * 600 + b"\r\n\x0c" + T + b"Umidade: 12,0\r\n\x0c"
    expected = [dropped("too-long"), measured({"moisture_pct": 12.0})]
    assert summary(feed([data], options)) == expected
