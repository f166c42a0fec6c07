"""Autonics CT registers both ways, and the monotonic total."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.errors import DriverUsageError
from coffee_telemetry.drivers.counter_autonics_ct import (
    KNOWN_STATUS_BITS,
    PV_MAX,
    PV_MIN,
    CounterReset,
    CounterSample,
    DisplayUnit,
    Mode,
    StatusBit,
    TerminalInputs,
    TotalState,
    TotalTracker,
    advance_total,
    decode_display_unit,
    decode_inputs,
    decode_status_pv,
    encode_inputs,
    encode_status,
    encode_status_pv,
    to_measurement,
)
from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.modbus_rtu import (
    FunctionCode,
    RegistersResponse,
    decode_response,
    encode_registers_response,
)

H = bytes.fromhex

# §6 D: the reply to ``01 04 03 E8 00 06 F0 78``.
VECTOR = H("01 04 0C 80 80 00 00 00 00 E2 40 00 01 00 00 79 86")

# (registers at 0x03E8.., sample): used both ways.
STATUS_PV_CASES: list[tuple[tuple[int, ...], CounterSample]] = [
    ((0x8080, 0, 0, 0xE240, 0x0001, 0), CounterSample(0x8080, 0, 123456, 0)),
    ((0x4000, 0, 0, 3600, 0, 3), CounterSample(0x4000, 0, 3600, 3)),
    ((0x8000, 0x423F, 0x000F, 0x423F, 0x000F, 2), CounterSample(0x8000, 999999, 999999, 2)),
    ((0x8040, 7, 0, 0xFFFB, 0xFFFF, 0), CounterSample(0x8040, 7, -5, 0)),  # negative PV
    ((0x0000, 0, 0, 0, 0, 0), CounterSample(0x0000, 0, 0, 0)),  # no mode bit
    ((0x8021, 0, 0, 1, 0, 0), CounterSample(0x8021, 0, 1, 0)),  # b0 unknown: reported
    ((0xB9E0, 0, 0, 0x7961, 0xFFFE, 0), CounterSample(0xB9E0, 0, PV_MIN, 0)),
]


def test_spec_vector_decodes() -> None:
    response = decode_response(VECTOR)
    assert isinstance(response, RegistersResponse)
    sample = decode_status_pv(response.registers)
    assert isinstance(sample, CounterSample)
    assert sample.mode is Mode.COUNTER
    assert sample.out1
    assert not sample.out2
    assert sample.pv == 123456
    assert sample.batch_pv == 0
    assert sample.unknown_status_bits == 0


def test_spec_vector_encodes() -> None:
    sample = CounterSample(
        status=encode_status(Mode.COUNTER, out1=True), batch_pv=0, pv=123456, display_code=0
    )
    registers = encode_status_pv(sample)
    assert encode_registers_response(1, FunctionCode.READ_INPUT_REGISTERS, registers) == VECTOR


@pytest.mark.parametrize(("registers", "sample"), STATUS_PV_CASES)
def test_status_pv_both_ways(registers: tuple[int, ...], sample: CounterSample) -> None:
    assert decode_status_pv(registers) == sample
    assert encode_status_pv(sample) == registers


def test_five_registers_leave_display_unset() -> None:
    assert decode_status_pv([0x8080, 0, 0, 1, 0]) == CounterSample(0x8080, 0, 1, None)
    assert encode_status_pv(CounterSample(0x8080, 0, 1, None))[5] == 0


@pytest.mark.parametrize(
    ("status", "mode", "flags"),
    [
        (0x8080, Mode.COUNTER, {"out1"}),
        (0x4040, Mode.TIMER, {"out2"}),
        (0xC000, Mode.COUNTER, set()),  # both mode bits: counter wins, as §6 D reads them
        (0x0820, Mode.UNKNOWN, {"batch_out", "locked"}),
    ],
)
def test_status_bits(status: int, mode: Mode, flags: set[str]) -> None:
    sample = CounterSample(status, 0, 0)
    assert sample.mode is mode
    assert {f for f in ("out1", "out2", "batch_out", "locked") if getattr(sample, f)} == flags


def test_unknown_status_bits_are_reported_not_refused() -> None:
    sample = decode_status_pv([0x8000 | 0x0001 | 0x0200, 0, 0, 5, 0, 0])
    assert isinstance(sample, CounterSample)
    assert sample.unknown_status_bits == 0x0201
    assert KNOWN_STATUS_BITS & 0x0201 == 0


@pytest.mark.parametrize(
    ("registers", "reason"),
    [
        ([0x8000, 0, 0, 0], "bad-count"),
        ([0x8000, 0, 0, 0, 0, 0, 0], "bad-count"),
        ([0x8000, 0, 0, 0x10000, 0, 0], "bad-register"),
        ([0x8000, 0, 0, -1, 0, 0], "bad-register"),
        ([0x8000, 0x4240, 0x000F, 0, 0, 0], "batch-pv-out-of-range"),  # 1 000 000
        ([0x8000, 0, 0, 0x4240, 0x000F, 0], "pv-out-of-range"),  # 1 000 000
        ([0x8000, 0, 0, 0x7960, 0xFFFE, 0], "pv-out-of-range"),  # -100 000
        ([0x8000, 0, 0, 0xFFFF, 0xFFFF, 0xFFFF], None),  # -1 is a count
        ([0x4000, 0, 0, 0xFFFF, 0xFFFF, 0], "pv-out-of-range"),  # a timer is never negative
    ],
)
def test_out_of_range_values_are_discarded(registers: list[int], reason: str | None) -> None:
    decoded = decode_status_pv(registers)
    if reason is None:
        assert isinstance(decoded, CounterSample)
    else:
        assert isinstance(decoded, Discarded)
        assert decoded.reason == reason
        assert len(decoded.data) == 2 * len(registers)


@pytest.mark.parametrize(
    "sample",
    [
        CounterSample(0x10000, 0, 0),
        CounterSample(0x8000, 1_000_000, 0),
        CounterSample(0x8000, 0, PV_MAX + 1),
        CounterSample(0x8000, 0, PV_MIN - 1),
        CounterSample(0x4000, 0, -1),
        CounterSample(0x8000, 0, 0, display_code=0x10000),
    ],
)
def test_encode_status_pv_refuses(sample: CounterSample) -> None:
    with pytest.raises(DriverUsageError):
        encode_status_pv(sample)


def test_encode_status() -> None:
    assert encode_status(Mode.COUNTER, out1=True) == 0x8080
    assert encode_status(Mode.TIMER, out2=True, batch_out=True, locked=True) == 0x4860
    assert encode_status(Mode.UNKNOWN, extra_bits=0x0001) == 0x0001
    assert int(StatusBit.COUNTER | StatusBit.OUT1) == 0x8080
    with pytest.raises(DriverUsageError):
        encode_status(Mode.COUNTER, extra_bits=0x10000)


INPUT_CASES: list[tuple[tuple[bool, ...], TerminalInputs]] = [
    ((False,) * 5, TerminalInputs(False, False, False, False, False)),
    ((True, False, True, False, False), TerminalInputs(True, False, True, False, False)),
    ((False, True, False, True, True), TerminalInputs(False, True, False, True, True)),
]


@pytest.mark.parametrize(("bits", "inputs"), INPUT_CASES)
def test_inputs_both_ways(bits: tuple[bool, ...], inputs: TerminalInputs) -> None:
    assert decode_inputs(bits) == inputs
    assert decode_inputs((*bits, True, True, False)) == inputs  # a reply's padding
    assert encode_inputs(inputs) == bits


def test_short_inputs_are_discarded() -> None:
    assert decode_inputs([True, False]) == Discarded(data=b"\x01\x00", reason="bad-count")


def test_display_unit() -> None:
    counter = decode_display_unit(2, Mode.COUNTER)
    assert counter == DisplayUnit(Mode.COUNTER, 2)
    assert isinstance(counter, DisplayUnit)
    assert counter.decimal_places == 2
    assert counter.time_range_code is None
    timer = decode_display_unit(7, Mode.TIMER)
    assert isinstance(timer, DisplayUnit)
    assert (timer.decimal_places, timer.time_range_code) == (None, 7)
    assert DisplayUnit(Mode.COUNTER, 9).decimal_places is None
    assert decode_display_unit(0x10000, Mode.TIMER) == Discarded(b"\x00\x00", "bad-register")
    assert CounterSample(0x4000, 0, 0, display_code=3).display == DisplayUnit(Mode.TIMER, 3)
    assert CounterSample(0x4000, 0, 0).display is None


def test_to_measurement_field_types() -> None:
    inputs = TerminalInputs(True, False, True, False, False)
    m = to_measurement(CounterSample(0x8080, 3, 123456, 0, inputs), total=200000)
    assert m.measurement == "counter"
    assert m.fields["mode"] == "counter"
    assert m.fields["pv"] == 123456
    assert m.fields["total"] == 200000
    assert m.fields["out1"] is True
    assert m.fields["inhibit"] is True
    assert m.raw == H("80 80 00 03 00 00 E2 40 00 01")
    bare = to_measurement(CounterSample(0x0000, 0, -5))
    assert {"total", "display_code", "in_a"}.isdisjoint(bare.fields)
    assert bare.fields["mode"] == "unknown"


# -- totals --------------------------------------------------------------------------

TOTAL_CASES: list[tuple[list[int], list[int], list[int]]] = [
    # pvs, totals, indexes where a reset is reported
    ([0, 5, 10, 3, 4], [0, 5, 10, 13, 14], [3]),  # front-panel reset
    ([999998, 999999, 2], [999998, 999999, 1000001], [2]),  # wrap after 999999
    ([50, 50, 50], [50, 50, 50], []),  # a stopped huller
    ([10, 0, 0, 7], [10, 10, 10, 17], [1]),  # power loss, reset once
    ([-3, -1, 2, -4, 1], [0, 0, 2, 2, 3], [3]),  # negative PVs add nothing
]


@pytest.mark.parametrize(("pvs", "totals", "resets"), TOTAL_CASES)
def test_total_tracker(pvs: list[int], totals: list[int], resets: list[int]) -> None:
    tracker = TotalTracker()
    seen_totals: list[int] = []
    seen_resets: list[int] = []
    for i, pv in enumerate(pvs):
        total, reset = tracker.update(pv)
        seen_totals.append(total)
        if reset is not None:
            seen_resets.append(i)
            assert reset == CounterReset(previous_pv=pvs[i - 1], pv=pv, total=total)
    assert seen_totals == totals
    assert seen_resets == resets
    assert tracker.total == totals[-1]


def test_total_survives_a_restart() -> None:
    tracker = TotalTracker()
    for pv in (100, 250):
        tracker.update(pv)
    saved = tracker.state
    assert saved == TotalState(offset=0, last_pv=250)
    restarted = TotalTracker(saved)
    assert restarted.update(20) == (270, CounterReset(previous_pv=250, pv=20, total=270))
    assert restarted.state == TotalState(offset=250, last_pv=20)


def test_first_pv_after_install_counts() -> None:
    state, reset = advance_total(TotalState(), 1234)
    assert (state.total, reset) == (1234, None)


pvs = st.lists(st.integers(PV_MIN, PV_MAX), max_size=50)


@given(pvs)
def test_totals_never_decrease(values: list[int]) -> None:
    tracker = TotalTracker()
    previous = 0
    last: int | None = None
    for pv in values:
        total, reset = tracker.update(pv)
        assert total >= previous
        assert (reset is not None) == (last is not None and pv < last)
        assert total == tracker.state.offset + max(pv, 0)
        previous, last = total, pv


@given(pvs, st.integers(0, 50))
def test_persisting_midway_changes_nothing(values: list[int], cut: int) -> None:
    straight = TotalTracker()
    for pv in values:
        straight.update(pv)
    first = TotalTracker()
    for pv in values[:cut]:
        first.update(pv)
    second = TotalTracker(TotalState(first.state.offset, first.state.last_pv))
    for pv in values[cut:]:
        second.update(pv)
    assert second.state == straight.state


samples = st.builds(
    CounterSample,
    status=st.integers(0, 0xFFFF).filter(lambda s: not s & 0x4000 or s & 0x8000),
    batch_pv=st.integers(0, 999999),
    pv=st.integers(PV_MIN, PV_MAX),
    display_code=st.integers(0, 0xFFFF),
)


@given(samples)
def test_status_pv_round_trip(sample: CounterSample) -> None:
    registers = encode_status_pv(sample)
    assert decode_status_pv(registers) == sample
    wire = encode_registers_response(1, FunctionCode.READ_INPUT_REGISTERS, registers)
    response = decode_response(wire)
    assert isinstance(response, RegistersResponse)
    assert decode_status_pv(response.registers) == sample


@given(st.lists(st.integers(-(2**20), 2**20), max_size=8))
def test_decode_status_pv_never_raises(registers: list[int]) -> None:
    assert isinstance(decode_status_pv(registers), CounterSample | Discarded)
