"""The RS-485 T/RH sensor driver: datasheet vectors, register maps, golden cases, fuzz."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.onboard.propose import event_json
from coffee_telemetry.drivers.climate_modbus_th import (
    MAX_SPAN,
    XY_MD02,
    ClimateSample,
    RegisterMap,
    decode_registers,
    decode_reply,
    encode_registers,
    read_request,
    request_bytes,
    to_measurement,
)
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded, Measurement
from coffee_telemetry.drivers.modbus_rtu import (
    ExceptionResponse,
    FunctionCode,
    ReadRequest,
    RegistersResponse,
    ResponseParser,
)

CASES_DIR = Path(__file__).parents[1] / "cases" / "climate_modbus_th"
FC = FunctionCode
H = bytes.fromhex


# -- the datasheet -----------------------------------------------------------------------


def test_xy_md02_request_reads_both_values_in_one_exchange() -> None:
    # The sheet reads FC04 from 0x0001; both registers at once: 01 04 00 01 00 02 20 0B.
    assert request_bytes(1) == H("010400010002200B")
    assert read_request(7) == ReadRequest(7, FC.READ_INPUT_REGISTERS, 1, 2)
    with pytest.raises(DriverUsageError):
        request_bytes(0)


def test_datasheet_values() -> None:
    assert decode_registers((0x0131, 0x0222)) == ClimateSample(30.5, 54.6)
    assert decode_registers((0xFF33, 0x0222)) == ClimateSample(-20.5, 54.6)


def test_unsigned_temperature_map() -> None:
    mapping = RegisterMap(temperature_signed=False)
    assert decode_registers((0xFF33, 0x0222), mapping) == Discarded(
        data=H("ff330222"), reason="temperature-out-of-range"
    )


@pytest.mark.parametrize(
    ("registers", "reason"),
    [
        ((0x0131,), "bad-count"),
        ((0x0131, 0x0222, 0), "bad-count"),
        ((0x0131, 0x10000), "bad-register"),
        ((-1, 0x0222), "bad-register"),
        ((0x7FFF, 0x0222), "temperature-out-of-range"),
        ((0x8000, 0x0222), "temperature-out-of-range"),
        ((0xFE6F, 0x0222), "temperature-out-of-range"),  # -40.1 C
        ((0x0131, 0x03E9), "rh-out-of-range"),  # 100.1 %
    ],
)
def test_refusals(registers: tuple[int, ...], reason: str) -> None:
    result = decode_registers(registers)
    assert isinstance(result, Discarded)
    assert result.reason == reason


def test_edges_of_the_sensing_range_are_readings() -> None:
    assert decode_registers((0xFE70, 0)) == ClimateSample(-40.0, 0.0)
    assert decode_registers((1250, 1000)) == ClimateSample(125.0, 100.0)


def test_map_with_rh_first_and_a_gap() -> None:
    mapping = RegisterMap(function=FC.READ_HOLDING_REGISTERS, temperature=3, humidity=0)
    assert (mapping.first, mapping.count) == (0, 4)
    assert decode_registers((555, 9, 9, 212), mapping) == ClimateSample(21.2, 55.5)
    assert encode_registers(ClimateSample(21.2, 55.5), mapping) == (555, 0, 0, 212)


@pytest.mark.parametrize(
    "options",
    [
        {"function": FC.READ_COILS},
        {"function": FC.WRITE_SINGLE_COIL},
        {"temperature": 5, "humidity": 5},
        {"temperature": 0x10000},
        {"humidity": -1},
        {"temperature": 0, "humidity": MAX_SPAN},
        {"temperature_divisor": 0},
        {"humidity_divisor": 3},
        {"humidity_divisor": 1000},
    ],
)
def test_bad_maps_are_usage_errors(options: dict[str, object]) -> None:
    with pytest.raises(DriverUsageError):
        RegisterMap(**options)  # type: ignore[arg-type]


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(DriverUsageError):
        encode_registers(ClimateSample(3300.0, 50.0))
    with pytest.raises(DriverUsageError):
        encode_registers(ClimateSample(25.0, -1.0))


def test_replies() -> None:
    ok = RegistersResponse(1, FC.READ_INPUT_REGISTERS, (0x0131, 0x0222))
    assert decode_reply(1, ok) == ClimateSample(30.5, 54.6)
    assert decode_reply(2, ok) == Discarded(data=b"", reason="wrong-unit")
    refused = ExceptionResponse(1, FC.READ_INPUT_REGISTERS, 0x02)
    assert decode_reply(1, refused) == Discarded(data=b"\x02", reason="exception-02")
    holding = RegistersResponse(1, FC.READ_HOLDING_REGISTERS, (0x0131, 0x0222))
    assert isinstance(decode_reply(1, holding), Discarded)


def test_measurement() -> None:
    m = to_measurement(ClimateSample(30.5, 54.6), (0x0131, 0x0222))
    assert m.measurement == "climate"
    assert dict(m.fields) == {"temperature_c": 30.5, "rh_pct": 54.6}
    assert m.raw == H("01310222")


# -- golden cases --------------------------------------------------------------------------


def replay(data: bytes, mapping: RegisterMap, *, bytewise: bool = False) -> list[object]:
    """What a master polling unit 1 makes of the bytes it heard, reply by reply."""
    parser = ResponseParser()
    out: list[object] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        parser.receive_data(chunk)
    parser.idle()
    for event in parser.events():
        if isinstance(event, Discarded):
            out.append(event_json(event))
            continue
        decoded = decode_reply(1, event, mapping)
        if isinstance(decoded, ClimateSample):
            out.append(event_json(to_measurement(decoded)))
        else:
            out.append(event_json(decoded))
    return out


def case_map(case: Path) -> RegisterMap:
    path = case / "registers.json"
    if not path.exists():
        return XY_MD02
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["function"] = FC(doc["function"])
    return RegisterMap(**doc)


@pytest.mark.parametrize("case", sorted(CASES_DIR.iterdir()), ids=lambda p: p.name)
def test_golden_case(case: Path) -> None:
    data = (case / "input.bin").read_bytes()
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in lines]
    mapping = case_map(case)
    assert replay(data, mapping) == expected
    assert replay(data, mapping, bytewise=True) == expected


def test_golden_cases_exist() -> None:
    assert len(list(CASES_DIR.iterdir())) >= 3


# -- properties -------------------------------------------------------------------------------


maps = st.builds(
    RegisterMap,
    function=st.sampled_from([FC.READ_INPUT_REGISTERS, FC.READ_HOLDING_REGISTERS]),
    temperature=st.integers(0, 8),
    humidity=st.integers(9, 15),
    temperature_divisor=st.sampled_from([1, 10, 100]),
    humidity_divisor=st.sampled_from([1, 10, 100]),
    temperature_signed=st.booleans(),
)


@given(mapping=maps, registers=st.lists(st.integers(-(2**20), 2**20), max_size=20))
def test_any_registers_decode_or_are_discarded(mapping: RegisterMap, registers: list[int]) -> None:
    result = decode_registers(registers, mapping)
    if isinstance(result, ClimateSample):
        assert -40.0 <= result.temperature_c <= 125.0
        assert 0.0 <= result.rh_pct <= 100.0
    else:
        assert isinstance(result, Discarded)


@given(data=st.binary(max_size=300), unit=st.integers(1, 247), mapping=maps)
def test_any_bytes_never_raise(data: bytes, unit: int, mapping: RegisterMap) -> None:
    parser = ResponseParser()
    parser.receive_data(data)
    parser.idle()
    for event in parser.events():
        if not isinstance(event, Discarded):
            result = decode_reply(unit, event, mapping)
            assert isinstance(result, ClimateSample | Discarded)


@given(
    mapping=maps,
    t=st.integers(-400, 1250),
    rh=st.integers(0, 1000),
)
def test_encode_decode_round_trip(mapping: RegisterMap, t: int, rh: int) -> None:
    # Values on the 0.1 grid; a /1 map rounds to whole units, a /100 map keeps them.
    sample = ClimateSample(t / 10, rh / 10)
    if (
        not mapping.temperature_signed
        and round(sample.temperature_c * mapping.temperature_divisor) < 0
    ):
        with pytest.raises(DriverUsageError):
            encode_registers(sample, mapping)
        return
    back = decode_registers(encode_registers(sample, mapping), mapping)
    assert isinstance(back, ClimateSample)
    assert abs(back.temperature_c - sample.temperature_c) <= 0.5 / mapping.temperature_divisor
    assert abs(back.rh_pct - sample.rh_pct) <= 0.5 / mapping.humidity_divisor
    assert isinstance(to_measurement(back), Measurement)
