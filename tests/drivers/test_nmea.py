"""nmea: GPS receivers' RMC and ZDA time, both ways; garbage is only ever refused."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.nmea import (
    TALKERS,
    GpsTime,
    NmeaParser,
    checksum,
    decode_sentence,
    encode_rmc,
    encode_sentence,
    encode_zda,
)

CASES_DIR = Path(__file__).parents[1] / "cases" / "nmea"
NS = 1_000_000_000


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * NS)


def event_json(event: GpsTime | Discarded) -> dict[str, object]:
    if isinstance(event, Discarded):
        return {"event": "discarded", "reason": event.reason}
    whole = event.utc_ns // NS
    return {
        "event": "gps-time",
        "utc": datetime.fromtimestamp(whole, UTC).isoformat(),
        "sentence": event.sentence,
        "talker": event.talker,
    }


def replay(data: bytes, *, bytewise: bool = False) -> list[GpsTime | Discarded]:
    parser = NmeaParser()
    if bytewise:
        for i in range(len(data)):
            parser.receive_data(data[i : i + 1])
    else:
        parser.receive_data(data)
    return parser.events()


@pytest.mark.parametrize("case", sorted(CASES_DIR.iterdir()), ids=lambda p: p.name)
def test_golden_case(case: Path) -> None:
    data = (case / "input.bin").read_bytes()
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in lines]
    assert [event_json(e) for e in replay(data)] == expected
    assert [event_json(e) for e in replay(data, bytewise=True)] == expected
    # Trailing bytes of a next sentence change nothing already said.
    assert [event_json(e) for e in replay(data + b"$GPRMC,1430")] == expected


def test_golden_cases_exist() -> None:
    assert len(list(CASES_DIR.iterdir())) >= 3


# -- one sentence ----------------------------------------------------------------------


def test_the_u_blox_manual_example_is_read_with_its_fraction() -> None:
    line = b"$GPRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,77.52,091202,,,A*57\r\n"
    assert decode_sentence(line) == GpsTime(ns("2002-12-09T08:35:59+00:00"), "RMC", "GP")
    half = encode_rmc(datetime(2026, 12, 7, 8, 0, 1, 500_000, tzinfo=UTC))
    got = decode_sentence(half)
    assert isinstance(got, GpsTime)
    assert got.utc_ns == ns("2026-12-07T08:00:01+00:00") + NS // 2


def test_a_two_digit_year_counts_from_the_gps_epoch() -> None:
    cold = encode_sentence("GPRMC,000012.00,A,,,,,,,060180,,,A")
    got = decode_sentence(cold)
    assert isinstance(got, GpsTime)
    assert got.utc_ns == ns("1980-01-06T00:00:12+00:00")  # the past, never 2080
    late = decode_sentence(encode_sentence("GPRMC,000000.00,A,,,,,,,311279,,,A"))
    assert isinstance(late, GpsTime)
    assert late.utc_ns == ns("2079-12-31T00:00:00+00:00")


def test_status_v_and_mode_n_are_no_fix() -> None:
    when = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    assert decode_sentence(encode_rmc(when, status="V")) == Discarded(
        encode_rmc(when, status="V").rstrip(b"\r\n"), "no-fix"
    )
    no_mode = decode_sentence(encode_rmc(when, mode=None))
    assert isinstance(no_mode, GpsTime)
    refused = decode_sentence(encode_rmc(when, mode="N"))
    assert isinstance(refused, Discarded)
    assert refused.reason == "no-fix"


def test_zda_needs_a_valid_rmc_before_it_in_the_stream() -> None:
    when = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    parser = NmeaParser()
    parser.receive_data(encode_zda(when))
    parser.receive_data(encode_rmc(when))
    parser.receive_data(encode_zda(when))
    parser.receive_data(encode_rmc(when, status="V"))
    parser.receive_data(encode_zda(when))
    got = [e.reason if isinstance(e, Discarded) else e.sentence for e in parser.events()]
    assert got == ["no-fix", "RMC", "ZDA", "no-fix", "no-fix"]
    assert parser.frames_ok == 2
    assert parser.frames_discarded == 3


@pytest.mark.parametrize(
    "body",
    [
        "GPRMC,101500.00,A,2150.1,S",  # too few fields
        "GPZDA,101500.00,07,12",  # too few fields
        "GPZDA,101500.00,7,12,2026,00,00",  # one-digit day
        "GPZDA,101500.00,31,11,2026,00,00",  # 31 November
    ],
)
def test_short_or_impossible_sentences_are_bad_time(body: str) -> None:
    got = decode_sentence(encode_sentence(body))
    assert isinstance(got, Discarded)
    assert got.reason == "bad-time"


def test_other_sentences_are_skipped_quietly() -> None:
    parser = NmeaParser()
    parser.receive_data(encode_sentence("GPGSV,1,1,01,10,45,120,38"))
    parser.receive_data(encode_sentence("PUBX,04,073731.00"))
    parser.receive_data(encode_sentence("XXRMC,083559.00,A,,,,,,,091202,,,A"))
    assert parser.events() == []
    assert parser.sentences_skipped == 3


def test_encoders_refuse_what_a_sentence_cannot_say() -> None:
    with pytest.raises(DriverUsageError):
        encode_sentence("GPRMC*,1")
    with pytest.raises(DriverUsageError):
        encode_sentence("GPRMC,ção")
    with pytest.raises(DriverUsageError):
        encode_rmc(datetime(2026, 1, 1))  # naive
    with pytest.raises(DriverUsageError):
        encode_rmc(datetime(2080, 1, 1, tzinfo=UTC))
    with pytest.raises(DriverUsageError):
        encode_rmc(datetime(2026, 1, 1, tzinfo=UTC), status="X")
    with pytest.raises(DriverUsageError):
        encode_rmc(datetime(2026, 1, 1, tzinfo=UTC), talker="ZZ")
    with pytest.raises(DriverUsageError):
        encode_zda(datetime(999, 1, 1, tzinfo=UTC))
    with pytest.raises(DriverUsageError):
        NmeaParser(max_line=8)


def test_a_local_time_is_encoded_as_utc() -> None:
    brasilia = timezone(timedelta(hours=-3))
    got = decode_sentence(encode_zda(datetime(2026, 12, 7, 21, 30, tzinfo=brasilia)))
    assert isinstance(got, GpsTime)
    assert got.utc_ns == ns("2026-12-08T00:30:00+00:00")


# -- properties ------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(1980, 1, 1), max_value=datetime(2079, 12, 31, 23, 59, 59)
).map(lambda d: d.replace(microsecond=d.microsecond // 10_000 * 10_000, tzinfo=UTC))


@given(when=moments, talker=st.sampled_from(sorted(TALKERS)), zda=st.booleans())
def test_decode_of_encode_is_the_time(when: datetime, talker: str, zda: bool) -> None:
    line = encode_zda(when, talker=talker) if zda else encode_rmc(when, talker=talker)
    want = int(when.timestamp()) * NS + when.microsecond * 1000
    assert decode_sentence(line) == GpsTime(want, "ZDA" if zda else "RMC", talker)


@given(
    when=moments,
    cuts=st.lists(st.integers(0, 400), max_size=12),
    noise=st.binary(max_size=40),
)
def test_any_chunking_gives_the_same_events(when: datetime, cuts: list[int], noise: bytes) -> None:
    data = noise + b"\r\n" + encode_rmc(when) + encode_zda(when) + encode_rmc(when)
    whole = replay(data)
    parser = NmeaParser()
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    for a, b in itertools.pairwise(bounds):
        parser.receive_data(data[a:b])
    assert parser.events() == whole
    assert [e for e in whole if isinstance(e, GpsTime)][-2:] == [
        GpsTime(int(when.timestamp()) * NS + when.microsecond * 1000, s, "GP")
        for s in ("ZDA", "RMC")
    ]


@settings(max_examples=500)
@given(data=st.binary(max_size=600))
def test_random_bytes_are_only_ever_refused(data: bytes) -> None:
    parser = NmeaParser()
    parser.receive_data(data)
    for event in parser.events():
        assert isinstance(event, Discarded), event
        assert len(event.data) <= 64


@settings(max_examples=500)
@given(
    when=moments,
    text=st.lists(
        st.sampled_from([b"$", b"GP", b"GN", b"RMC", b"ZDA", b",", b"A", b"V", b"*", b"\r\n"])
        | st.binary(min_size=1, max_size=4),
        max_size=60,
    ),
)
def test_sentence_shaped_garbage_never_escapes_as_a_time(when: datetime, text: list[bytes]) -> None:
    data = b"".join(text)
    parser = NmeaParser()
    parser.receive_data(data)
    parser.receive_data(b"\r\n")
    for event in parser.events():
        if isinstance(event, GpsTime):
            # Only a sentence whose checksum holds can be a time: find it in the input.
            start = data.rfind(b"$", 0, data.find(b"*"))
            assert start >= 0
            assert 1980 <= datetime.fromtimestamp(event.utc_ns // NS, UTC).year <= 9999
        else:
            assert isinstance(event, Discarded)


@settings(max_examples=300)
@given(when=moments, zda=st.booleans(), at=st.integers(0, 200), byte=st.integers(0, 255))
def test_one_changed_byte_never_gives_another_time(
    when: datetime, zda: bool, at: int, byte: int
) -> None:
    line = encode_zda(when) if zda else encode_rmc(when)
    body_end = line.rfind(b"*")
    at %= body_end + 3  # anywhere from $ to the checksum's digits
    changed = line[:at] + bytes([byte]) + line[at + 1 :]
    parser = NmeaParser()
    parser.receive_data(encode_rmc(when))  # a fix, so a ZDA may count
    parser.events()
    parser.receive_data(changed + b"\r\n")
    want = int(when.timestamp()) * NS + when.microsecond * 1000
    for event in parser.events():
        if isinstance(event, GpsTime):
            assert event.utc_ns == want


def test_checksum_is_the_xor_between_dollar_and_star() -> None:
    assert checksum(b"AB") == 0x41 ^ 0x42
    assert checksum(b"") == 0
    assert encode_sentence("A") == b"$A*41\r\n"
