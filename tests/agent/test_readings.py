"""Readings: one canonical encoding, unique timestamps, continuing sequences."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.lots.store import LotError, validate_lot
from coffee_telemetry.agent.readings import (
    Reading,
    Stamper,
    decode_reading,
    encode_reading,
    format_time,
)

text = st.text(max_size=40)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    text,
)


@given(
    ts=st.integers(min_value=0, max_value=2**62),
    seq=st.integers(min_value=1, max_value=2**40),
    fields=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), values, max_size=6),
    tags=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), text, max_size=6),
    audit=st.none() | text,
)
def test_encode_decode_round_trip(
    ts: int, seq: int, fields: dict[str, float], tags: dict[str, str], audit: str | None
) -> None:
    r = Reading(
        ts_ns=ts, seq=seq, device="d", measurement="moisture", fields=fields, tags=tags, audit=audit
    )
    payload = encode_reading(r)
    back = decode_reading(payload)
    assert back == r
    # One reading, one encoding: re-encoding the decoded copy gives the same bytes.
    assert encode_reading(back) == payload


def test_non_finite_fields_are_refused() -> None:
    r = Reading(ts_ns=1, seq=1, device="d", measurement="m", fields={"x": math.nan})
    with pytest.raises(ValueError, match="not finite"):
        encode_reading(r)


@pytest.mark.parametrize("payload", [b"", b"{}", b"[1]", b'{"ts": "x"}', b"\xff"])
def test_decode_rejects_non_readings(payload: bytes) -> None:
    with pytest.raises(ValueError, match="not a reading"):
        decode_reading(payload)


def test_format_time_has_nanoseconds() -> None:
    assert format_time(1_796_035_314_123_456_789) == "2026-11-30T10:41:54.123456789Z"


def test_stamper_never_repeats_a_timestamp_and_counts_per_device() -> None:
    now = [1000]
    stamper = Stamper(clock_ns=lambda: now[0])
    a = stamper.stamp(device="a", measurement="m", fields={}, tags={})
    b = stamper.stamp(device="a", measurement="m", fields={}, tags={})
    now[0] = 500  # the clock steps back (NTP)
    c = stamper.stamp(device="a", measurement="m", fields={}, tags={})
    other = stamper.stamp(device="b", measurement="m", fields={}, tags={"x": "", "y": "1"})
    assert [a.ts_ns, b.ts_ns, c.ts_ns] == [1000, 1001, 1002]
    assert [a.seq, b.seq, c.seq] == [1, 2, 3]
    assert other.seq == 1
    assert other.ts_ns == 500
    assert other.tags == {"y": "1"}  # empty tags are dropped


def test_stamper_restores_sequences() -> None:
    stamper = Stamper(clock_ns=lambda: 1)
    stamper.restore({"a": 41})
    assert stamper.stamp(device="a", measurement="m", fields={}, tags={}).seq == 42


@pytest.mark.parametrize("code", ["L-0001", "2026/15", "A", "lote_7.b"])
def test_valid_lots(code: str) -> None:
    assert validate_lot(f"  {code} ") == code


@pytest.mark.parametrize(
    "code",
    ["", "   ", "L 1", "L\n1", "L,x=2", 'L"1', "<script>", "-L1", "L1-", "x" * 33, "ção"],
)
def test_invalid_lots(code: str) -> None:
    with pytest.raises(LotError):
        validate_lot(code)


def test_backoff_doubles_caps_and_resets() -> None:
    b = Backoff(initial_s=1.0, maximum_s=60.0, jitter=0.0)
    assert [b.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    b.reset()
    assert b.next_delay() == 1.0


def test_backoff_jitter_stays_in_band() -> None:
    b = Backoff(initial_s=10.0, maximum_s=10.0, jitter=0.2)
    delays = [b.next_delay() for _ in range(200)]
    assert all(8.0 <= d <= 10.0 for d in delays)
    assert len(set(delays)) > 100
