"""scale.toledo_continuous: frames in, rate-limited readings and weighments out."""

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
from coffee_telemetry.drivers.scale_toledo import (
    STX,
    ChecksumMode,
    ToledoFrame,
    ToledoParser,
    checksum,
    decode_frame,
    encode_frame,
)

CASES_DIR = Path(__file__).parents[1] / "cases" / "scale_toledo"

#: The test vectors of device-protocols.md §2.2 and §6 C.
GROSS = bytes.fromhex("02 2C 30 20 31 32 33 34 35 36 30 30 30 30 30 30 0D 20")
NET_MOTION = bytes.fromhex("02 2C 39 20 20 20 35 30 32 35 20 20 30 35 30 30 0D 5B")
#: A frame whose checksum is 0x02, the STX byte (9999.96 kg gross, stable).
CHK_IS_STX = bytes.fromhex("02 2C 30 20 39 39 39 39 39 36 30 30 30 30 30 30 0D 02")


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed(
    chunks: list[bytes],
    *,
    now: float = 0.0,
    flush: bool = True,
    checksum: ChecksumMode = "auto",
    republish_s: float = 5.0,
) -> list[Measurement | Discarded]:
    parser = ToledoParser(checksum=checksum, republish_s=republish_s)
    for chunk in chunks:
        parser.receive_data(chunk, now)
        assert parser.buffered_bytes <= 18 + 64
    if flush:
        parser.tick(now + 1.0)  # a frame held for its checksum ends after a silence
    return parser.events()


def scale(raw: bytes, unit: str = "kg", **fields: FieldValue) -> Measurement:
    return Measurement(measurement="scale", fields=fields, tags={"unit_raw": unit}, raw=raw)


def reasons(events: list[Measurement | Discarded]) -> list[str]:
    return [e.reason if isinstance(e, Discarded) else e.measurement for e in events]


# -- the frame table, both ways --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Frame bytes, the encoder call that builds them, the frame and the reading."""

    name: str
    data: bytes
    encode: dict[str, object]
    frame: ToledoFrame
    fields: dict[str, FieldValue]
    unit: str = "kg"


CASES = [
    Case(
        "spec-gross-stable",
        GROSS,
        {"weight": 1234.56, "tare": 0.0},
        ToledoFrame(1234.56, 0.0, "kg", 2, 1, checksum=True),
        {"weight_kg": 1234.56, "tare_kg": 0.0, "stable": True, "quality": "ok", "net": False},
    ),
    Case(
        "spec-net-motion-spaces",
        NET_MOTION,
        {"weight": 50.25, "tare": 5.0, "net": True, "motion": True, "pad_spaces": 2},
        ToledoFrame(50.25, 5.0, "kg", 2, 1, net=True, motion=True, checksum=True),
        {"weight_kg": 50.25, "tare_kg": 5.0, "stable": False, "quality": "unstable", "net": True},
    ),
    Case(
        "short-lb-no-checksum",
        b"\x02\x2b\x20\x20001234\r",
        {"weight": 123.4, "tare": None, "decimals": 1, "unit": "lb", "checksum": False},
        ToledoFrame(123.4, None, "lb", 1, 1),
        {"weight_kg": 55.973298458, "stable": True, "quality": "ok", "net": False},
        "lb",
    ),
    Case(
        "grams-negative",
        encode_frame(-250.0, 0.0, decimals=0, unit="g"),
        {"weight": -250.0, "tare": 0.0, "decimals": 0, "unit": "g"},
        ToledoFrame(-250.0, 0.0, "g", 0, 1, negative=True, checksum=True),
        {"weight_kg": -0.25, "tare_kg": 0.0, "stable": True, "quality": "ok", "net": False},
        "g",
    ),
    Case(
        "x100-by-5",
        encode_frame(123500.0, 500.0, decimals=-2, increment=5),
        {"weight": 123500.0, "tare": 500.0, "decimals": -2, "increment": 5},
        ToledoFrame(123500.0, 500.0, "kg", -2, 5, checksum=True),
        {"weight_kg": 123500.0, "tare_kg": 500.0, "stable": True, "quality": "ok", "net": False},
    ),
    Case(
        "five-decimals-by-2",
        encode_frame(1.23456, 0.5, decimals=5, increment=2, pad_spaces=6),
        {"weight": 1.23456, "tare": 0.5, "decimals": 5, "increment": 2, "pad_spaces": 6},
        ToledoFrame(1.23456, 0.5, "kg", 5, 2, checksum=True),
        {"weight_kg": 1.23456, "tare_kg": 0.5, "stable": True, "quality": "ok", "net": False},
    ),
    Case(
        "overload",
        encode_frame(999.99, 0.0, out_of_range=True),
        {"weight": 999.99, "tare": 0.0, "out_of_range": True},
        ToledoFrame(999.99, 0.0, "kg", 2, 1, out_of_range=True, checksum=True),
        {"tare_kg": 0.0, "stable": False, "quality": "overload", "net": False},
    ),
    Case(
        "underload",
        encode_frame(-5.0, 0.0, out_of_range=True, motion=True),
        {"weight": -5.0, "tare": 0.0, "out_of_range": True, "motion": True},
        ToledoFrame(
            -5.0, 0.0, "kg", 2, 1, negative=True, motion=True, out_of_range=True, checksum=True
        ),
        {"tare_kg": 0.0, "stable": False, "quality": "underload", "net": False},
    ),
    Case(
        "not-zeroed-print-expanded",
        encode_frame(10.0, 0.0, not_zeroed=True, print_request=True, expanded=True),
        {"weight": 10.0, "tare": 0.0, "not_zeroed": True, "print_request": True, "expanded": True},
        ToledoFrame(
            10.0, 0.0, "kg", 2, 1, print_request=True, not_zeroed=True, expanded=True, checksum=True
        ),
        {"weight_kg": 10.0, "tare_kg": 0.0, "stable": True, "quality": "suspect", "net": False},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_frame_encodes_to_the_bytes(case: Case) -> None:
    assert encode_frame(**case.encode) == case.data  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bytes_decode_to_the_frame(case: Case) -> None:
    assert decode_frame(case.data) == case.frame


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_frame_whole_byte_by_byte_and_with_trailing_bytes(case: Case) -> None:
    expected = [scale(case.data, case.unit, **case.fields)]
    assert feed([case.data]) == expected
    assert feed([bytes([b]) for b in case.data]) == expected
    # The start of the next frame: nothing more until it is whole.
    assert feed([case.data + b"\x02\x2c0 12"], flush=False) == expected


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parity_in_bit_7_is_masked(case: Case) -> None:
    noisy = bytes(b | 0x80 for b in case.data)
    assert decode_frame(noisy) == case.frame
    assert feed([noisy]) == [scale(case.data, case.unit, **case.fields)]


def test_spec_vectors() -> None:
    first, second = feed([GROSS + NET_MOTION])
    assert isinstance(first, Measurement)
    assert isinstance(second, Measurement)
    assert first.fields == {
        "weight_kg": 1234.56,
        "tare_kg": 0.0,
        "stable": True,
        "quality": "ok",
        "net": False,
    }
    assert second.fields["weight_kg"] == 50.25
    assert second.fields["tare_kg"] == 5.0
    assert (second.fields["net"], second.fields["stable"]) == (True, False)
    decoded = decode_frame(NET_MOTION)
    assert isinstance(decoded, ToledoFrame)
    assert decoded.division == 0.01
    assert decode_frame(encode_frame(123500.0, None, decimals=-2, increment=5)) == ToledoFrame(
        123500.0, None, "kg", -2, 5, checksum=True
    )


def test_checksum_of_the_spec_vectors() -> None:
    assert checksum(GROSS[:-1]) == 0x20
    assert checksum(NET_MOTION[:-1]) == 0x5B
    assert checksum(bytes(b | 0x80 for b in GROSS[:-1])) == 0x20


def test_an_increment_code_of_zero_reads_as_one() -> None:
    frame = bytearray(GROSS[:-1])
    frame[1] = 0x24  # two decimals, increment bits 00
    decoded = decode_frame(bytes(frame))
    assert isinstance(decoded, ToledoFrame)
    assert decoded.increment == 1


def test_fairbanks_status_b_bit_5_is_ignored() -> None:
    frame = bytearray(GROSS[:-1])
    frame[2] &= ~0x20  # Fairbanks documents 0 where Mettler sends 1
    decoded = decode_frame(bytes(frame))
    assert isinstance(decoded, ToledoFrame)
    assert decoded.weight == 1234.56


# -- framing and resync ------------------------------------------------------------------


def with_checksum(frame: bytes) -> bytes:
    return frame + bytes((checksum(frame),))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"3456000000\r " + GROSS, ["outside-frame", "scale"]),
        (GROSS[:9] + GROSS, ["truncated", "scale"]),
        (
            b"\x02\x2c\x30\x20" + b"1" * 20 + b"\r\x00" + GROSS,
            ["too-long", "outside-frame", "scale"],
        ),
        (with_checksum(b"\x02\x2c\x30\x20123456000\r") + GROSS, ["bad-length", "scale"]),
        (GROSS[:-1] + b"\x21" + GROSS, ["bad-checksum", "scale"]),
        (with_checksum(b"\x02\x4c\x30\x20123456000000\r"), ["bad-status"]),  # SWA bit 6
        (with_checksum(b"\x02\x0c\x30\x20123456000000\r"), ["bad-status"]),  # SWA bit 5
        (with_checksum(b"\x02\x2c\x30\x2012 456000000\r"), ["bad-digits"]),
        (with_checksum(b"\x02\x2c\x30\x20      000000\r"), ["bad-digits"]),
        (with_checksum(b"\x02\x2c\x30\x2012345600000A\r"), ["bad-digits"]),
        (with_checksum(b"\x02\x2c\x30\x20-12345000000\r"), ["bad-digits"]),
        (with_checksum(b"\x02\x2c\x30\x20123456      \r"), ["bad-digits"]),  # tare blank
        (with_checksum(b"\x02\x2c\x30\x20\r"), ["bad-length"]),
        (b"\x02\r\x02\r", ["bad-length", "bad-length"]),
    ],
)
def test_broken_frames_are_discarded_and_the_next_one_is_read(
    data: bytes, expected: list[str]
) -> None:
    assert reasons(feed([data])) == expected
    assert reasons(feed([bytes([b]) for b in data])) == expected


def test_out_of_range_weight_need_not_be_digits() -> None:
    frame = with_checksum(b"\x02\x2c\x34\x20------000000\r")
    decoded = decode_frame(frame)
    assert isinstance(decoded, ToledoFrame)
    assert decoded.weight is None
    (event,) = feed([frame])
    assert isinstance(event, Measurement)
    assert event.fields["quality"] == "overload"
    assert "weight_kg" not in event.fields


def test_decode_frame_rejects_what_is_not_one_frame() -> None:
    for data in [b"", b"\x02", GROSS[1:], GROSS + b"\x00", b"\x03" + GROSS[1:]]:
        decoded = decode_frame(data)
        assert isinstance(decoded, Discarded)
        assert decoded.reason == "bad-length"
    decoded = decode_frame(GROSS[:-1] + b"\x21")
    assert isinstance(decoded, Discarded)
    assert decoded.reason == "bad-checksum"
    decoded = decode_frame(with_checksum(b"\x02\x4c\x30\x20123456000000\r"))
    assert isinstance(decoded, Discarded)
    assert decoded.reason == "bad-status"


def test_junk_is_reported_once_per_run_and_capped() -> None:
    events = feed([b"\x00" * 500 + GROSS])
    assert reasons(events) == ["outside-frame", "scale"]
    assert isinstance(events[0], Discarded)
    assert len(events[0].data) == 64


def test_junk_at_the_end_waits_for_the_next_stx() -> None:
    assert feed([GROSS + b"junk"]) == feed([GROSS])


# -- checksum modes ------------------------------------------------------------------------


def test_auto_reads_frames_without_checksum_when_the_next_stx_comes() -> None:
    bare = [GROSS[:-1], NET_MOTION[:-1]]
    events = feed([b"".join(bare)], flush=False)
    assert reasons(events) == ["scale"]  # the second waits to see what follows its CR
    events = feed([b"".join(bare)])
    assert [e.raw for e in events if isinstance(e, Measurement)] == bare


def test_auto_with_a_checksum_equal_to_stx() -> None:
    # CR, 0x02, 0x02: the first 0x02 was the checksum (no frame starts with STX STX).
    events = feed([CHK_IS_STX + GROSS])
    assert [e.raw for e in events if isinstance(e, Measurement)] == [CHK_IS_STX, GROSS]
    # CR, 0x02, SWA: the 0x02 started the next frame; this one had no checksum.
    events = feed([CHK_IS_STX[:-1] + GROSS])
    assert [e.raw for e in events if isinstance(e, Measurement)] == [CHK_IS_STX[:-1], GROSS]
    # CR, 0x02, CR: the 0x02 started a (bad) frame.
    events = feed([CHK_IS_STX + b"\r"])
    assert reasons(events) == ["scale", "bad-length"]
    assert events[0].raw == CHK_IS_STX[:-1]  # type: ignore[union-attr]
    # CR, 0x02, silence: the 0x02 was the checksum.
    parser = ToledoParser()
    parser.receive_data(CHK_IS_STX, 0.0)
    assert parser.events() == []
    assert parser.next_deadline() == 0.5
    parser.tick(0.4)
    assert parser.events() == []
    parser.tick(0.5)
    assert [e.raw for e in parser.events() if isinstance(e, Measurement)] == [CHK_IS_STX]
    assert parser.next_deadline() is None


def test_on_requires_the_checksum() -> None:
    assert reasons(feed([GROSS + NET_MOTION], checksum="on")) == ["scale", "scale"]
    # Without checksums the next STX is taken as one, and the frame after loses its STX.
    events = feed([GROSS[:-1] + NET_MOTION[:-1] + GROSS], checksum="on")
    assert reasons(events) == ["bad-checksum", "outside-frame", "scale"]
    parser = ToledoParser(checksum="on")
    parser.receive_data(GROSS[:-1], 0.0)
    parser.tick(1.0)  # the checksum never came
    assert reasons(parser.events()) == ["truncated"]


def test_off_ignores_the_byte_after_cr() -> None:
    assert reasons(feed([GROSS[:-1] + NET_MOTION[:-1]], checksum="off")) == ["scale", "scale"]
    # Checksums become stray bytes between frames.
    events = feed([GROSS + NET_MOTION + GROSS], checksum="off")
    assert reasons(events) == ["scale", "outside-frame", "scale", "outside-frame", "scale"]


def test_nothing_is_pending_without_a_held_frame() -> None:
    parser = ToledoParser()
    assert parser.next_deadline() is None
    parser.tick(100.0)
    parser.receive_data(b"", 1.0)
    parser.receive_data(GROSS, 1.0)
    assert parser.next_deadline() is None
    parser.receive_data(GROSS[:-1], 2.0)
    assert parser.next_deadline() == 2.5


@pytest.mark.parametrize(
    "options",
    [
        {"checksum": "maybe"},
        {"republish_s": -1.0},
        {"weighment_stable_s": math.nan},
        {"idle_gap_s": math.inf},
        {"weighment_divisions": -1},
    ],
)
def test_bad_options_are_usage_errors(options: dict[str, object]) -> None:
    with pytest.raises(DriverUsageError):
        ToledoParser(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight": 10000.0},  # 1000000 counts with two decimals
        {"weight": -10000.0},
        {"weight": 1.0, "tare": 10000.0},
        {"weight": 1.0, "tare": -1.0},
        {"weight": math.inf},
        {"weight": math.nan},
        {"weight": 1.0, "tare": math.nan},
        {"weight": 1e300},
        {"weight": 1.0, "decimals": 6},
        {"weight": 1.0, "decimals": -3},
        {"weight": 1.0, "increment": 3},
        {"weight": 1.0, "unit": "oz"},
        {"weight": 1.0, "pad_spaces": 7},
        {"weight": 1.0, "pad_spaces": -1},
    ],
)
def test_encoder_refuses_what_a_frame_cannot_express(kwargs: dict[str, object]) -> None:
    with pytest.raises(DriverUsageError):
        encode_frame(**kwargs)  # type: ignore[arg-type]


def test_rounding_to_zero_is_not_negative() -> None:
    decoded = decode_frame(encode_frame(-0.001, 0.0))
    assert isinstance(decoded, ToledoFrame)
    assert (decoded.weight, decoded.negative) == (0.0, False)


def test_padding_never_blanks_the_units_digit() -> None:
    assert encode_frame(0.0, 0.0, pad_spaces=6)[4:16] == b"   000   000"
    assert encode_frame(0.0, 0.0, decimals=0, pad_spaces=6)[4:16] == b"     0     0"
    assert encode_frame(0.0, 0.0, decimals=-2, pad_spaces=6)[4:16] == b"     0     0"
    assert encode_frame(100.5, 0.0, decimals=1, pad_spaces=3)[4:16] == b"  1005   000"


# -- publishing -----------------------------------------------------------------------------


def run_frames(
    frames: list[tuple[float, bytes]], **options: object
) -> list[Measurement | Discarded]:
    parser = ToledoParser(**options)  # type: ignore[arg-type]
    for now, frame in frames:
        parser.receive_data(frame, now)
    return parser.events()


def weights(events: list[Measurement | Discarded], measurement: str = "scale") -> list[object]:
    return [
        e.fields.get("weight_kg")
        for e in events
        if isinstance(e, Measurement) and e.measurement == measurement
    ]


def test_unchanged_readings_are_published_every_five_seconds() -> None:
    frames = [(i / 7, GROSS) for i in range(7 * 12)]  # 12 s at 7 frames/s
    events = run_frames(frames)
    assert len(events) == 3  # at 0 s, 5 s and 10 s
    assert weights(events) == [1234.56] * 3


def test_a_change_of_one_division_waits_more_is_published() -> None:
    frames = [
        (0.0, encode_frame(100.00, 0.0)),
        (0.1, encode_frame(100.01, 0.0)),  # one division: jitter
        (0.2, encode_frame(99.99, 0.0)),  # one division from the published 100.00
        (0.3, encode_frame(100.02, 0.0)),  # two divisions
        (0.4, encode_frame(100.00, 0.0)),
    ]
    assert weights(run_frames(frames)) == [100.0, 100.02, 100.0]
    by_five = [
        (0.0, encode_frame(1000, 0.0, decimals=0, increment=5)),
        (0.1, encode_frame(1005, 0.0, decimals=0, increment=5)),
        (0.2, encode_frame(1010, 0.0, decimals=0, increment=5)),
    ]
    assert weights(run_frames(by_five)) == [1000.0, 1010.0]


def test_any_status_change_is_published_at_once() -> None:
    frames = [
        (0.0, encode_frame(10.0, 0.0)),
        (0.1, encode_frame(10.0, 0.0, motion=True)),
        (0.2, encode_frame(10.0, 1.0, motion=True)),
        (0.3, encode_frame(10.0, 1.0, motion=True, net=True)),
        (0.4, encode_frame(10.0, 1.0, motion=True, net=True, unit="lb")),
        (0.5, encode_frame(10.0, 1.0, motion=True, net=True, unit="lb", out_of_range=True)),
        (0.6, encode_frame(10.0, 1.0, motion=True, net=True, unit="lb", out_of_range=True)),
        (0.7, encode_frame(10.0, 1.0, motion=True, net=True, unit="lb")),
    ]
    assert len(run_frames(frames)) == 7


def test_republish_zero_publishes_every_frame() -> None:
    assert len(run_frames([(0.0, GROSS)] * 4, republish_s=0.0)) == 4


# -- weighments -----------------------------------------------------------------------------

PERIOD = 1 / 7


def timeline(*segments: tuple[int, bytes]) -> list[tuple[float, bytes]]:
    """Frames at 7/s: ``(count, frame)`` segments played one after the other."""
    frames = [frame for count, frame in segments for _ in range(count)]
    return [(i * PERIOD, frame) for i, frame in enumerate(frames)]


def weighments(events: list[Measurement | Discarded]) -> list[Measurement]:
    return [e for e in events if isinstance(e, Measurement) and e.measurement == "weighment"]


MOVING = encode_frame(300.0, 0.0, motion=True)
LOADED = encode_frame(512.5, 0.0)
PRINTING = encode_frame(512.5, 0.0, print_request=True)
EMPTY = encode_frame(0.0, 0.0)


def test_print_request_rising_is_a_weighment() -> None:
    events = run_frames(timeline((3, MOVING), (3, LOADED), (2, PRINTING), (3, LOADED)))
    (weighment,) = weighments(events)
    assert weighment == Measurement(
        measurement="weighment",
        fields={"weight_kg": 512.5, "tare_kg": 0.0, "stable": True, "net": False},
        tags={"unit_raw": "kg", "trigger": "print"},
        raw=PRINTING,
    )


def test_stable_for_two_seconds_after_motion_is_a_weighment() -> None:
    events = run_frames(timeline((5, MOVING), (30, LOADED)))
    (weighment,) = weighments(events)
    assert weighment.tags["trigger"] == "stable"
    assert weighment.fields["weight_kg"] == 512.5
    assert events[-1] is weighment  # and nothing after it: one per load


def test_stable_weighment_time_is_measured_from_the_first_stable_frame() -> None:
    parser = ToledoParser()
    parser.receive_data(MOVING, 0.0)
    parser.receive_data(LOADED, 1.0)
    parser.receive_data(LOADED, 2.99)
    assert weighments(parser.events()) == []
    parser.receive_data(LOADED, 3.0)
    assert len(weighments(parser.events())) == 1


def test_one_weighment_per_load() -> None:
    events = run_frames(
        timeline((5, MOVING), (30, LOADED), (2, PRINTING), (30, LOADED), (2, PRINTING))
    )
    assert [w.tags["trigger"] for w in weighments(events)] == ["stable"]
    # Motion (the next load) arms both triggers again.
    events = run_frames(
        timeline((5, MOVING), (3, LOADED), (2, PRINTING), (5, MOVING), (3, LOADED), (2, PRINTING))
    )
    assert [w.tags["trigger"] for w in weighments(events)] == ["print", "print"]


def test_light_loads_are_not_weighments() -> None:
    ten_divisions = encode_frame(0.10, 0.0)
    eleven = encode_frame(0.11, 0.0)
    assert weighments(run_frames(timeline((5, MOVING), (30, ten_divisions)))) == []
    assert len(weighments(run_frames(timeline((5, MOVING), (30, eleven))))) == 1
    negative = encode_frame(-0.11, 0.0)
    assert len(weighments(run_frames(timeline((5, MOVING), (30, negative))))) == 1


def test_drift_without_the_motion_bit_restarts_the_stable_run() -> None:
    drifting = [encode_frame(500.0 + 0.02 * (i // 7), 0.0) for i in range(30)]
    frames = [(i * PERIOD, f) for i, f in enumerate([MOVING] * 5 + drifting)]
    assert weighments(run_frames(frames)) == []
    # A one-division wobble does not.
    wobbling = [encode_frame(500.0 + 0.01 * (i % 2), 0.0) for i in range(30)]
    frames = [(i * PERIOD, f) for i, f in enumerate([MOVING] * 5 + wobbling)]
    assert len(weighments(run_frames(frames))) == 1


def test_status_change_restarts_the_stable_run() -> None:
    net = encode_frame(512.5, 10.0, net=True)
    frames = timeline((5, MOVING), (10, LOADED), (13, net))
    assert weighments(run_frames(frames)) == []


def test_no_auto_weighment_before_motion_is_seen() -> None:
    # The port opened with a load already resting: its weighment may be past.
    assert weighments(run_frames(timeline((60, LOADED)))) == []
    # A print request still counts.
    events = run_frames(timeline((3, LOADED), (1, PRINTING)))
    assert [w.tags["trigger"] for w in weighments(events)] == ["print"]


def test_print_bit_already_set_in_the_first_frame_is_not_a_rise() -> None:
    assert weighments(run_frames(timeline((3, PRINTING), (3, LOADED)))) == []


def test_print_request_out_of_range_is_not_a_weighment() -> None:
    over = encode_frame(999.99, 0.0, out_of_range=True, print_request=True)
    over_quiet = encode_frame(999.99, 0.0, out_of_range=True)
    assert weighments(run_frames(timeline((5, MOVING), (3, over_quiet), (3, over)))) == []
    # Out of range breaks a stable run too.
    frames = timeline((5, MOVING), (10, LOADED), (1, over_quiet), (13, LOADED))
    assert weighments(run_frames(frames)) == []


def test_short_frames_give_weighments_without_tare() -> None:
    moving = encode_frame(300.0, None, motion=True, net=True)
    loaded = encode_frame(42.0, None, net=True)
    (weighment,) = weighments(run_frames(timeline((5, moving), (30, loaded))))
    assert weighment.fields == {"weight_kg": 42.0, "stable": True, "net": True}


def test_weighment_time_and_size_are_configurable() -> None:
    frames = timeline((5, MOVING), (5, encode_frame(0.05, 0.0)))
    assert weighments(run_frames(frames)) == []
    events = run_frames(frames, weighment_stable_s=0.5, weighment_divisions=4)
    assert len(weighments(events)) == 1


# -- golden cases ------------------------------------------------------------------------------


def replay(data: bytes, *, bytewise: bool = False) -> list[Measurement | Discarded]:
    """What the default parser reports for a capture sent at 7 frames/s.

    Each STX (after masking bit 7) starts a new 1/7 s; the bytes up to the next STX
    arrive then, whole or (``bytewise``) one by one. A silence after the capture ends
    a frame held for its checksum.
    """
    parser = ToledoParser()
    starts = [i for i, b in enumerate(data) if b & 0x7F == STX]
    bounds = [0, *starts, len(data)]
    for frame_no, (a, b) in enumerate(itertools.pairwise(bounds)):
        now = frame_no * PERIOD
        for chunk in [data[i : i + 1] for i in range(a, b)] if bytewise else [data[a:b]]:
            parser.receive_data(chunk, now)
    parser.tick(len(bounds) * PERIOD + 10.0)
    return parser.events()


@pytest.mark.parametrize("case", sorted(CASES_DIR.iterdir()), ids=lambda p: p.name)
def test_golden_case(case: Path) -> None:
    data = (case / "input.bin").read_bytes()
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in lines]
    assert [event_json(e) for e in replay(data)] == expected
    assert [event_json(e) for e in replay(data, bytewise=True)] == expected


def test_golden_cases_exist() -> None:
    assert len(list(CASES_DIR.iterdir())) >= 5


# -- properties -------------------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, ToledoFrame]:
    decimals = draw(st.integers(-2, 5))
    count = draw(st.integers(-999_999, 999_999))
    tare_count = draw(st.one_of(st.none(), st.integers(0, 999_999)))

    def value(n: int) -> float:
        return n / 10**decimals if decimals >= 0 else float(n * 10**-decimals)

    options = {
        "decimals": decimals,
        "increment": draw(st.sampled_from([1, 2, 5])),
        "unit": draw(st.sampled_from(["kg", "lb", "g"])),
        "net": draw(st.booleans()),
        "motion": draw(st.booleans()),
        "out_of_range": draw(st.booleans()),
        "print_request": draw(st.booleans()),
        "not_zeroed": draw(st.booleans()),
        "expanded": draw(st.booleans()),
        "checksum": draw(st.booleans()),
        "pad_spaces": draw(st.integers(0, 6)),
    }
    weight = value(count)
    tare = None if tare_count is None else value(tare_count)
    data = encode_frame(weight, tare, **options)  # type: ignore[arg-type]
    expected = ToledoFrame(
        weight=weight,
        tare=tare,
        unit=options["unit"],  # type: ignore[arg-type]
        decimals=decimals,
        increment=options["increment"],  # type: ignore[arg-type]
        net=options["net"],  # type: ignore[arg-type]
        negative=count < 0,
        motion=options["motion"],  # type: ignore[arg-type]
        out_of_range=options["out_of_range"],  # type: ignore[arg-type]
        print_request=options["print_request"],  # type: ignore[arg-type]
        not_zeroed=options["not_zeroed"],  # type: ignore[arg-type]
        expanded=options["expanded"],  # type: ignore[arg-type]
        checksum=options["checksum"],  # type: ignore[arg-type]
    )
    return data, expected


@settings(max_examples=200)
@given(case=frames())
def test_decode_of_encode_is_identity(case: tuple[bytes, ToledoFrame]) -> None:
    data, expected = case
    assert decode_frame(data) == expected
    assert decode_frame(bytes(b | 0x80 for b in data)) == expected


@settings(max_examples=100)
@given(cases=st.lists(frames(), min_size=1, max_size=6), cuts=st.lists(st.integers(0, 120)))
def test_a_stream_of_frames_in_any_chunking_gives_every_frame(
    cases: list[tuple[bytes, ToledoFrame]], cuts: list[int]
) -> None:
    data = b"".join(frame for frame, _ in cases)
    parser = ToledoParser(republish_s=0)
    for chunk in pieces(data, cuts):
        parser.receive_data(chunk, 0.0)
    parser.tick(1.0)
    events = parser.events()
    assert (parser.frames_ok, parser.frames_discarded) == (len(cases), 0)
    scales = [e for e in events if isinstance(e, Measurement) and e.measurement == "scale"]
    assert [e.raw for e in scales] == [bytes(f) for f, _ in cases]
    assert feed(pieces(data, cuts)) == feed([data])


@settings(max_examples=200)
@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 300)),
    mode=st.sampled_from(["auto", "on", "off"]),
)
def test_random_bytes_never_raise_and_only_valid_frames_make_measurements(
    data: bytes, cuts: list[int], mode: ChecksumMode
) -> None:
    events = feed(pieces(data, cuts), checksum=mode)
    assert events == feed([data], checksum=mode)
    for event in events:
        if isinstance(event, Measurement):
            assert isinstance(decode_frame(event.raw), ToledoFrame)
            assert event.raw[0] == STX


@settings(max_examples=100)
@given(
    case=frames(),
    junk=st.binary(max_size=40).map(lambda b: b.replace(b"\x02", b"").replace(b"\x82", b"")),
)
def test_a_valid_frame_after_junk_is_always_read(
    case: tuple[bytes, ToledoFrame], junk: bytes
) -> None:
    data, expected = case
    # A checksum-less frame needs its end shown: the next frame's STX, or silence.
    events = feed([junk + data])
    measurements = [e for e in events if isinstance(e, Measurement) and e.measurement == "scale"]
    assert [m.raw for m in measurements] == [data]
    assert decode_frame(measurements[0].raw) == expected
