"""scale.mtsics: the MT-SICS client, its reply grammar and encoders, both ways."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.errors import DriverUsageError
from coffee_telemetry.agent.onboard.propose import event_json
from coffee_telemetry.drivers.events import Discarded, Measurement
from coffee_telemetry.drivers.scale_mtsics import (
    COMMANDS,
    REPLY_ID,
    TRANSITIONS,
    UNIT_TO_KG,
    CommandName,
    DeviceReply,
    Input,
    MtSicsClient,
    MtSicsEvent,
    NoResponse,
    ProtocolError,
    Reply,
    State,
    decode_command,
    decode_reply,
    encode_command,
    encode_error,
    encode_reply,
)

CASES_DIR = Path(__file__).parents[1] / "cases" / "scale_mtsics"


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def scale(weight_kg: float, *, stable: bool = True, unit: str = "kg", raw: bytes) -> Measurement:
    return Measurement(
        measurement="scale",
        fields={
            "weight_kg": weight_kg,
            "stable": stable,
            "quality": "ok" if stable else "unstable",
        },
        tags={"unit_raw": unit},
        raw=raw,
    )


def out_of_range(quality: str, raw: bytes) -> Measurement:
    return Measurement(
        measurement="scale", fields={"stable": False, "quality": quality}, tags={}, raw=raw
    )


def state(client: MtSicsClient) -> State:
    # A call, not the attribute: mypy would keep the narrowing of an earlier assert.
    return client.state


def awaiting(command: CommandName, **options: object) -> MtSicsClient:
    """A client with ``command`` in flight, sent at t=0."""
    client = MtSicsClient(**options)  # type: ignore[arg-type]
    assert client.command(command, 0.0) == command.encode() + b"\r\n"
    return client


# -- the reply table, both ways -------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A reply line, how to build it, what it parses to, and the event it makes."""

    line: bytes
    encode: dict[str, object]
    reply: Reply
    request: CommandName
    event: MtSicsEvent
    extra: dict[str, object] = field(default_factory=dict)


# The §6 B test vectors first, then one line per reply shape.
CASES = [
    Case(
        b"S S     100.00 g\r\n",
        {"id": "S", "status": "S", "value": 100.0, "unit": "g"},
        Reply("S", "S", 100.0, "g"),
        "SI",
        scale(0.1, unit="g", raw=b"S S     100.00 g"),
    ),
    Case(
        b"S D      -0.03 kg\r\n",
        {"id": "S", "status": "D", "value": -0.03, "unit": "kg"},
        Reply("S", "D", -0.03, "kg"),
        "SI",
        scale(-0.03, stable=False, raw=b"S D      -0.03 kg"),
    ),
    Case(
        b"S +\r\n",
        {"id": "S", "status": "+"},
        Reply("S", "+"),
        "SI",
        out_of_range("overload", b"S +"),
    ),
    Case(
        b"S -\r\n",
        {"id": "S", "status": "-"},
        Reply("S", "-"),
        "S",
        out_of_range("underload", b"S -"),
    ),
    Case(b"ES\r\n", {"code": "ES"}, Reply("ES", ""), "SI", ProtocolError("ES", b"SI\r\n")),
    Case(b"ET\r\n", {"code": "ET"}, Reply("ET", ""), "Z", ProtocolError("ET", b"Z\r\n")),
    Case(b"EL\r\n", {"code": "EL"}, Reply("EL", ""), "T", ProtocolError("EL", b"T\r\n")),
    Case(
        b'I4 A "B123456789"\r\n',
        {"id": "I4", "status": "A", "text": "B123456789"},
        Reply("I4", "A", text="B123456789"),
        "@",
        DeviceReply("I4", "A", b"@\r\n", text="B123456789"),
    ),
    Case(
        b'I2 A "XS205 220.0000 g"\r\n',
        {"id": "I2", "status": "A", "text": "XS205 220.0000 g"},
        Reply("I2", "A", text="XS205 220.0000 g"),
        "I2",
        DeviceReply("I2", "A", b"I2\r\n", text="XS205 220.0000 g"),
    ),
    Case(
        b"Z A\r\n",
        {"id": "Z", "status": "A"},
        Reply("Z", "A"),
        "Z",
        DeviceReply("Z", "A", b"Z\r\n"),
    ),
    Case(
        b"Z +\r\n",
        {"id": "Z", "status": "+"},
        Reply("Z", "+"),
        "Z",
        DeviceReply("Z", "+", b"Z\r\n"),
    ),
    Case(
        b"ZI D\r\n",
        {"id": "ZI", "status": "D"},
        Reply("ZI", "D"),
        "ZI",
        DeviceReply("ZI", "D", b"ZI\r\n"),
    ),
    Case(
        b"T S      12.50 kg\r\n",
        {"id": "T", "status": "S", "value": 12.5, "unit": "kg"},
        Reply("T", "S", 12.5, "kg"),
        "T",
        DeviceReply("T", "S", b"T\r\n", weight_kg=12.5),
    ),
    Case(
        b"TI D      250.0 g\r\n",
        {"id": "TI", "status": "D", "value": 250.0, "unit": "g", "decimals": 1},
        Reply("TI", "D", 250.0, "g"),
        "TI",
        DeviceReply("TI", "D", b"TI\r\n", weight_kg=0.25),
    ),
    Case(
        b"TA A      2.000 lb\r\n",
        {"id": "TA", "status": "A", "value": 2.0, "unit": "lb", "decimals": 3},
        Reply("TA", "A", 2.0, "lb"),
        "TA",
        DeviceReply("TA", "A", b"TA\r\n", weight_kg=0.90718474),
    ),
    Case(
        b"TAC A\r\n",
        {"id": "TAC", "status": "A"},
        Reply("TAC", "A"),
        "TAC",
        DeviceReply("TAC", "A", b"TAC\r\n"),
    ),
    Case(
        b"S S      1.500 t\r\n",
        {"id": "S", "status": "S", "value": 1.5, "unit": "t", "decimals": 3},
        Reply("S", "S", 1.5, "t"),
        "S",
        scale(1500.0, unit="t", raw=b"S S      1.500 t"),
    ),
]


def encoded(case: Case) -> bytes:
    if "code" in case.encode:
        return encode_error(case.encode["code"])  # type: ignore[arg-type]
    return encode_reply(**case.encode)  # type: ignore[arg-type]


def run(case: Case, chunks: list[bytes]) -> list[MtSicsEvent]:
    client = awaiting(case.request, publish_unstable=True)
    for chunk in chunks:
        client.receive_data(chunk, 0.1)
    return client.events()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.line.decode().strip())
def test_reply_encodes_to_the_line(case: Case) -> None:
    assert encoded(case) == case.line


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.line.decode().strip())
def test_line_decodes_to_the_reply(case: Case) -> None:
    assert decode_reply(case.line) == case.reply
    assert decode_reply(case.line.rstrip()) == case.reply


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.line.decode().strip())
def test_reply_to_its_request_whole_byte_by_byte_and_with_trailing_bytes(case: Case) -> None:
    assert run(case, [case.line]) == [case.event]
    assert run(case, [bytes([b]) for b in case.line]) == [case.event]
    # A cut next line and a stray CR stay pending; nothing more comes out.
    assert run(case, [case.line + b"S S   "]) == [case.event]
    assert run(case, [case.line[:3], case.line[3:] + b"\r"]) == [case.event]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.line.decode().strip())
def test_request_is_over_after_its_reply(case: Case) -> None:
    client = awaiting(case.request, publish_unstable=True)
    client.receive_data(case.line, 0.1)
    assert state(client) is State.IDLE
    assert client.in_flight is None
    assert client.frames_ok == 1


def test_vectors_in_kilograms() -> None:
    (event,) = run(CASES[0], [CASES[0].line])
    assert isinstance(event, Measurement)
    assert event.fields == {"weight_kg": 0.1, "stable": True, "quality": "ok"}
    assert event.tags == {"unit_raw": "g"}


@pytest.mark.parametrize(
    ("unit", "value", "kg"),
    [
        ("kg", 1.25, 1.25),
        ("g", 100.0, 0.1),
        ("mg", 250.0, 0.00025),
        ("t", 2.5, 2500.0),
        ("lb", 1.0, 0.45359237),
        ("lb", 0.03, 0.013607771),
        ("oz", 16.0, 0.45359237),
    ],
)
def test_units_become_kilograms(unit: str, value: float, kg: float) -> None:
    line = encode_reply("S", "S", value=value, unit=unit)
    client = awaiting("SI")
    client.receive_data(line, 0.1)
    (event,) = client.events()
    assert isinstance(event, Measurement)
    assert event.fields["weight_kg"] == kg
    assert event.tags["unit_raw"] == unit


# -- malformed replies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"S S\r\n", "bad-weight"),  # a stable weight without a number
        (b"S S    abc kg\r\n", "bad-weight"),
        (b"S D 1.0\r\n", "bad-weight"),  # no unit
        (b"T S 1,5 kg\r\n", "bad-weight"),  # decimal comma: MT-SICS prints points
        (b"TA A\r\n", "bad-weight"),
        (b"S S     100.00 ct\r\n", "unknown-unit"),
        (b"S S     100.00 kgs\r\n", "unknown-unit"),
        (b"S X     100.00 g\r\n", "bad-reply"),  # unknown status letter
        (b"s s 1.00 g\r\n", "bad-reply"),  # lowercase
        (b"SSS\r\n", "bad-reply"),
        (b"S  S 1.00 g\r\n", "bad-reply"),  # two spaces after the ID
        (b"TOOLONG A\r\n", "bad-reply"),  # ID over 5 characters
        (b"ESX\r\n", "bad-reply"),
        (b"S S 1.00 g\x7f\r\n", "bad-reply"),  # DEL is not printable
        (b"\xff\xfe\x80S S\r\n", "framing-suspect"),  # wrong baud or parity
        (b"\x00\x00\x00\x00\r\n", "framing-suspect"),
    ],
)
def test_malformed_replies_are_discarded_and_the_request_stays_open(
    line: bytes, reason: str
) -> None:
    client = awaiting("SI")
    client.receive_data(line, 0.1)
    (event,) = client.events()
    assert isinstance(event, Discarded)
    assert event.reason == reason
    assert event.data == line.rstrip(b"\r\n")
    assert state(client) is State.AWAITING
    assert (client.frames_ok, client.frames_discarded) == (0, 1)


def test_blank_lines_are_ignored() -> None:
    client = awaiting("SI")
    client.receive_data(b"\r\n   \r\n", 0.1)
    assert client.events() == []
    assert client.frames_discarded == 0


def test_trailing_spaces_and_plus_sign_are_read() -> None:
    assert decode_reply(b"S S +12.5 kg   ") == Reply("S", "S", 12.5, "kg")
    assert decode_reply(b"ES  ") == Reply("ES", "")
    assert decode_reply(b"I4 A") == Reply("I4", "A")
    assert decode_reply(b'I2 A "XS" "220 g"') == Reply("I2", "A", text='"XS" "220 g"')
    assert decode_reply(b"I0 B 0 I0") == Reply("I0", "B", text="0 I0")


def test_a_line_past_max_line_is_dropped_with_its_remainder() -> None:
    client = awaiting("SI", max_line=32)
    client.receive_data(b"S S " + b"9" * 100, 0.1)
    client.receive_data(b"9" * 50 + b" g\r\nS S      1.00 kg\r\n", 0.1)
    events = client.events()
    assert [type(e) for e in events] == [Discarded, Measurement]
    assert isinstance(events[0], Discarded)
    assert events[0].reason == "too-long"
    assert len(events[0].data) == 32
    assert client.frames_discarded == 1


def test_line_ending_is_configurable() -> None:
    client = awaiting("SI", line_ending="cr")
    client.receive_data(b"S S      1.00 kg\r", 0.1)
    assert [type(e) for e in client.events()] == [Measurement]
    # With the default (CR LF) a lone CR does not end the line.
    client = awaiting("SI")
    client.receive_data(b"S S      1.00 kg\r", 0.1)
    assert client.events() == []


# -- the state machine --------------------------------------------------------------


def test_start_resets_then_asks_for_the_model_then_polls() -> None:
    client = MtSicsClient(republish_s=0)
    assert state(client) is State.IDLE
    assert client.next_deadline() == 0.0
    assert client.start(10.0) == b"@\r\n"
    assert state(client) is State.AWAITING
    assert client.next_deadline() == 12.0  # start_timeout_s
    assert client.poll(10.5) is None
    client.receive_data(b'I4 A "B123"\r\n', 10.2)
    assert client.events() == [DeviceReply("I4", "A", b"@\r\n", text="B123")]
    assert client.next_deadline() == 0.0  # I2 is queued
    assert client.poll(10.2) == b"I2\r\n"
    assert client.next_deadline() == pytest.approx(11.2)
    client.receive_data(b'I2 A "XS205 220.0000 g"\r\n', 10.3)
    assert client.poll(10.3) == b"SI\r\n"
    client.receive_data(b"S S      1.00 kg\r\n", 10.4)
    assert client.poll(10.4) is None
    assert client.next_deadline() == pytest.approx(11.3)  # poll_s after the last SI
    assert client.poll(11.3) == b"SI\r\n"


def test_a_balance_without_reset_answers_es_and_polling_goes_on() -> None:
    client = MtSicsClient()
    client.start(0.0)
    client.receive_data(b"ES\r\n", 0.1)
    assert client.events() == [ProtocolError("ES", b"@\r\n")]
    assert client.poll(0.1) == b"I2\r\n"


@pytest.mark.parametrize(
    ("command", "timeout"),
    [("@", 2.0), ("S", 10.0), ("SI", 1.0), ("Z", 1.0), ("T", 1.0), ("TAC", 1.0), ("I2", 1.0)],
)
def test_overdue_reply_is_no_response(command: CommandName, timeout: float) -> None:
    client = awaiting(command)
    assert client.next_deadline() == timeout
    client.tick(timeout - 0.01)
    assert client.events() == []
    client.tick(timeout)
    assert client.events() == [NoResponse(command.encode() + b"\r\n")]
    assert state(client) is State.IDLE
    # A late reply is still read, now unasked.
    client.receive_data(encode_reply("Z", "A"), timeout + 1)
    assert client.events() == [DeviceReply("Z", "A", None)]


def test_busy_is_retried_after_500_ms_three_times_then_reported() -> None:
    client = awaiting("S")
    now = 0.0
    for _ in range(3):
        client.receive_data(b"S I\r\n", now)
        assert state(client) is State.BACKOFF
        assert client.next_deadline() == pytest.approx(now + 0.5)
        assert client.poll(now + 0.4) is None
        client.tick(now + 0.4)  # no timeout while backing off
        assert not client.ready
        now += 0.5
        assert client.poll(now) == b"S\r\n"
        assert client.next_deadline() == pytest.approx(now + 10.0)
    client.receive_data(b"S I\r\n", now)
    assert client.events() == [DeviceReply("S", "I", b"S\r\n")]
    assert state(client) is State.IDLE


def test_busy_then_success() -> None:
    client = awaiting("Z")
    client.receive_data(b"Z I\r\n", 0.1)
    assert client.poll(0.6) == b"Z\r\n"
    client.receive_data(b"Z A\r\n", 0.7)
    assert client.events() == [DeviceReply("Z", "A", b"Z\r\n")]


def test_max_retries_zero_reports_busy_at_once() -> None:
    client = awaiting("SI", max_retries=0)
    client.receive_data(b"S I\r\n", 0.1)
    assert client.events() == [DeviceReply("S", "I", b"SI\r\n")]


def test_et_twice_in_a_row_flags_the_link() -> None:
    client = MtSicsClient()
    assert client.poll(0.0) == b"SI\r\n"
    client.receive_data(b"ET\r\n", 0.1)
    assert client.poll(1.0) == b"SI\r\n"
    client.receive_data(b"ET\r\n", 1.1)
    client.receive_data(b"ET\r\n", 1.2)  # unasked, still in a row
    client.receive_data(b"EL\r\nET\r\n", 1.3)
    assert client.events() == [
        ProtocolError("ET", b"SI\r\n"),
        ProtocolError("ET", b"SI\r\n", suspect_link=True),
        ProtocolError("ET", None, suspect_link=True),
        ProtocolError("EL"),
        ProtocolError("ET"),
    ]
    client.receive_data(b"ET\r\nS S      1.00 kg\r\nET\r\n", 1.4)
    events = client.events()
    assert events[0] == ProtocolError("ET", suspect_link=True)
    assert events[-1] == ProtocolError("ET")


def test_echo_of_the_last_command_is_dropped() -> None:
    client = MtSicsClient()
    client.poll(0.0)
    client.receive_data(b"SI\r\nS S      1.00 kg\r\n", 0.1)
    assert [type(e) for e in client.events()] == [Measurement]
    assert client.echoes == 1
    assert client.frames_ok == 1
    # An echo of another command is not an echo: it is noise.
    client.receive_data(b"Z\r\n", 0.2)
    assert [e.reason for e in client.events() if isinstance(e, Discarded)] == ["bad-reply"]


def test_command_while_in_flight_or_unknown_is_a_usage_error() -> None:
    client = awaiting("SI")
    assert not client.ready
    with pytest.raises(DriverUsageError, match="in flight"):
        client.command("T", 0.1)
    with pytest.raises(DriverUsageError, match="unknown"):
        client.command("FOO", 0.1)  # type: ignore[arg-type]
    client.receive_data(b"S I\r\n", 0.2)
    with pytest.raises(DriverUsageError):
        client.command("T", 0.3)  # still in flight: waiting to retry
    client.stop(0.4)
    with pytest.raises(DriverUsageError):
        client.command("T", 0.5)


def test_command_while_idle_goes_out_at_once() -> None:
    client = MtSicsClient()
    assert client.ready
    assert client.command("T", 5.0) == b"T\r\n"
    assert client.in_flight == b"T\r\n"
    client.receive_data(b"T S       0.50 kg\r\n", 5.1)
    assert client.events() == [DeviceReply("T", "S", b"T\r\n", weight_kg=0.5)]


def test_unasked_replies_carry_no_request() -> None:
    client = MtSicsClient()
    client.receive_data(b'I4 A "B1"\r\nZ A\r\nS I\r\n', 0.0)
    assert client.events() == [
        DeviceReply("I4", "A", None, text="B1"),
        DeviceReply("Z", "A", None),
        DeviceReply("S", "I", None),
    ]
    assert state(client) is State.IDLE


def test_a_reply_to_another_command_does_not_end_the_request() -> None:
    client = awaiting("T")
    client.receive_data(b"Z A\r\n", 0.1)
    assert client.events() == [DeviceReply("Z", "A", None)]
    assert client.in_flight == b"T\r\n"


def test_more_lines_follow_keeps_the_request_open() -> None:
    client = awaiting("I2")
    client.receive_data(b'I2 B "part 1"\r\n', 0.1)
    assert client.in_flight == b"I2\r\n"
    client.receive_data(b'I2 A "part 2"\r\n', 0.2)
    assert client.events() == [
        DeviceReply("I2", "B", b"I2\r\n", text="part 1"),
        DeviceReply("I2", "A", b"I2\r\n", text="part 2"),
    ]
    assert state(client) is State.IDLE


def test_weights_arriving_while_another_command_waits_are_published() -> None:
    client = awaiting("T", republish_s=0)
    client.receive_data(b"S S      1.00 kg\r\n", 0.1)
    assert [type(e) for e in client.events()] == [Measurement]
    assert client.in_flight == b"T\r\n"


def test_unstable_weights_are_published_only_when_asked() -> None:
    client = awaiting("SI")
    client.receive_data(b"S D       1.00 kg\r\n", 0.1)
    assert client.events() == []
    assert state(client) is State.IDLE  # the reply ended the request all the same
    assert client.frames_ok == 1


def test_unchanged_weights_are_republished_every_five_seconds() -> None:
    client = MtSicsClient(publish_unstable=True)
    line = b"S S      1.00 kg\r\n"
    published = []
    for now in [0.0, 1.0, 2.0, 4.9, 5.0, 6.0, 7.0]:
        client.receive_data(line, now)
        published.append(len(client.events()))
    assert published == [1, 0, 0, 0, 1, 0, 0]
    client.receive_data(b"S S      1.01 kg\r\n", 7.1)  # changed weight
    client.receive_data(b"S D      1.01 kg\r\n", 7.2)  # changed stability
    client.receive_data(b"S +\r\nS +\r\nS -\r\n", 7.3)
    qualities = [e.fields["quality"] for e in client.events() if isinstance(e, Measurement)]
    assert qualities == ["ok", "unstable", "overload", "underload"]


def test_stream_mode_sends_sir_and_reads_lines_as_they_come() -> None:
    client = MtSicsClient(mode="stream", republish_s=0, stream_timeout_s=1.0)
    assert client.poll(0.0) == b"SIR\r\n"
    assert state(client) is State.AWAITING
    client.receive_data(b"SIR\r\nS D      0.50 kg\r\n", 0.1)  # echo, then the stream
    assert state(client) is State.STREAMING
    assert client.in_flight == b"SIR\r\n"
    assert client.poll(0.2) is None
    for i in range(5):
        client.receive_data(b"S S      1.00 kg\r\n", 0.2 + 0.2 * i)
    assert client.next_deadline() == pytest.approx(2.0)
    assert len(client.events()) == 5
    client.tick(1.9)
    assert client.events() == []
    client.tick(2.0)
    assert client.events() == [NoResponse(b"SIR\r\n")]
    assert state(client) is State.IDLE
    assert client.next_deadline() == pytest.approx(1.0)  # poll_s after the last SIR
    assert client.poll(2.0) == b"SIR\r\n"


def test_any_line_keeps_a_stream_alive() -> None:
    client = MtSicsClient(mode="stream", stream_timeout_s=1.0)
    client.poll(0.0)
    client.receive_data(b"S S      1.00 kg\r\n", 0.1)
    client.receive_data(b"S I\r\n", 0.9)
    client.receive_data(b"junk\r\n", 1.5)  # noise is not a sign of life
    client.tick(1.8)
    assert NoResponse(b"SIR\r\n") not in client.events()
    client.tick(1.9)
    assert client.events() == [NoResponse(b"SIR\r\n")]


def test_busy_sir_is_retried() -> None:
    client = MtSicsClient(mode="stream")
    client.poll(0.0)
    client.receive_data(b"S I\r\n", 0.1)
    assert state(client) is State.BACKOFF
    assert client.poll(0.6) == b"SIR\r\n"


def test_stream_overload_line_starts_the_stream_too() -> None:
    client = MtSicsClient(mode="stream")
    client.poll(0.0)
    client.receive_data(b"S +\r\n", 0.1)
    assert state(client) is State.STREAMING


def test_a_command_ends_the_stream_and_the_stream_comes_back() -> None:
    client = MtSicsClient(mode="stream", republish_s=0)
    client.poll(0.0)
    client.receive_data(b"S S      1.00 kg\r\n", 0.1)
    assert client.ready
    assert client.command("T", 0.2) == b"T\r\n"
    # Lines already on the wire before the balance read T are still weights.
    client.receive_data(b"S S      1.00 kg\r\nT S      1.00 kg\r\n", 0.3)
    assert [type(e) for e in client.events()] == [Measurement, Measurement, DeviceReply]
    assert client.poll(1.0) == b"SIR\r\n"


def test_sir_in_poll_mode_streams_until_it_stops() -> None:
    client = MtSicsClient(stream_timeout_s=1.0)
    client.command("SIR", 0.0)
    client.receive_data(b"S S      1.00 kg\r\n", 0.1)
    assert state(client) is State.STREAMING
    client.tick(1.1)
    assert client.events()[-1] == NoResponse(b"SIR\r\n")
    assert client.poll(1.1) == b"SI\r\n"


def test_stop_sends_reset_and_nothing_after() -> None:
    client = MtSicsClient(mode="stream")
    client.poll(0.0)
    client.receive_data(b"S S      1.00 kg\r\n", 0.1)
    assert client.stop(0.2) == b"@\r\n"
    assert state(client) is State.CLOSED
    assert client.next_deadline() is None
    assert client.poll(10.0) is None
    client.tick(10.0)
    client.receive_data(b'@\r\nI4 A "B1"\r\n', 10.0)
    assert client.events()[-1] == DeviceReply("I4", "A", None, text="B1")
    assert client.echoes == 1
    assert client.start(11.0) == b"@\r\n"  # start again after stop
    assert state(client) is State.AWAITING


def test_start_from_any_state_resets() -> None:
    client = awaiting("S")
    client.receive_data(b"S I\r\n", 0.1)
    assert state(client) is State.BACKOFF
    assert client.start(0.2) == b"@\r\n"
    assert client.in_flight == b"@\r\n"
    assert client.next_deadline() == pytest.approx(2.2)


def test_transition_table_covers_every_state() -> None:
    assert {state for state, _ in TRANSITIONS} == set(State)
    assert {event for _, event in TRANSITIONS} == set(Input)
    sending = {state for state, event in TRANSITIONS if event is Input.SEND_REQUEST}
    assert sending == {State.IDLE, State.STREAMING}


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "push"},
        {"poll_s": 0},
        {"reply_timeout_s": -1.0},
        {"stable_timeout_s": math.nan},
        {"retry_s": math.inf},
        {"republish_s": -0.1},
        {"max_retries": -1},
        {"max_line": 8},
    ],
)
def test_bad_options_are_usage_errors(options: dict[str, object]) -> None:
    with pytest.raises(DriverUsageError):
        MtSicsClient(**options)  # type: ignore[arg-type]


# -- commands, both ways ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_commands_round_trip(name: str) -> None:
    line = encode_command(name)
    assert line == name.encode() + b"\r\n"
    assert decode_command(line) == name
    assert name in REPLY_ID


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\r\n", "empty"),
        (b"   \r\n", "empty"),
        (b"FOO\r\n", "unknown-command"),
        (b"si\r\n", "unknown-command"),
        (b"Z 1\r\n", "unknown-command"),
        (b"S\xff\r\n", "malformed"),
        (b"\x13S\r\n", "malformed"),
    ],
)
def test_bad_commands_are_told_apart(line: bytes, reason: str) -> None:
    decoded = decode_command(line)
    assert isinstance(decoded, Discarded)
    assert decoded.reason == reason


def test_trailing_spaces_after_a_command_are_ignored() -> None:
    assert decode_command(b"SI  \r\n") == "SI"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": "s", "status": "S", "value": 1.0, "unit": "kg"},
        {"id": "TOOLONG", "status": "A"},
        {"id": "ES", "status": "A"},
        {"id": "S", "status": "X"},
        {"id": "S", "status": "SD", "value": 1.0, "unit": "kg"},
        {"id": "S", "status": "S"},  # a stable weight needs a value
        {"id": "Z", "status": "A", "value": 1.0, "unit": "kg"},  # Z A carries none
        {"id": "S", "status": "S", "value": 1.0, "unit": "ct"},
        {"id": "S", "status": "S", "value": 1.0},
        {"id": "S", "status": "S", "value": 1e12, "unit": "g"},
        {"id": "S", "status": "S", "value": math.nan, "unit": "g"},
        {"id": "S", "status": "S", "value": 1.0, "unit": "g", "decimals": 7},
        {"id": "S", "status": "S", "value": 1.0, "unit": "g", "text": "x"},
        {"id": "Z", "status": "A", "unit": "g"},
        {"id": "I4", "status": "A", "text": 'say "hi"'},
        {"id": "I4", "status": "A", "text": "tab\there"},
    ],
)
def test_encoder_refuses_what_the_protocol_cannot_carry(kwargs: dict[str, object]) -> None:
    with pytest.raises(DriverUsageError):
        encode_reply(**kwargs)  # type: ignore[arg-type]


def test_other_encoders_refuse_unknown_names() -> None:
    with pytest.raises(DriverUsageError):
        encode_command("FOO")
    with pytest.raises(DriverUsageError):
        encode_error("EX")  # type: ignore[arg-type]


# -- golden cases ----------------------------------------------------------------------


def replay(chunks: list[bytes]) -> list[MtSicsEvent]:
    """What a client streaming (SIR sent at t=0) reports for a capture of the balance."""
    client = MtSicsClient(mode="stream", publish_unstable=True, republish_s=0)
    assert client.poll(0.0) == b"SIR\r\n"
    for chunk in chunks:
        client.receive_data(chunk, 0.5)
    return client.events()


@pytest.mark.parametrize("case", sorted(CASES_DIR.iterdir()), ids=lambda p: p.name)
def test_golden_case(case: Path) -> None:
    data = (case / "input.bin").read_bytes()
    lines = (case / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in lines]
    assert [event_json(e) for e in replay([data])] == expected
    assert [event_json(e) for e in replay([bytes([b]) for b in data])] == expected


def test_golden_cases_exist() -> None:
    assert len(list(CASES_DIR.iterdir())) >= 5


# -- properties ------------------------------------------------------------------------

ids = st.from_regex(r"[A-Z0-9@]{1,5}", fullmatch=True).filter(lambda i: i not in ("ES", "ET", "EL"))
texts = st.from_regex(r"[ -!#-~]{0,20}", fullmatch=True)


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, Reply]:
    reply_id = draw(st.one_of(ids, st.sampled_from(["S", "T", "TI", "TA", "Z"])))
    status = draw(st.sampled_from("SDIAB+-"))
    weighs = status in {"S": "SD", "T": "SD", "TI": "SD", "TA": "A"}.get(reply_id, "")
    if weighs:
        decimals = draw(st.integers(0, 6))
        count = draw(st.integers(-(10 ** (9 - decimals)) + 1, 10 ** (9 - decimals) - 1))
        value = count / 10**decimals
        unit = draw(st.sampled_from(sorted(UNIT_TO_KG)))
        line = encode_reply(reply_id, status, value=value, unit=unit, decimals=decimals)
        return line, Reply(reply_id, status, float(f"{value:.{decimals}f}"), unit)
    text = draw(st.one_of(st.none(), texts))
    return encode_reply(reply_id, status, text=text), Reply(reply_id, status, text=text)


@settings(max_examples=150)
@given(case=replies())
def test_decode_of_encode_is_identity(case: tuple[bytes, Reply]) -> None:
    line, reply = case
    assert decode_reply(line) == reply


@settings(max_examples=150)
@given(cases=st.lists(replies(), max_size=8), cuts=st.lists(st.integers(0, 400)))
def test_any_chunking_of_valid_replies_gives_the_same_events(
    cases: list[tuple[bytes, Reply]], cuts: list[int]
) -> None:
    data = b"".join(line for line, _ in cases)
    assert replay(pieces(data, cuts)) == replay([data])
    client = MtSicsClient()
    client.receive_data(data, 0.0)
    assert client.frames_ok == len(cases)
    assert client.frames_discarded == 0


@settings(max_examples=200)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400)))
def test_random_bytes_never_raise_and_only_weight_lines_make_measurements(
    data: bytes, cuts: list[int]
) -> None:
    events = replay(pieces(data, cuts))
    assert events == replay([data])
    for event in events:
        if isinstance(event, Measurement):
            reply = decode_reply(event.raw)
            assert isinstance(reply, Reply)
            assert (reply.id, reply.status in "SD+-") == ("S", True)


@settings(max_examples=100)
@given(
    script=st.lists(
        st.one_of(
            st.tuples(st.just("data"), st.sampled_from([c.line for c in CASES] + [b"junk\r\n"])),
            st.tuples(st.just("tick"), st.floats(0, 3)),
            st.tuples(st.just("poll"), st.floats(0, 3)),
            st.tuples(st.just("command"), st.sampled_from(sorted(COMMANDS))),
            st.tuples(st.just("start"), st.floats(0, 3)),
            st.tuples(st.just("stop"), st.floats(0, 3)),
        ),
        max_size=30,
    ),
    mode=st.sampled_from(["poll", "stream"]),
)
def test_any_sequence_of_calls_keeps_the_state_machine_consistent(
    script: list[tuple[str, object]], mode: str
) -> None:
    client = MtSicsClient(mode=mode)  # type: ignore[arg-type]
    now = 0.0
    for action, arg in script:
        match action:
            case "data":
                assert isinstance(arg, bytes)
                client.receive_data(arg, now)
            case "tick" | "poll" | "start" | "stop":
                assert isinstance(arg, float)
                now += arg
                if action == "tick":
                    client.tick(now)
                elif action == "poll":
                    client.poll(now)
                elif action == "start":
                    client.start(now)
                else:
                    client.stop(now)
            case "command":
                assert isinstance(arg, str)
                if client.ready:
                    client.command(arg, now)  # type: ignore[arg-type]
                else:
                    with pytest.raises(DriverUsageError):
                        client.command(arg, now)  # type: ignore[arg-type]
        state = client.state
        assert (state in (State.AWAITING, State.BACKOFF, State.STREAMING)) == (
            client.in_flight is not None
        )
        assert (client.next_deadline() is None) == (state is State.CLOSED)
    client.events()
