"""scale.ascii: A&D and generic ``ST,GS`` weight lines, both ways."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.errors import DriverUsageError
from coffee_telemetry.agent.onboard.propose import event_json
from coffee_telemetry.drivers.events import Discarded, FieldValue, Measurement
from coffee_telemetry.drivers.scale_ascii import (
    UNIT_TO_KG,
    AsciiScaleParser,
    AsciiWeight,
    Kind,
    decode_line,
    encode_line,
)
from coffee_telemetry.drivers.scale_toledo import ScaleReporter

CASES_DIR = Path(__file__).parents[1] / "cases" / "scale_ascii"


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed(
    chunks: list[bytes], *, flush: bool = True, republish_s: float = 5.0
) -> list[Measurement | Discarded]:
    parser = AsciiScaleParser(republish_s=republish_s)
    for chunk in chunks:
        parser.receive_data(chunk, 0.0)
    if flush:
        parser.tick(1.0)
    return parser.events()


@dataclass(frozen=True)
class Case:
    line: bytes
    encode: dict[str, object]
    decoded: AsciiWeight
    fields: dict[str, FieldValue]


# The examples of device-protocols.md §2.4 and §2.5, and the shapes around them.
CASES = [
    Case(
        b"ST,+00123.45  g\r\n",
        {"weight": 123.45, "unit": "g"},
        AsciiWeight("ST", None, 123.45, 2, "g"),
        {"weight_kg": 0.12345, "stable": True, "quality": "ok"},
    ),
    Case(
        b"US,-0001.250 kg\r\n",
        {"weight": -1.25, "decimals": 3, "header": "US"},
        AsciiWeight("US", None, -1.25, 3, "kg", negative=True),
        {"weight_kg": -1.25, "stable": False, "quality": "unstable"},
    ),
    Case(
        b"OL,+999999.9  g\r\n",
        {"weight": 999999.9, "decimals": 1, "unit": "g", "header": "OL"},
        AsciiWeight("OL", None, 999999.9, 1, "g"),
        {"stable": False, "quality": "overload"},
    ),
    Case(
        b"ST,NT,+0012.34kg\r\n",
        {"weight": 12.34, "kind": "NT", "zero_pad": True},
        AsciiWeight("ST", "NT", 12.34, 2, "kg"),
        {"weight_kg": 12.34, "stable": True, "quality": "ok", "net": True},
    ),
    Case(
        b"ST,GS,+  1.250kg\r\n",
        {"weight": 1.25, "decimals": 3, "kind": "GS"},
        AsciiWeight("ST", "GS", 1.25, 3, "kg"),
        {"weight_kg": 1.25, "stable": True, "quality": "ok", "net": False},
    ),
    Case(
        b"US,NT,-   12.5,lb\r\n",
        {
            "weight": -12.5,
            "decimals": 1,
            "unit": "lb",
            "header": "US",
            "kind": "NT",
            "comma_before_unit": True,
        },
        AsciiWeight("US", "NT", -12.5, 1, "lb", negative=True),
        {"weight_kg": -5.669904625, "stable": False, "quality": "unstable", "net": True},
    ),
    Case(
        b"ST,TR,+   5.00kg\r\n",
        {"weight": 5.0, "kind": "TR"},
        AsciiWeight("ST", "TR", 5.0, 2, "kg"),
        {"tare_kg": 5.0, "stable": True, "quality": "ok"},
    ),
    Case(
        b"LO,GS,+       kg\r\n",
        {"weight": None, "header": "LO", "kind": "GS"},
        AsciiWeight("LO", "GS", None, 0, "kg"),
        {"stable": False, "quality": "overload", "net": False},
    ),
    Case(
        b"OL,GS,-  0.500t\r\n",
        {"weight": -0.5, "decimals": 3, "unit": "t", "header": "OL", "kind": "GS"},
        AsciiWeight("OL", "GS", -0.5, 3, "t", negative=True),
        {"stable": False, "quality": "underload", "net": False},
    ),
    Case(
        b"ST,GS,+ 16.000oz\r\n",
        {"weight": 16.0, "decimals": 3, "unit": "oz", "kind": "GS"},
        AsciiWeight("ST", "GS", 16.0, 3, "oz"),
        {"weight_kg": 0.45359237, "stable": True, "quality": "ok", "net": False},
    ),
]


def ids(case: Case) -> str:
    return case.line.decode().strip()


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_encodes_to_the_line(case: Case) -> None:
    assert encode_line(**case.encode) == case.line  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_line_decodes(case: Case) -> None:
    assert decode_line(case.line) == case.decoded


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_line_whole_byte_by_byte_and_with_trailing_bytes(case: Case) -> None:
    unit = case.decoded.unit
    expected = [
        Measurement(
            measurement="scale",
            fields=case.fields,
            tags={"unit_raw": unit},
            raw=case.line.rstrip(),
        )
    ]
    assert feed([case.line]) == expected
    assert feed([bytes([b]) for b in case.line]) == expected
    assert feed([case.line + b"ST,GS,+ "], flush=False) == expected
    # A CR alone ends the line too, once the next byte (or a silence) shows no LF follows.
    assert feed([case.line.rstrip(b"\n")]) == expected


@pytest.mark.parametrize(
    ("line", "decoded"),
    [
        (b"ST,GS,   1.250 kg", AsciiWeight("ST", "GS", 1.25, 3, "kg")),  # space sign
        (b"ST,GS,1.250kg", AsciiWeight("ST", "GS", 1.25, 3, "kg")),  # no sign
        (b"ST,GS+  1.250kg", AsciiWeight("ST", "GS", 1.25, 3, "kg")),  # no comma
        (b"OL,-9999999  g", AsciiWeight("OL", None, -9999999.0, 0, "g", negative=True)),
        (b"QT,+00000012 PC", AsciiWeight("QT", None, 12.0, 0, "PC")),
        (b"ST,GS,+  1.250kg  ", AsciiWeight("ST", "GS", 1.25, 3, "kg")),
    ],
)
def test_published_variants_decode(line: bytes, decoded: AsciiWeight) -> None:
    assert decode_line(line) == decoded


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"ST,+00123.45 ct", "unknown-unit"),
        (b"ST,GS,+  1.250kgs", "bad-line"),
        (b"XX,GS,+  1.250kg", "bad-line"),
        (b"ST,XX,+  1.250kg", "bad-line"),
        (b"ST,+0123.45", "bad-line"),
        (b"ST,GS,+  1..25kg", "bad-weight"),
        (b"ST,GS,+ 1 250kg", "bad-weight"),
        (b"ST,GS,+       kg", "bad-weight"),  # blank digits only out of range
        (b"LO,GS,+  1 .2kg", "bad-weight"),
        (b"ST,+0012..45  g", "bad-weight"),
        (b"\xff\xfe\xfd\x80ST", "framing-suspect"),
    ],
)
def test_malformed_lines(line: bytes, reason: str) -> None:
    decoded = decode_line(line)
    assert isinstance(decoded, Discarded)
    assert decoded.reason == reason
    assert reasons_of(feed([line + b"\r\n"])) == [reason]


def reasons_of(events: list[Measurement | Discarded]) -> list[str]:
    return [e.reason if isinstance(e, Discarded) else e.measurement for e in events]


def test_piece_counts_are_not_weights() -> None:
    parser = AsciiScaleParser()
    parser.receive_data(b"QT,+00000012 PC\r\n", 0.0)
    assert reasons_of(parser.events()) == ["not-a-weight"]
    assert (parser.frames_ok, parser.frames_discarded) == (0, 1)


def test_blank_lines_are_ignored_and_long_lines_dropped() -> None:
    events = feed([b"\r\n  \r\n" + b"9" * 200 + b"\r\nST,GS,+  1.250kg\r\n"])
    assert reasons_of(events) == ["too-long", "scale"]


def test_a_silence_ends_a_cr_line_and_cuts_an_open_one() -> None:
    parser = AsciiScaleParser()
    assert parser.next_deadline() is None
    parser.receive_data(b"ST,GS,+  1.250kg\r", 10.0)
    assert parser.events() == []
    assert parser.next_deadline() == 10.5
    parser.tick(10.4)
    assert parser.events() == []
    parser.tick(10.5)
    assert reasons_of(parser.events()) == ["scale"]
    assert parser.next_deadline() is None
    parser.receive_data(b"ST,GS,+  1.2", 11.0)
    parser.tick(12.0)
    assert reasons_of(parser.events()) == ["truncated"]
    parser.receive_data(b"", 13.0)
    assert parser.next_deadline() is None


def test_a_silence_in_a_too_long_line_ends_it_quietly() -> None:
    parser = AsciiScaleParser(max_line=16)
    parser.receive_data(b"9" * 20, 0.0)
    parser.tick(1.0)
    parser.receive_data(b"ST,GS,+  1.25kg\r\n", 2.0)
    assert reasons_of(parser.events()) == ["too-long", "scale"]


def test_readings_are_rate_limited_and_weighments_found() -> None:
    parser = AsciiScaleParser()
    lines = [encode_line(w, kind="GS", header="US") for w in (10.0, 40.0, 49.0)]
    lines += [encode_line(50.0, kind="GS")] * 20
    for i, line in enumerate(lines):
        parser.receive_data(line, i * 0.25)
    events = parser.events()
    assert [e.measurement for e in events if isinstance(e, Measurement)] == [
        "scale",
        "scale",
        "scale",
        "scale",
        "weighment",
    ]
    weighment = events[-1]
    assert isinstance(weighment, Measurement)
    assert weighment.fields == {"weight_kg": 50.0, "stable": True, "net": False}
    assert weighment.tags == {"unit_raw": "kg", "trigger": "stable"}


def test_tare_lines_publish_their_value_and_are_never_weighments() -> None:
    parser = AsciiScaleParser()
    parser.receive_data(encode_line(80.0, kind="GS", header="US"), 0.0)
    for i in range(20):
        parser.receive_data(encode_line(5.0 if i < 10 else 6.0, kind="TR"), 0.1 + i * 0.25)
    events = parser.events()
    assert [e.fields.get("tare_kg") for e in events if isinstance(e, Measurement)] == [
        None,
        5.0,
        6.0,
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight": 1.0, "unit": "ct"},
        {"weight": 1.0, "decimals": 7},
        {"weight": 1.0, "header": "LO"},  # the balance shape has no LO
        {"weight": 1.0, "header": "QT", "kind": "GS"},
        {"weight": 1.0, "kind": "XX"},
        {"weight": None},
        {"weight": None, "kind": "GS"},
        {"weight": math.nan},
        {"weight": 1e9},
        {"weight": 123456.0, "kind": "GS"},
    ],
)
def test_encoder_refuses_what_a_line_cannot_carry(kwargs: dict[str, object]) -> None:
    with pytest.raises(DriverUsageError):
        encode_line(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"idle_gap_s": -1.0},
        {"max_line": 8},
        {"republish_s": math.nan},
        {"weighment_divisions": -2},
    ],
)
def test_bad_options_are_usage_errors(options: dict[str, object]) -> None:
    with pytest.raises(DriverUsageError):
        AsciiScaleParser(**options)  # type: ignore[arg-type]
    if "max_line" not in options and "idle_gap_s" not in options:
        with pytest.raises(DriverUsageError):
            ScaleReporter(**options)  # type: ignore[arg-type]


# -- golden cases --------------------------------------------------------------------------


def replay(data: bytes, *, bytewise: bool = False) -> list[Measurement | Discarded]:
    """What the default parser reports for a capture, one line every 0.25 s."""
    parser = AsciiScaleParser()
    lines = data.splitlines(keepends=True)
    for i, line in enumerate(lines):
        for chunk in [line[j : j + 1] for j in range(len(line))] if bytewise else [line]:
            parser.receive_data(chunk, i * 0.25)
    parser.tick(len(lines) * 0.25 + 10.0)
    return parser.events()


@pytest.mark.parametrize("case", sorted(CASES_DIR.iterdir()), ids=lambda p: p.name)
def test_golden_case(case: Path) -> None:
    data = (case / "input.bin").read_bytes()
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in lines]
    assert [event_json(e) for e in replay(data)] == expected
    assert [event_json(e) for e in replay(data, bytewise=True)] == expected


def test_golden_cases_exist() -> None:
    assert len(list(CASES_DIR.iterdir())) >= 3


# -- properties -------------------------------------------------------------------------------


@st.composite
def lines(draw: st.DrawFn) -> tuple[bytes, AsciiWeight]:
    kinds: list[Kind | None] = [None, "GS", "NT", "TR"]
    kind = draw(st.sampled_from(kinds))
    decimals = draw(st.integers(0, 5))
    width = 8 if kind is None else 7
    limit = 10 ** (width - (decimals + 1 if decimals else 0)) - 1
    count = draw(st.integers(-limit * 10**decimals, limit * 10**decimals))
    weight = count / 10**decimals
    unit = draw(st.sampled_from(sorted(UNIT_TO_KG)))
    headers = ["ST", "US", "OL"] + (["QT"] if kind is None else ["LO"])
    header = draw(st.sampled_from(headers))
    line = encode_line(
        weight,
        unit=unit,
        decimals=decimals,
        header=header,
        kind=kind,
        zero_pad=draw(st.booleans()),
        comma_before_unit=draw(st.booleans()),
    )
    return line, AsciiWeight(header, kind, weight, decimals, unit, count < 0)


@settings(max_examples=200)
@given(case=lines())
def test_decode_of_encode_is_identity(case: tuple[bytes, AsciiWeight]) -> None:
    line, expected = case
    assert decode_line(line) == expected


@settings(max_examples=100)
@given(cases=st.lists(lines(), max_size=8), cuts=st.lists(st.integers(0, 200)))
def test_any_chunking_gives_the_same_events(
    cases: list[tuple[bytes, AsciiWeight]], cuts: list[int]
) -> None:
    data = b"".join(line for line, _ in cases)
    assert feed(pieces(data, cuts)) == feed([data])
    parser = AsciiScaleParser()
    parser.receive_data(data, 0.0)
    counts = sum(d.header == "QT" for _, d in cases)
    assert (parser.frames_ok, parser.frames_discarded) == (len(cases) - counts, counts)


@settings(max_examples=200)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300)))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    events = feed(pieces(data, cuts))
    assert events == feed([data])
    for event in events:
        if isinstance(event, Measurement):
            assert isinstance(decode_line(event.raw), AsciiWeight)
