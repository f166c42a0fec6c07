"""Modbus RTU frames both ways, the stream parsers, and their invariants."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffee_telemetry.agent.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded
from coffee_telemetry.drivers.modbus_rtu import (
    COIL_OFF,
    COIL_ON,
    BitsResponse,
    ExceptionCode,
    ExceptionResponse,
    FunctionCode,
    OtherRequest,
    OtherResponse,
    ReadRequest,
    RegistersResponse,
    Request,
    RequestParser,
    Response,
    ResponseParser,
    WriteCoilRequest,
    WriteCoilResponse,
    check_reply,
    crc16,
    decode_request,
    decode_response,
    encode_bits_response,
    encode_exception_response,
    encode_read_request,
    encode_registers_response,
    encode_request,
    encode_response,
    encode_write_coil_request,
    expected_response_length,
    with_crc,
)

FC = FunctionCode
H = bytes.fromhex

# (wire bytes, event): used both ways, and fed whole, byte by byte and with trailing bytes.
REQUEST_CASES: list[tuple[bytes, Request]] = [
    # §6 D: read status + PV of unit 1.
    (H("01 04 03 E8 00 06 F0 78"), ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6)),
    # §6 D: reset coil.
    (H("01 05 00 00 FF 00 8C 3A"), WriteCoilRequest(1, 0x0000, COIL_ON)),
    # §6 D: an address the CT does not have.
    (H("01 04 20 00 00 01 3A 0A"), ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x2000, 1)),
    # §3.1: the CRC check value's frame.
    (H("01 03 00 00 00 01 84 0A"), ReadRequest(1, FC.READ_HOLDING_REGISTERS, 0, 1)),
    (with_crc(H("02 02 00 00 00 05")), ReadRequest(2, FC.READ_DISCRETE_INPUTS, 0, 5)),
    (with_crc(H("07 01 00 01 00 03")), ReadRequest(7, FC.READ_COILS, 1, 3)),
    (with_crc(H("00 05 00 04 00 00")), WriteCoilRequest(0, 4, COIL_OFF)),
    (with_crc(H("01 06 00 10 12 34")), OtherRequest(1, 6, H("00 10 12 34"))),
    (
        with_crc(H("01 10 00 00 00 02 04 00 01 00 02")),
        OtherRequest(1, 16, H("00 00 00 02 04 00 01 00 02")),
    ),
]

RESPONSE_CASES: list[tuple[bytes, Response]] = [
    # §6 D: status 0x8080, batch PV 0, PV words E240 0001, display unit 0.
    (
        H("01 04 0C 80 80 00 00 00 00 E2 40 00 01 00 00 79 86"),
        RegistersResponse(1, FC.READ_INPUT_REGISTERS, (0x8080, 0, 0, 0xE240, 0x0001, 0)),
    ),
    # §6 D: the reset echoed.
    (H("01 05 00 00 FF 00 8C 3A"), WriteCoilResponse(1, 0, COIL_ON)),
    # §6 D: exception 02, illegal data address.
    (H("01 84 02 C2 C1"), ExceptionResponse(1, 4, ExceptionCode.ILLEGAL_DATA_ADDRESS)),
    (
        with_crc(H("02 02 01 05")),
        BitsResponse(2, FC.READ_DISCRETE_INPUTS, (True, False, True) + (False,) * 5),
    ),
    (
        with_crc(H("02 01 02 01 80")),
        BitsResponse(2, FC.READ_COILS, (True,) + (False,) * 14 + (True,)),
    ),
    (with_crc(H("03 83 01")), ExceptionResponse(3, 3, ExceptionCode.ILLEGAL_FUNCTION)),
    (with_crc(H("03 90 04")), ExceptionResponse(3, 16, ExceptionCode.SERVER_DEVICE_FAILURE)),
    (with_crc(H("01 06 00 10 12 34")), OtherResponse(1, 6, H("00 10 12 34"))),
    (with_crc(H("01 10 00 00 00 02")), OtherResponse(1, 16, H("00 00 00 02"))),
]


def feed_request_parser(chunks: list[bytes]) -> list[Request | Discarded]:
    parser = RequestParser()
    events: list[Request | Discarded] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        events += parser.events()
    parser.idle()
    return events + parser.events()


def feed_response_parser(chunks: list[bytes]) -> list[Response | Discarded]:
    parser = ResponseParser()
    events: list[Response | Discarded] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        events += parser.events()
    parser.idle()
    return events + parser.events()


def test_crc_check_value() -> None:
    assert crc16(H("01 03 00 00 00 01")) == 0x0A84
    assert with_crc(H("01 03 00 00 00 01"))[-2:] == H("84 0A")


@pytest.mark.parametrize(("wire", "event"), REQUEST_CASES)
def test_request_table_both_ways(wire: bytes, event: Request) -> None:
    assert decode_request(wire) == event
    assert encode_request(event) == wire


@pytest.mark.parametrize(("wire", "event"), RESPONSE_CASES)
def test_response_table_both_ways(wire: bytes, event: Response) -> None:
    assert decode_response(wire) == event
    assert encode_response(event) == wire


@pytest.mark.parametrize(("wire", "event"), REQUEST_CASES)
def test_request_parser_whole_bytewise_and_trailing(wire: bytes, event: Request) -> None:
    assert feed_request_parser([wire]) == [event]
    assert feed_request_parser([wire[i : i + 1] for i in range(len(wire))]) == [event]
    parser = RequestParser()
    parser.receive_data(wire + H("01 04 03"))  # the start of the next request
    assert parser.events() == [event]
    assert parser.buffered_bytes == 3


@pytest.mark.parametrize(("wire", "event"), RESPONSE_CASES)
def test_response_parser_whole_bytewise_and_trailing(wire: bytes, event: Response) -> None:
    assert feed_response_parser([wire]) == [event]
    assert feed_response_parser([wire[i : i + 1] for i in range(len(wire))]) == [event]
    parser = ResponseParser()
    parser.receive_data(wire + H("01 04"))
    assert parser.events() == [event]
    assert parser.buffered_bytes == 2


def test_encoders_build_the_spec_vectors() -> None:
    assert encode_read_request(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6) == H(
        "01 04 03 E8 00 06 F0 78"
    )
    assert encode_write_coil_request(1, 0, on=True) == H("01 05 00 00 FF 00 8C 3A")
    assert encode_exception_response(1, 4, ExceptionCode.ILLEGAL_DATA_ADDRESS) == H(
        "01 84 02 C2 C1"
    )
    registers = (0x8080, 0, 0, 0xE240, 1, 0)
    assert encode_registers_response(1, FC.READ_INPUT_REGISTERS, registers) == H(
        "01 04 0C 80 80 00 00 00 00 E2 40 00 01 00 00 79 86"
    )
    assert encode_bits_response(2, FC.READ_DISCRETE_INPUTS, [True, False, True]) == with_crc(
        H("02 02 01 05")
    )


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (encode_read_request, (0, FC.READ_INPUT_REGISTERS, 0, 1)),  # reads are not broadcast
        (encode_read_request, (248, FC.READ_INPUT_REGISTERS, 0, 1)),
        (encode_read_request, (1, FC.WRITE_SINGLE_COIL, 0, 1)),
        (encode_read_request, (1, FC.READ_INPUT_REGISTERS, 0, 0)),
        (encode_read_request, (1, FC.READ_INPUT_REGISTERS, 0, 126)),
        (encode_read_request, (1, FC.READ_COILS, 0, 2001)),
        (encode_read_request, (1, FC.READ_INPUT_REGISTERS, 0x10000, 1)),
        (encode_read_request, (1, FC.READ_INPUT_REGISTERS, 0xFFFF, 2)),
        (encode_write_coil_request, (248, 0, True)),
        (encode_write_coil_request, (1, -1, True)),
        (encode_bits_response, (1, FC.READ_INPUT_REGISTERS, [True])),
        (encode_bits_response, (1, FC.READ_COILS, [])),
        (encode_registers_response, (1, FC.READ_COILS, [1])),
        (encode_registers_response, (1, FC.READ_INPUT_REGISTERS, [0x10000])),
        (encode_registers_response, (1, FC.READ_INPUT_REGISTERS, [0] * 126)),
        (encode_exception_response, (1, 0x84, 2)),
        (encode_exception_response, (1, 4, 0)),
        (encode_exception_response, (0, 4, 2)),
    ],
)
def test_encoders_refuse_what_the_protocol_cannot_express(
    call: object, args: tuple[object, ...]
) -> None:
    assert callable(call)
    with pytest.raises(DriverUsageError):
        call(*args)


@pytest.mark.parametrize(
    "event",
    [
        WriteCoilRequest(1, 0, 0x1234),
        OtherRequest(1, 0x85, b""),
        OtherRequest(1, 0x41, bytes(253)),
        OtherResponse(0, 0x41, b""),
        WriteCoilResponse(1, 0, 0x10000),
    ],
)
def test_encode_event_refuses(event: Request | Response) -> None:
    if isinstance(event, ReadRequest | WriteCoilRequest | OtherRequest):
        with pytest.raises(DriverUsageError):
            encode_request(event)
    else:
        with pytest.raises(DriverUsageError):
            encode_response(event)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (H("01 04 03"), "bad-length"),
        (H("01 04 03 E8 00 06 F0 79"), "bad-crc"),
        (with_crc(H("F8 04 03 E8 00 06")), "bad-unit"),
        (with_crc(H("01 84 03 E8 00 06")), "bad-function"),
        (with_crc(H("01 04 03 E8 00")), "bad-length"),
        (with_crc(H("01 10 00 00 00 02 04 00 01")), "bad-length"),
    ],
)
def test_decode_request_discards(wire: bytes, reason: str) -> None:
    assert decode_request(wire) == Discarded(data=wire, reason=reason)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (bytes(300), "bad-length"),
        (H("01 84 02 C2 C0"), "bad-crc"),
        (with_crc(H("00 04 02 00 01")), "bad-unit"),
        (with_crc(H("01 80 02")), "bad-function"),
        (with_crc(H("01 84 02 00")), "bad-length"),
        (with_crc(H("01 04 03 00 01")), "bad-byte-count"),
        (with_crc(H("01 04 01 00")), "bad-byte-count"),
        (with_crc(H("01 04")), "bad-byte-count"),
        (with_crc(H("01 05 00 00 FF")), "bad-length"),
        (with_crc(H("01 06 00 00 FF")), "bad-length"),
    ],
)
def test_decode_response_discards(wire: bytes, reason: str) -> None:
    assert decode_response(wire) == Discarded(data=wire[:256], reason=reason)


def test_request_parser_resyncs_after_noise_and_bad_crc() -> None:
    good = H("01 04 03 E8 00 06 F0 78")
    bad = good[:-1] + b"\x00"
    assert feed_request_parser([H("FF FF") + good]) == [
        Discarded(H("FF FF"), "no-frame"),
        ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6),
    ]
    parser = RequestParser()
    parser.receive_data(bad + good)
    assert parser.events() == [
        Discarded(bad, "bad-crc"),
        ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6),
    ]
    assert parser.crc_errors == 1
    assert parser.frames_ok == 1
    assert parser.frames_discarded == 1


def test_bad_crc_waits_for_silence_then_is_discarded() -> None:
    bad = H("01 04 03 E8 00 06 F0 79")
    parser = RequestParser()
    parser.receive_data(bad)
    assert parser.events() == []  # held: the rest may still hunt into a frame
    parser.idle()
    assert parser.events() == [Discarded(bad, "bad-crc")]
    assert parser.buffered_bytes == 0


def test_unknown_function_is_framed_by_silence() -> None:
    frame = with_crc(H("01 2B 0E 01 00"))  # read device identification
    parser = RequestParser()
    parser.receive_data(frame)
    assert parser.events() == []
    parser.idle()
    assert parser.events() == [OtherRequest(1, 0x2B, H("0E 01 00"))]


def test_cut_frame_is_discarded_at_silence() -> None:
    assert feed_request_parser([H("01 04 03 E8")]) == [Discarded(H("01 04 03 E8"), "no-frame")]


def test_framed_but_undecodable_reply_is_discarded() -> None:
    odd = with_crc(H("01 04 03 00 01 02"))  # three bytes of registers
    parser = ResponseParser()
    parser.receive_data(odd)
    assert parser.events() == [Discarded(odd, "bad-byte-count")]
    assert (parser.frames_ok, parser.frames_discarded) == (0, 1)


def test_reset_forgets_silently() -> None:
    parser = ResponseParser()
    parser.receive_data(H("FF 01 04 03"))
    parser.reset()
    parser.idle()
    assert parser.events() == []
    assert parser.buffered_bytes == 0


def test_max_frame_is_checked() -> None:
    with pytest.raises(DriverUsageError):
        RequestParser(max_frame=7)
    with pytest.raises(DriverUsageError):
        ResponseParser(max_frame=257)


def test_buffers_stay_bounded() -> None:
    parser = RequestParser(max_frame=64)
    # 0x2B is a function of unknown length: only silence or max_frame ends it.
    parser.receive_data(H("01 2B") + bytes(range(0x30, 0x30 + 200)) * 5)
    assert parser.buffered_bytes <= 2 * 64
    parser.idle()
    events = parser.events()
    assert all(isinstance(e, Discarded) and len(e.data) <= 64 for e in events)


def test_expected_response_length() -> None:
    assert expected_response_length(ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6)) == 17
    assert expected_response_length(ReadRequest(1, FC.READ_DISCRETE_INPUTS, 0, 5)) == 6
    assert expected_response_length(ReadRequest(1, FC.READ_COILS, 0, 9)) == 7
    assert expected_response_length(WriteCoilRequest(1, 0, COIL_ON)) == 8


STATUS_PV = ReadRequest(1, FC.READ_INPUT_REGISTERS, 0x03E8, 6)
INPUTS = ReadRequest(1, FC.READ_DISCRETE_INPUTS, 0, 5)
RESET = WriteCoilRequest(1, 0, COIL_ON)


@pytest.mark.parametrize(
    ("request_", "response", "reason"),
    [
        (STATUS_PV, RegistersResponse(1, FC.READ_INPUT_REGISTERS, (0,) * 6), None),
        (STATUS_PV, RegistersResponse(2, FC.READ_INPUT_REGISTERS, (0,) * 6), "wrong-unit"),
        (STATUS_PV, RegistersResponse(1, FC.READ_HOLDING_REGISTERS, (0,) * 6), "wrong-function"),
        (STATUS_PV, RegistersResponse(1, FC.READ_INPUT_REGISTERS, (0,) * 5), "wrong-count"),
        (STATUS_PV, ExceptionResponse(1, 4, 2), None),
        (STATUS_PV, ExceptionResponse(1, 3, 2), "wrong-function"),
        (STATUS_PV, BitsResponse(1, FC.READ_INPUT_REGISTERS, (False,) * 8), "wrong-function"),
        (INPUTS, RegistersResponse(1, FC.READ_DISCRETE_INPUTS, (0,) * 5), "wrong-function"),
        (INPUTS, BitsResponse(1, FC.READ_DISCRETE_INPUTS, (False,) * 8), None),
        (INPUTS, BitsResponse(1, FC.READ_COILS, (False,) * 8), "wrong-function"),
        (INPUTS, BitsResponse(1, FC.READ_DISCRETE_INPUTS, (False,) * 16), "wrong-count"),
        (RESET, WriteCoilResponse(1, 0, COIL_ON), None),
        (RESET, WriteCoilResponse(1, 0, COIL_OFF), "wrong-echo"),
        (RESET, ExceptionResponse(1, 5, 4), None),
        (RESET, ExceptionResponse(1, 4, 4), "wrong-function"),
        (RESET, OtherResponse(1, 6, b"\x00" * 4), "wrong-function"),
        (STATUS_PV, OtherResponse(1, 4, b""), "wrong-function"),
    ],
)
def test_check_reply(
    request_: ReadRequest | WriteCoilRequest, response: Response, reason: str | None
) -> None:
    assert check_reply(request_, response) == reason


# -- properties ----------------------------------------------------------------------

units = st.integers(1, 247)
u16 = st.integers(0, 0xFFFF)


@st.composite
def read_requests(draw: st.DrawFn) -> ReadRequest:
    function = draw(st.sampled_from(sorted({FC(1), FC(2), FC(3), FC(4)})))
    count = draw(st.integers(1, 2000 if function <= 2 else 125))
    address = draw(st.integers(0, 0x10000 - count))
    return ReadRequest(draw(units), function, address, count)


requests: st.SearchStrategy[Request] = st.one_of(
    read_requests(),
    st.builds(WriteCoilRequest, st.integers(0, 247), u16, st.sampled_from([COIL_ON, COIL_OFF])),
)


@st.composite
def bits_responses(draw: st.DrawFn) -> BitsResponse:
    function = draw(st.sampled_from([FC.READ_COILS, FC.READ_DISCRETE_INPUTS]))
    packed = draw(st.binary(min_size=1, max_size=250))
    bits = tuple(bool(byte >> i & 1) for byte in packed for i in range(8))
    return BitsResponse(draw(units), function, bits)


responses: st.SearchStrategy[Response] = st.one_of(
    bits_responses(),
    st.builds(
        RegistersResponse,
        units,
        st.sampled_from([FC.READ_HOLDING_REGISTERS, FC.READ_INPUT_REGISTERS]),
        st.lists(u16, min_size=1, max_size=125).map(tuple),
    ),
    st.builds(WriteCoilResponse, units, u16, u16),
    st.builds(ExceptionResponse, units, st.integers(1, 0x7F), st.integers(1, 0xFF)),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(requests)
def test_request_round_trip(request_: Request) -> None:
    wire = encode_request(request_)
    assert decode_request(wire) == request_
    assert feed_request_parser([wire]) == [request_]


@given(responses)
def test_response_round_trip(response: Response) -> None:
    wire = encode_response(response)
    assert decode_response(wire) == response
    assert feed_response_parser([wire]) == [response]


@given(st.lists(requests, max_size=8), st.lists(st.integers(0, 4000), max_size=12))
def test_request_stream_any_chunking(stream: list[Request], cuts: list[int]) -> None:
    data = b"".join(encode_request(r) for r in stream)
    assert feed_request_parser(split(data, cuts)) == stream


@given(st.lists(responses, max_size=6), st.lists(st.integers(0, 4000), max_size=12))
def test_response_stream_any_chunking(stream: list[Response], cuts: list[int]) -> None:
    data = b"".join(encode_response(r) for r in stream)
    assert feed_response_parser(split(data, cuts)) == stream


noisy = st.lists(
    st.one_of(st.binary(max_size=40), requests.map(encode_request), responses.map(encode_response)),
    max_size=8,
).map(b"".join)


@given(noisy, st.lists(st.integers(0, 4000), max_size=16))
def test_random_bytes_never_raise_and_chunking_does_not_matter(
    data: bytes, cuts: list[int]
) -> None:
    assert feed_request_parser(split(data, cuts)) == feed_request_parser([data])
    assert feed_response_parser(split(data, cuts)) == feed_response_parser([data])


@given(st.binary(max_size=2000))
def test_random_bytes_stay_bounded(data: bytes) -> None:
    for parser in (RequestParser(max_frame=64), ResponseParser(max_frame=64)):
        parser.receive_data(data)
        assert parser.buffered_bytes <= 2 * 64
        parser.idle()
        assert parser.buffered_bytes == 0
        for event in parser.events():
            if isinstance(event, Discarded):
                assert len(event.data) <= 64


@given(st.binary(max_size=300))
def test_one_shot_decoders_never_raise(data: bytes) -> None:
    decode_request(data)
    decode_response(data)
