"""moisture.tesma: 18-byte frames once a second in, one Measurement per stable change out."""

from __future__ import annotations

import itertools
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.errors import DriverUsageError
from coffee_telemetry.agent.onboard.propose import event_json
from coffee_telemetry.drivers.events import Discarded, Measurement
from coffee_telemetry.drivers.moisture_tesma import (
    FRAME_LEN,
    TesmaParser,
    decode_frame,
    encode_frame,
)

CASES_DIR = Path(__file__).parents[1] / "cases" / "moisture_tesma"

#: The test vector of device-protocols.md §6 A1.
SPEC_FRAME = bytes.fromhex("02 4D 41 49 5A 20 20 20 20 0D 0A 31 34 2E 34 0D 0A 03")


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed(
    chunks: list[bytes], *, debounce: int = 2, max_frame: int = 64
) -> list[Measurement | Discarded]:
    parser = TesmaParser(debounce=debounce, max_frame=max_frame)
    for chunk in chunks:
        parser.receive_data(chunk)
        assert parser.buffered_bytes <= 2 * max_frame
    return parser.events()


def summary(events: list[Measurement | Discarded]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for event in events:
        match event:
            case Measurement():
                out.append((str(event.tags["product"]), event.fields["moisture_pct"]))
            case Discarded():
                out.append(("discarded", event.reason))
            case _:
                assert_never(event)
    return out


def reading(grain: str, moisture: float) -> Measurement:
    return Measurement(
        measurement="moisture",
        fields={"moisture_pct": moisture},
        tags={"product": grain},
        raw=encode_frame(grain, moisture),
    )


# -- the spec's vector ---------------------------------------------------------------


def test_spec_vector_after_debounce() -> None:
    parser = TesmaParser()
    parser.receive_data(SPEC_FRAME)
    assert parser.events() == []  # seen once: not yet stable
    parser.receive_data(SPEC_FRAME)
    assert parser.events() == [reading("MAIZ", 14.4)]
    parser.receive_data(SPEC_FRAME * 5)
    assert parser.events() == []  # the same value again is no news
    assert (parser.frames_ok, parser.frames_discarded) == (7, 0)


def test_encode_frame_builds_the_spec_vector() -> None:
    assert encode_frame("MAIZ", 14.4) == SPEC_FRAME
    assert decode_frame(SPEC_FRAME) == reading("MAIZ", 14.4)


# -- tables, bytes -> events (whole, byte by byte, with trailing bytes) ------------------

M = encode_frame("MAIZ", 14.4)
S = encode_frame("SOJA", 12.0)
BYTE_CASES: list[tuple[str, bytes, list[tuple[str, object]]]] = [
    ("debounced", M + M, [("MAIZ", 14.4)]),
    ("one frame is not enough", M, []),
    ("change of grain", M + M + S + S + M + M, [("MAIZ", 14.4), ("SOJA", 12.0), ("MAIZ", 14.4)]),
    (
        "a bad frame breaks the run",
        M + M[:9] + b"\n\r" + M[11:] + M,
        [("discarded", "bad-separator")],
    ),
    ("bad value", M.replace(b"14.4", b"14,4"), [("discarded", "bad-value")]),
    ("value needs two digits", M.replace(b"14.4", b" 4.4"), [("discarded", "bad-value")]),
    ("blank grain", b"\x02" + b" " * 8 + M[9:], [("discarded", "bad-grain")]),
    ("control byte in grain", b"\x02MA\x07Z    " + M[9:], [("discarded", "bad-grain")]),
    ("short", b"\x02MAIZ\r\n14.4\r\n\x03", [("discarded", "bad-length")]),
    ("second STX cuts a frame", M[:12] + M + M, [("discarded", "truncated"), ("MAIZ", 14.4)]),
    (
        "stray bytes do not break the run",
        M + b"\r\n" + M,
        [("discarded", "outside-frame"), ("MAIZ", 14.4)],
    ),
    ("stray bytes reported at the next STX", b"xyz" + M, [("discarded", "outside-frame")]),
    (
        "too long",
        b"\x02" + b"A" * 70 + M,
        [("discarded", "too-long"), ("discarded", "outside-frame")],
    ),
    ("latin-1 grain", encode_frame("CAFÉ", 11.0) * 2, [("CAFÉ", 11.0)]),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in BYTE_CASES], ids=[c[0] for c in BYTE_CASES]
)
def test_bytes_to_events(data: bytes, expected: list[tuple[str, object]]) -> None:
    assert summary(feed([data])) == expected
    assert summary(feed([bytes([b]) for b in data])) == expected
    assert summary(feed([data + M[:10]])) == expected  # an unfinished frame adds nothing


# -- tables, events -> bytes -> events -----------------------------------------------------

ENCODE_CASES = [
    ("MAIZ", 14.4),
    ("SOJA", 0.0),
    ("TRIGO", 99.9),
    ("A", 5.0),
    ("GIRASOL1", 9.95),
    ("Café", 12.3),
]


@pytest.mark.parametrize(("grain", "moisture"), ENCODE_CASES)
def test_encode_then_decode(grain: str, moisture: float) -> None:
    frame = encode_frame(grain, moisture)
    assert len(frame) == FRAME_LEN
    shown = float(f"{moisture:.1f}")
    assert decode_frame(frame) == reading(grain, shown)
    assert feed([frame, frame]) == [reading(grain, shown)]


@pytest.mark.parametrize(
    ("grain", "moisture"),
    [
        ("", 10.0),
        ("   ", 10.0),
        ("GIRASOL12", 10.0),  # 9 characters
        ("MAIZ ", 10.0),  # trailing space: lost in the padding
        ("MA\tIZ", 10.0),
        ("MA\x03Z", 10.0),
        ("MAÏZ\u0100", 10.0),  # not latin-1
        ("MAIZ", -0.1),
        ("MAIZ", 99.96),
        ("MAIZ", float("nan")),
        ("MAIZ", float("inf")),
    ],
)
def test_encode_refuses_what_a_frame_cannot_carry(grain: str, moisture: float) -> None:
    with pytest.raises(DriverUsageError):
        encode_frame(grain, moisture)


@pytest.mark.parametrize("kwargs", [{"debounce": 0}, {"max_frame": 17}])
def test_bad_options_are_a_usage_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(DriverUsageError):
        TesmaParser(**kwargs)


def test_debounce_one_reports_every_change() -> None:
    assert summary(feed([M + S + S + M], debounce=1)) == [
        ("MAIZ", 14.4),
        ("SOJA", 12.0),
        ("MAIZ", 14.4),
    ]


def test_discarded_data_is_capped() -> None:
    events = feed([b"x" * 100 + b"\x02" + b"A" * 100], max_frame=20)
    assert events == [
        Discarded(data=b"x" * 20, reason="outside-frame"),
        Discarded(data=b"\x02" + b"A" * 19, reason="too-long"),
    ]


def test_megabytes_of_noise_stay_bounded() -> None:
    parser = TesmaParser()
    block = b"\x02" + bytes(range(0x20, 0x7F)) * 100  # STX, then far too long
    for _ in range(5_000_000 // len(block)):
        parser.receive_data(block)
        assert parser.buffered_bytes <= 128
    assert {e.reason for e in parser.events() if isinstance(e, Discarded)} == {
        "too-long",
        "outside-frame",
    }
    parser.receive_data(M + M)
    assert parser.events()[-1] == reading("MAIZ", 14.4)


# -- golden cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES_DIR.iterdir()), ids=lambda p: p.name)
def test_golden_case(case: Path) -> None:
    data = (case / "input.bin").read_bytes()
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in lines]
    assert [event_json(e) for e in feed([data])] == expected
    assert [event_json(e) for e in feed([bytes([b]) for b in data])] == expected


def test_golden_cases_exist() -> None:
    assert len(list(CASES_DIR.iterdir())) >= 5


# -- properties ------------------------------------------------------------------------------

grains = (
    st.text(alphabet=string.ascii_uppercase + string.digits + " -ÁÉÇÃ", min_size=1, max_size=8)
    .map(str.rstrip)
    .filter(lambda g: g.strip() != "")
)
values = st.integers(0, 999).map(lambda n: n / 10)


@settings(max_examples=200)
@given(grain=grains, moisture=values, debounce=st.integers(1, 4))
def test_decode_of_encode_is_identity(grain: str, moisture: float, debounce: int) -> None:
    frame = encode_frame(grain, moisture)
    assert decode_frame(frame) == reading(grain, moisture)
    assert feed([frame * debounce], debounce=debounce) == [reading(grain, moisture)]
    assert feed([frame * (debounce - 1)], debounce=debounce) == []


@settings(max_examples=200)
@given(
    data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400)), max_frame=st.integers(18, 40)
)
def test_any_bytes_in_any_chunking_never_raise_and_give_the_same_events(
    data: bytes, cuts: list[int], max_frame: int
) -> None:
    whole = feed([data], max_frame=max_frame)
    assert feed(pieces(data, cuts), max_frame=max_frame) == whole


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_random_bytes_report_only_frames_repeated_debounce_times(data: bytes) -> None:
    # Precisely: bytes without STX never give a Measurement; and any Measurement's
    # frame occurs in the input at least `debounce` times.
    for event in feed([data]):
        if isinstance(event, Measurement):
            assert data.count(event.raw) >= 2
    stripped = data.replace(b"\x02", b"")
    assert not any(isinstance(e, Measurement) for e in feed([stripped]))


@dataclass(frozen=True)
class Valid:
    grain: str
    moisture: float


@dataclass(frozen=True)
class Invalid:
    frame: bytes  # starts with STX, ends with ETX, fails decode_frame


@dataclass(frozen=True)
class Stray:
    data: bytes  # holds no STX and no ETX


Element = Valid | Invalid | Stray

_NO_FRAMING = bytes(b for b in range(256) if b not in (0x02, 0x03))
elements: st.SearchStrategy[Element] = st.one_of(
    st.builds(Valid, st.sampled_from(["MAIZ", "SOJA"]), st.sampled_from([14.4, 14.5])),
    st.builds(
        Invalid,
        st.lists(st.sampled_from(_NO_FRAMING), max_size=40)
        .map(lambda b: b"\x02" + bytes(b) + b"\x03")
        .filter(lambda f: isinstance(decode_frame(f), Discarded)),
    ),
    st.builds(Stray, st.lists(st.sampled_from(_NO_FRAMING), min_size=1, max_size=10).map(bytes)),
)


def model(stream: list[Element], debounce: int) -> list[tuple[str, object]]:
    """The spec's rule, stated over frames instead of bytes."""
    out: list[tuple[str, object]] = []
    run: tuple[str, float] | None = None
    count = 0
    reported: tuple[str, float] | None = None
    for element in stream:
        match element:
            case Valid(grain, moisture):
                count = count + 1 if run == (grain, moisture) else 1
                run = (grain, moisture)
                if count >= debounce and run != reported:
                    reported = run
                    out.append(run)
            case Invalid():
                run, count = None, 0
            case Stray():
                pass
    return out


def encode_element(element: Element) -> bytes:
    match element:
        case Valid(grain, moisture):
            return encode_frame(grain, moisture)
        case Invalid(frame):
            return frame
        case Stray(data):
            return data
        case _:
            assert_never(element)


@settings(max_examples=200)
@given(
    stream=st.lists(elements, max_size=30),
    debounce=st.integers(1, 3),
    cuts=st.lists(st.integers(0, 900)),
)
def test_measurements_follow_the_debounce_rule(
    stream: list[Element], debounce: int, cuts: list[int]
) -> None:
    # A pair is reported when it is the `debounce`-th valid frame in a row (an invalid
    # frame resets the count, stray bytes do not) and differs from the last report.
    data = b"".join(encode_element(e) for e in stream)
    events = feed(pieces(data, cuts), debounce=debounce)
    assert [s for s in summary(events) if s[0] != "discarded"] == model(stream, debounce)
