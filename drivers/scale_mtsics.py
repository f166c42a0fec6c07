r"""Mettler Toledo balances and indicators on MT-SICS: ``scale.mtsics`` (protocols §2.1, §6 B).

Manual: MT-SICS reference manual 11780711 (Standard Interface Command Set, levels 0
and 1). RS-232 or USB-CDC, factory setting 9600 8N1, Xon/Xoff, lines end in CR LF (all
configurable on the balance; pass ``line_ending`` to match). The host asks, the
balance answers, one request at a time.

Commands (host to balance), uppercase ASCII ending in CR LF, and their replies::

    @     reset, ends SIR             I4 A "<serial number>"   (or ES on old models)
    I2    model and capacity          I2 A "<model> <capacity> <unit>"
    I4    serial number               I4 A "<serial number>"
    S     weight once stable          S S <weight> <unit> | S I (balance's own timeout)
    SI    weight now                  S S|D <weight> <unit>
    SIR   weight now, repeated        S S|D <weight> <unit> lines until the next command
    Z     zero once stable            Z A | Z I | Z + | Z -
    ZI    zero now                    ZI S | ZI D | ZI I | ZI + | ZI -
    T     tare once stable            T S <tare> <unit> | T I | T + | T -
    TI    tare now                    TI S|D <tare> <unit> | TI I | TI + | TI -
    TA    tare in memory              TA A <tare> <unit>
    TAC   clear tare                  TAC A | TAC I

Reply lines (balance to host)::

    ID ␠ status [␠ weight ␠ unit | ␠ "text"] CR LF
    S␠S␠␠␠␠␠100.00␠g CR LF     53 20 53 20 20 20 20 20 31 30 30 2E 30 30 20 67 0D 0A
    S␠D␠␠␠␠␠␠-0.03␠kg CR LF    the weight is right-aligned in 10 characters

The ID is 1 to 5 characters; ``SI`` and ``SIR`` are answered with ID ``S`` (one
emulator answers ``SI S``; real balances do not). Status letters: ``S`` stable, ``D``
dynamic, ``I`` understood but not executable now (busy, not stable in time), ``+``
overload / above range, ``-`` underload / below range, ``A`` done, ``B`` more lines
follow. ``ES`` (syntax: unknown command), ``ET`` (transmission: parity, framing, break)
and ``EL`` (logical) come alone, without an ID. Replies are parsed by whitespace, not by
column. Units become kilograms: ``kg``, ``g`` (/1000), ``mg``, ``t``, ``lb``
(x 0.45359237), ``oz``; another unit in a weight reply is ``Discarded("unknown-unit")``.

Theory of operation
-------------------

``MtSicsClient`` is sans-I/O: it is told the time, returns the bytes to write, and
never reads a clock or a port. One state enum and one transition table
(``TRANSITIONS``) say what may happen::

    IDLE      --SEND_REQUEST--> AWAITING   poll() or command() wrote a request
    STREAMING --SEND_REQUEST--> AWAITING   any command ends SIR (MT-SICS: "until the
                                           next command")
    AWAITING  --RECV_REPLY----> IDLE       its reply, ES/ET/EL, or I after the last retry
    AWAITING  --RECV_BUSY-----> BACKOFF    I: poll() resends after ``retry_s``
    BACKOFF   --RETRY---------> AWAITING   at most ``max_retries`` times
    AWAITING  --RECV_STREAM---> STREAMING  first weight line after SIR
    AWAITING  --TIMEOUT-------> IDLE       NoResponse(request)
    STREAMING --TIMEOUT-------> IDLE       no line for ``stream_timeout_s``: NoResponse(SIR)
    any       --RESET---------> AWAITING   start(): @ (then I2 once, best effort)
    any       --CLOSE---------> CLOSED     stop(): @, and nothing more is sent

A pair missing from the table is a caller bug: ``command()`` while a request is in
flight (``AWAITING``, ``BACKOFF``) or after ``stop()`` raises ``DriverUsageError``
(check ``ready`` first).

How the agent drives it, after opening the port::

    write(client.start(now))
    loop:
        wait for bytes until client.next_deadline()      (None: no deadline)
        if bytes: client.receive_data(bytes, now)
        client.tick(now)                                 overdue reply -> NoResponse
        handle(client.events())
        if (out := client.poll(now)) is not None: write(out)
    on shutdown: write(client.stop(now))                 ends SIR

``poll`` returns the next request when one is due: ``I2`` after the reset, then ``SI``
every ``poll_s`` (mode ``poll``) or ``SIR`` whenever no stream runs (mode ``stream``),
and the resend of a busy request ``retry_s`` later. Reply deadlines (§6 B):
``start_timeout_s`` (2 s) for ``@``, ``stable_timeout_s`` (10 s, longer than any
balance's own stability timeout) for ``S``, ``reply_timeout_s`` (1 s) for the rest.

Replies and events:

- A weight line (ID ``S``; status ``S``, ``D``, ``+``, ``-``) is a ``Measurement``
  whether asked for or not (SIR lines, a late reply): ``measurement="scale"``, fields
  ``weight_kg`` (float), ``stable`` (bool), ``quality`` (``ok`` for S, ``unstable`` for
  D, ``overload``, ``underload``; the last two carry no weight), tag ``unit_raw``.
  ``D`` is published only with ``publish_unstable``. A weight is published when it,
  its stability or its quality differs from the last one published, or
  ``republish_s`` after that one (the balance repeats itself at the poll or SIR rate,
  §4.2); ``republish_s=0`` publishes every line.
- ``I`` to a request: busy. Resent after ``retry_s`` (500 ms), at most ``max_retries``
  (3) times; then ``DeviceReply(status="I")`` and the request is over.
- Other replies with the ID the request expects (``Z A``, ``T S 1.00 kg``, ``I4 A
  "…"``) are ``DeviceReply`` events with ``request`` set; ``B`` (more lines follow)
  keeps the request open. The same lines unasked (an ``I4`` at power-on, a reply after
  its timeout) come with ``request=None``.
- ``ES``, ``ET``, ``EL`` are ``ProtocolError(code, request)``; they end the request in
  flight. ``ET`` twice in a row means the balance cannot read what we send (wrong baud
  or parity, §6 B): that event has ``suspect_link=True``.
- A line equal to the last command sent is its echo (RS-485 adapters, §4.2): dropped
  and counted in ``echoes``, no event.
- Line noise is ``Discarded``: ``framing-suspect`` (over 10 % non-text bytes, §4.2),
  ``bad-reply`` (not the grammar), ``bad-weight`` (a weight reply without a number and
  unit), ``unknown-unit``, ``too-long`` (``max_line`` bytes without a line end; the rest
  of that line is skipped). Blank lines are ignored. Resync is at the next line end.

Config example (``site.toml``)::

    [[devices]]
    id = "balanca-lab"
    driver = "scale.mtsics"
    port = "/dev/serial/by-id/usb-METTLER_TOLEDO_XS205-if00"
    baudrate = 9600
    xonxoff = true
    [devices.mtsics]
    mode = "poll"            # or "stream" (SIR)
    poll_s = 1.0
    publish_unstable = false
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final, Literal, assert_never, get_args

from coffee_telemetry.drivers._framing import (
    EventQueue,
    LineEnding,
    LineReader,
    cap,
    looks_misframed,
)
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded, FieldValue, Measurement

__all__ = [
    "COMMANDS",
    "REPLY_ID",
    "TRANSITIONS",
    "UNIT_TO_KG",
    "CommandName",
    "DeviceReply",
    "ErrorCode",
    "Input",
    "MtSicsClient",
    "MtSicsEvent",
    "NoResponse",
    "ProtocolError",
    "Reply",
    "State",
    "decode_command",
    "decode_reply",
    "encode_command",
    "encode_error",
    "encode_reply",
]

#: Commands the client sends and the simulator answers.
CommandName = Literal["@", "I2", "I4", "S", "SI", "SIR", "Z", "ZI", "T", "TI", "TA", "TAC"]
COMMANDS: Final[frozenset[str]] = frozenset(get_args(CommandName))

#: The ID of the reply to each command.
REPLY_ID: Final[Mapping[str, str]] = {
    "@": "I4",
    "I2": "I2",
    "I4": "I4",
    "S": "S",
    "SI": "S",
    "SIR": "S",
    "Z": "Z",
    "ZI": "ZI",
    "T": "T",
    "TI": "TI",
    "TA": "TA",
    "TAC": "TAC",
}

#: Generic error replies: syntax, transmission, logical.
ErrorCode = Literal["ES", "ET", "EL"]
_ERROR_CODE: Final[Mapping[str, ErrorCode]] = {"ES": "ES", "ET": "ET", "EL": "EL"}
_ERROR_CODES: Final[frozenset[str]] = frozenset(_ERROR_CODE)

#: Kilograms per unit a balance may print.
UNIT_TO_KG: Final[Mapping[str, float]] = {
    "kg": 1.0,
    "g": 1e-3,
    "mg": 1e-6,
    "t": 1e3,
    "lb": 0.45359237,
    "oz": 0.028349523125,
}

# Which (ID, status) pairs carry "<weight> <unit>".
_WEIGHT_REPLIES: Final[Mapping[str, str]] = {"S": "SD", "T": "SD", "TI": "SD", "TA": "A"}
_STATUSES: Final = "SDIAB+-"
_WEIGHT_FIELD = 10  # the value is right-aligned in 10 characters
_MAX_DECIMALS = 6

_ERROR_LINE = re.compile(rb"(ES|ET|EL) *")
_REPLY_LINE = re.compile(rb"([A-Z0-9@]{1,5}) ([SDIAB+\-])((?: [ -~]*)?)")
_WEIGHT = re.compile(rb" +([+-]?[0-9]+(?:\.[0-9]+)?) +([!-~]{1,3}) *")
_ID = re.compile(r"[A-Z0-9@]{1,5}")
_UNIT = re.compile(r"[!-~]{1,3}")
_TEXT = re.compile(r"[ -!#-~]*")  # printable ASCII without the double quote
_COMMAND_LINE = re.compile(rb"[ -~]*")


# -- events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoResponse:
    r"""A request got no reply in time (balance off, unplugged, or deaf to us).

    Attributes:
        request: The request as written, CR LF included (``b"SIR\r\n"`` when a
            stream stopped).
    """

    request: bytes


@dataclass(frozen=True, slots=True)
class DeviceReply:
    """A reply that is not a weight reading: zero, tare, identity, busy.

    Attributes:
        id: The reply ID (``Z``, ``T``, ``I4``, ``S`` for a final ``S I``...).
        status: Its status letter.
        request: The request it answers, CR LF included, or ``None`` when it came
            unasked (``I4`` at power-on, a reply after its timeout).
        weight_kg: The tare of a ``T``, ``TI`` or ``TA`` reply, in kg.
        text: The text parameter (serial number, model) without its quotes.
    """

    id: str
    status: str
    request: bytes | None = None
    weight_kg: float | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The balance answered ``ES``, ``ET`` or ``EL``.

    Attributes:
        code: ``ES`` unknown command, ``ET`` transmission error, ``EL`` logical error.
        request: The request it answers, or ``None`` when none was in flight.
        suspect_link: The second (or later) ``ET`` in a row: the balance cannot read
            what we send; check baud rate and parity.
    """

    code: ErrorCode
    request: bytes | None = None
    suspect_link: bool = False


#: Everything ``MtSicsClient.events()`` returns.
MtSicsEvent = Measurement | Discarded | NoResponse | DeviceReply | ProtocolError


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply line, parsed.

    Attributes:
        id: Reply ID, or the error code (``ES``, ``ET``, ``EL``).
        status: Status letter; ``""`` for an error code.
        value: The weight, in ``unit``, for the replies that carry one (see
            ``decode_reply``).
        unit: The unit as printed.
        text: Any other parameter text, a lone quoted string without its quotes.
    """

    id: str
    status: str
    value: float | None = None
    unit: str | None = None
    text: str | None = None


# -- encoding and decoding -----------------------------------------------------------


def encode_command(name: str) -> bytes:
    """Build a command line, CR LF included.

    Raises:
        DriverUsageError: ``name`` is not one of ``COMMANDS``.
    """
    if name not in COMMANDS:
        raise DriverUsageError(
            f"unknown MT-SICS command {name!r}; expected one of {sorted(COMMANDS)}"
        )
    return name.encode("ascii") + b"\r\n"


def decode_command(line: bytes) -> str | Discarded:
    """Read one command line as a balance does (the simulator's side).

    Args:
        line: The line, with or without its CR/LF; trailing spaces are ignored.

    Returns:
        The command name, or ``Discarded`` with reason ``empty`` (nothing to answer),
        ``malformed`` (bytes that are not printable ASCII: a balance answers ``ET``)
        or ``unknown-command`` (a balance answers ``ES``).
    """
    text = bytes(line).rstrip(b"\r\n").rstrip(b" ")
    if not text:
        return Discarded(data=b"", reason="empty")
    if _COMMAND_LINE.fullmatch(text) is None:
        return Discarded(data=cap(text, 64), reason="malformed")
    name = text.decode("ascii")
    if name not in COMMANDS:
        return Discarded(data=cap(text, 64), reason="unknown-command")
    return name


def encode_error(code: ErrorCode) -> bytes:
    """Build an ``ES``, ``ET`` or ``EL`` line.

    Raises:
        DriverUsageError: ``code`` is not one of them.
    """
    if code not in _ERROR_CODES:
        raise DriverUsageError(f"not an MT-SICS error code: {code!r}")
    return code.encode("ascii") + b"\r\n"


def encode_reply(
    id: str,
    status: str,
    *,
    value: float | None = None,
    unit: str | None = None,
    decimals: int = 2,
    text: str | None = None,
) -> bytes:
    r"""Build a reply line as a balance prints it, CR LF included.

    A weight is printed with ``decimals`` decimals, right-aligned in 10 characters,
    then one space and the unit: ``encode_reply("S", "S", value=100, unit="g")`` is
    ``b"S S     100.00 g\r\n"``. Text is printed in double quotes.

    Args:
        id: Reply ID, 1 to 5 of ``A-Z 0-9 @``.
        status: One of ``S D I A B + -``.
        value: The weight; required exactly for the pairs that carry one
            (``S S``, ``S D``, ``T S``, ``T D``, ``TI S``, ``TI D``, ``TA A``).
        unit: The weight's unit, 1 to 3 printable characters; required with ``value``.
        decimals: Decimals printed, 0 to 6.
        text: A text parameter (serial number, model), printable ASCII without ``"``.

    Raises:
        DriverUsageError: A reply the protocol cannot carry: bad ID, status or unit,
            a weight where none belongs (or missing where one does), a value that
            does not fit 10 characters, text with a quote or a control character.
    """
    if _ID.fullmatch(id) is None or id in _ERROR_CODES:
        raise DriverUsageError(f"bad reply ID {id!r}")
    if len(status) != 1 or status not in _STATUSES:
        raise DriverUsageError(f"bad status {status!r}; expected one of {_STATUSES!r}")
    weighs = status in _WEIGHT_REPLIES.get(id, "")
    if weighs != (value is not None):
        need = "needs" if weighs else "cannot carry"
        raise DriverUsageError(f"reply {id} {status} {need} a weight")
    line = f"{id} {status}"
    if value is not None:
        if text is not None:
            raise DriverUsageError("a weight reply carries no text")
        if not 0 <= decimals <= _MAX_DECIMALS:
            raise DriverUsageError(f"decimals must be 0..{_MAX_DECIMALS}: {decimals!r}")
        if unit is None or _UNIT.fullmatch(unit) is None or unit not in UNIT_TO_KG:
            raise DriverUsageError(f"bad unit {unit!r}; expected one of {sorted(UNIT_TO_KG)}")
        number = f"{value:.{decimals}f}" if math.isfinite(value) else "nan"
        if number == "nan" or len(number) > _WEIGHT_FIELD:
            raise DriverUsageError(f"weight {value!r} does not fit {_WEIGHT_FIELD} characters")
        line += f" {number:>{_WEIGHT_FIELD}} {unit}"
    elif unit is not None:
        raise DriverUsageError("a unit needs a value")
    if text is not None:
        if _TEXT.fullmatch(text) is None:
            raise DriverUsageError(f"text {text!r}: printable ASCII without '\"' only")
        line += f' "{text}"'
    return line.encode("ascii") + b"\r\n"


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1]:
        return text[1:-1]
    return text


def decode_reply(line: bytes) -> Reply | Discarded:
    """Parse one reply line; never raises.

    Args:
        line: The line, with or without its CR/LF.

    Returns:
        The parsed reply, or ``Discarded`` with reason ``framing-suspect``,
        ``bad-reply``, ``bad-weight`` (``S S``, ``S D``, ``T S``, ``T D``, ``TI S``,
        ``TI D`` or ``TA A`` without a number and a unit) or ``unknown-unit``.
    """
    content = bytes(line).rstrip(b"\r\n")
    if looks_misframed(content):
        return Discarded(data=content, reason="framing-suspect")
    if (error := _ERROR_LINE.fullmatch(content)) is not None:
        return Reply(id=error.group(1).decode("ascii"), status="")
    found = _REPLY_LINE.fullmatch(content)
    if found is None:
        return Discarded(data=content, reason="bad-reply")
    id_ = found.group(1).decode("ascii")
    status = found.group(2).decode("ascii")
    rest = found.group(3)
    if status in _WEIGHT_REPLIES.get(id_, ""):
        weight = _WEIGHT.fullmatch(rest)
        if weight is None:
            return Discarded(data=content, reason="bad-weight")
        unit = weight.group(2).decode("ascii")
        if unit not in UNIT_TO_KG:
            return Discarded(data=content, reason="unknown-unit")
        return Reply(id=id_, status=status, value=float(weight.group(1)), unit=unit)
    text = rest.decode("ascii").strip()
    return Reply(id=id_, status=status, text=_unquote(text) if text else None)


def _kg(reply: Reply) -> float | None:
    if reply.value is None or reply.unit is None:
        return None
    # Rounded to a nanogram: 0.03 lb must not print as 0.013607771100000001 kg.
    return round(reply.value * UNIT_TO_KG[reply.unit], 9)


# -- the client ----------------------------------------------------------------------


class State(Enum):
    """Where the client is in its request/response cycle."""

    IDLE = auto()  # nothing in flight; poll() sends the next request when due
    AWAITING = auto()  # one request in flight, its reply due by the deadline
    BACKOFF = auto()  # the balance said I; poll() resends at the deadline
    STREAMING = auto()  # SIR runs: weight lines arrive unasked
    CLOSED = auto()  # stop() sent @; nothing is sent until start()


class Input(Enum):
    """What moves the client from one state to another."""

    SEND_REQUEST = auto()
    RECV_REPLY = auto()
    RECV_BUSY = auto()
    RECV_STREAM = auto()
    RETRY = auto()
    TIMEOUT = auto()
    RESET = auto()
    CLOSE = auto()


#: The whole state machine; a missing pair is a caller bug.
TRANSITIONS: Final[Mapping[tuple[State, Input], State]] = {
    (State.IDLE, Input.SEND_REQUEST): State.AWAITING,
    (State.STREAMING, Input.SEND_REQUEST): State.AWAITING,
    (State.AWAITING, Input.RECV_REPLY): State.IDLE,
    (State.AWAITING, Input.RECV_BUSY): State.BACKOFF,
    (State.BACKOFF, Input.RETRY): State.AWAITING,
    (State.AWAITING, Input.RECV_STREAM): State.STREAMING,
    (State.AWAITING, Input.TIMEOUT): State.IDLE,
    (State.STREAMING, Input.TIMEOUT): State.IDLE,
    **{(state, Input.RESET): State.AWAITING for state in State},
    **{(state, Input.CLOSE): State.CLOSED for state in State},
}

_PublishKey = tuple[tuple[str, FieldValue], ...]


class MtSicsClient(EventQueue[Measurement | NoResponse | DeviceReply | ProtocolError]):
    """Sans-I/O MT-SICS client (see the module docstring for how to drive it).

    Args:
        mode: ``poll`` sends ``SI`` every ``poll_s``; ``stream`` sends ``SIR`` once
            and reads the lines it brings (resent when the stream stops).
        publish_unstable: Publish ``D`` (dynamic) weights with quality ``unstable``.
        poll_s: Interval between ``SI`` requests (or ``SIR`` attempts).
        reply_timeout_s: Reply deadline for every command but ``S`` and ``@``.
        stable_timeout_s: Reply deadline for ``S`` (which waits for stability).
        start_timeout_s: Reply deadline for ``@``.
        stream_timeout_s: Silence after which a ``SIR`` stream counts as stopped.
        retry_s: Delay before resending a request the balance answered with ``I``.
        max_retries: Resends after ``I`` before giving up.
        republish_s: Publish an unchanged weight again after this long; 0: every line.
        line_ending: How the balance ends lines (its default is CR LF).
        max_line: Bytes without a line end after which a line is dropped.

    Attributes:
        frames_ok: Reply lines decoded (echoes not included).
        frames_discarded: ``Discarded`` events produced.
        echoes: Lines dropped as the echo of our own command.

    Raises:
        DriverUsageError: A time that is not a positive number (``republish_s`` may be
            0), ``max_retries`` < 0, ``max_line`` < 16, or an unknown mode.
    """

    def __init__(
        self,
        *,
        mode: Literal["poll", "stream"] = "poll",
        publish_unstable: bool = False,
        poll_s: float = 1.0,
        reply_timeout_s: float = 1.0,
        stable_timeout_s: float = 10.0,
        start_timeout_s: float = 2.0,
        stream_timeout_s: float = 2.0,
        retry_s: float = 0.5,
        max_retries: int = 3,
        republish_s: float = 5.0,
        line_ending: LineEnding = "crlf",
        max_line: int = 256,
    ) -> None:
        if mode not in ("poll", "stream"):
            raise DriverUsageError(f"mode must be 'poll' or 'stream': {mode!r}")
        times = {
            "poll_s": poll_s,
            "reply_timeout_s": reply_timeout_s,
            "stable_timeout_s": stable_timeout_s,
            "start_timeout_s": start_timeout_s,
            "stream_timeout_s": stream_timeout_s,
            "retry_s": retry_s,
        }
        for name, value in times.items():
            if not (math.isfinite(value) and value > 0):
                raise DriverUsageError(f"{name} must be a positive number: {value!r}")
        if not (math.isfinite(republish_s) and republish_s >= 0):
            raise DriverUsageError(f"republish_s must be >= 0: {republish_s!r}")
        if max_retries < 0:
            raise DriverUsageError(f"max_retries must be >= 0: {max_retries!r}")
        if max_line < 16:
            raise DriverUsageError(f"max_line must be >= 16: {max_line!r}")
        super().__init__(max_discarded=max_line)
        self._mode = mode
        self._publish_unstable = publish_unstable
        self._poll_s = poll_s
        self._reply_timeout_s = reply_timeout_s
        self._stable_timeout_s = stable_timeout_s
        self._start_timeout_s = start_timeout_s
        self._stream_timeout_s = stream_timeout_s
        self._retry_s = retry_s
        self._max_retries = max_retries
        self._republish_s = republish_s
        self._lines = LineReader(line_ending, max_line=max_line)
        self._state = State.IDLE
        self._command: str | None = None  # in flight, to retry, or streaming (SIR)
        self._deadline = 0.0  # reply due, retry due, or stream silent since
        self._retries = 0
        self._queue: deque[str] = deque()
        self._next_poll_at: float | None = None
        self._echo = b""
        self._et_run = 0
        self._published: tuple[_PublishKey, float] | None = None
        self.echoes = 0

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def ready(self) -> bool:
        """Whether ``command()`` may send now (no request in flight, not stopped)."""
        return (self._state, Input.SEND_REQUEST) in TRANSITIONS

    @property
    def in_flight(self) -> bytes | None:
        """The request awaiting its reply or its resend (``SIR`` while streaming)."""
        return None if self._command is None else encode_command(self._command)

    def _go(self, event: Input) -> None:
        self._state = TRANSITIONS[(self._state, event)]

    # -- what to send --------------------------------------------------------------

    def start(self, now: float) -> bytes:
        """Reset the balance (``@``), from any state; ``I2`` follows via ``poll``.

        Call once after the port opens. ``@`` also ends a ``SIR`` stream and cancels
        whatever the balance was doing.
        """
        self._go(Input.RESET)
        self._queue.clear()
        self._queue.append("I2")
        self._next_poll_at = None
        return self._sent("@", now)

    def stop(self, now: float) -> bytes:
        """Return ``@`` to write before closing the port; sends nothing more after it."""
        self._go(Input.CLOSE)
        self._command = None
        self._queue.clear()
        self._echo = b"@"
        return encode_command("@")

    def command(self, name: CommandName, now: float) -> bytes:
        """Send a command now (tare, zero, a weight on demand...).

        Returns:
            The bytes to write.

        Raises:
            DriverUsageError: ``name`` is not one of ``COMMANDS``, or a request is
                in flight or the client is stopped (see ``ready``).
        """
        encode_command(name)  # validates the name first
        if not self.ready:
            raise DriverUsageError(
                f"cannot send {name!r} in state {self._state.name}: {self.in_flight!r} is in flight"
            )
        self._go(Input.SEND_REQUEST)
        return self._sent(name, now)

    def poll(self, now: float) -> bytes | None:
        """The next request to write, if one is due at ``now``; call after each wake-up."""
        match self._state:
            case State.IDLE:
                if self._queue:
                    name = self._queue.popleft()
                elif self._next_poll_at is None or now >= self._next_poll_at:
                    name = "SIR" if self._mode == "stream" else "SI"
                    self._next_poll_at = now + self._poll_s
                else:
                    return None
                self._go(Input.SEND_REQUEST)
                return self._sent(name, now)
            case State.BACKOFF:
                if now < self._deadline:
                    return None
                self._go(Input.RETRY)
                assert self._command is not None  # BACKOFF always holds the request
                return self._sent(self._command, now, retry=True)
            case State.AWAITING | State.STREAMING | State.CLOSED:
                return None
            case _:  # pragma: no cover
                assert_never(self._state)

    def _sent(self, name: str, now: float, *, retry: bool = False) -> bytes:
        self._command = name
        if not retry:
            self._retries = 0
        self._deadline = now + self._timeout(name)
        self._echo = name.encode("ascii")
        return encode_command(name)

    def _timeout(self, name: str) -> float:
        if name == "@":
            return self._start_timeout_s
        if name == "S":
            return self._stable_timeout_s
        return self._reply_timeout_s

    # -- time ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When to call ``tick`` and ``poll`` next (agent's monotonic seconds).

        ``0.0`` means at once; ``None`` (after ``stop``) means only bytes matter.
        """
        match self._state:
            case State.IDLE:
                if self._queue or self._next_poll_at is None:
                    return 0.0
                return self._next_poll_at
            case State.AWAITING | State.BACKOFF | State.STREAMING:
                return self._deadline
            case State.CLOSED:
                return None
            case _:  # pragma: no cover
                assert_never(self._state)

    def tick(self, now: float) -> None:
        """Tell the client the time: an overdue reply or a silent stream is ``NoResponse``."""
        if self._state in (State.AWAITING, State.STREAMING) and now >= self._deadline:
            request = self.in_flight or b""
            self._go(Input.TIMEOUT)
            self._command = None
            self._events.append(NoResponse(request=request))

    # -- what comes back -----------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes that arrived at ``now``, cut anywhere; never raises."""
        for line in self._lines.feed(data):
            self._line(line, now)

    def _line(self, content: bytes | Discarded, now: float) -> None:
        if isinstance(content, Discarded):  # a too-long line
            self._discard(content.data, content.reason)
            return
        if content.rstrip() == self._echo:
            self.echoes += 1
            return
        reply = decode_reply(content)
        if isinstance(reply, Discarded):
            self._discard(reply.data, reply.reason)
            return
        self.frames_ok += 1
        if self._state is State.STREAMING:
            self._deadline = now + self._stream_timeout_s  # the balance is alive
        self._reply(reply, content, now)

    def _expects(self, reply_id: str) -> bool:
        return (
            self._state is State.AWAITING
            and self._command is not None
            and REPLY_ID[self._command] == reply_id
        )

    def _complete(self) -> bytes | None:
        """End the request in flight (if any); return it."""
        if self._state is not State.AWAITING:
            return None
        request = self.in_flight
        self._go(Input.RECV_REPLY)
        self._command = None
        return request

    def _reply(self, reply: Reply, content: bytes, now: float) -> None:
        if reply.id in _ERROR_CODES:
            self._et_run = self._et_run + 1 if reply.id == "ET" else 0
            self._events.append(
                ProtocolError(
                    code=_ERROR_CODE[reply.id],
                    request=self._complete(),
                    suspect_link=self._et_run >= 2,
                )
            )
            return
        self._et_run = 0
        expected = self._expects(reply.id)
        if reply.status == "I" and expected:
            self._busy(reply, now)
            return
        if reply.id == "S" and reply.status in "SD+-":
            self._weight(reply, content, now)
            return
        if reply.status == "B" and expected:
            request = self.in_flight  # more lines follow: the request stays open
        else:
            request = self._complete() if expected else None
        self._events.append(
            DeviceReply(
                id=reply.id,
                status=reply.status,
                request=request,
                weight_kg=_kg(reply),
                text=reply.text,
            )
        )

    def _busy(self, reply: Reply, now: float) -> None:
        if self._retries < self._max_retries:
            self._retries += 1
            self._go(Input.RECV_BUSY)
            self._deadline = now + self._retry_s
            return
        request = self._complete()
        self._events.append(DeviceReply(id=reply.id, status=reply.status, request=request))

    def _weight(self, reply: Reply, content: bytes, now: float) -> None:
        if self._expects("S"):
            if self._command == "SIR":
                self._go(Input.RECV_STREAM)
                self._deadline = now + self._stream_timeout_s
            else:
                self._complete()
        weight_kg = _kg(reply)
        fields: dict[str, FieldValue]
        tags: dict[str, str] = {}
        match reply.status:
            case "S" | "D":
                if reply.status == "D" and not self._publish_unstable:
                    return
                stable = reply.status == "S"
                # decode_reply returns S and D replies with a known unit and a value.
                assert weight_kg is not None
                assert reply.unit is not None
                fields = {
                    "weight_kg": weight_kg,
                    "stable": stable,
                    "quality": "ok" if stable else "unstable",
                }
                tags["unit_raw"] = reply.unit
            case _:
                quality = "overload" if reply.status == "+" else "underload"
                fields = {"stable": False, "quality": quality}
        key = tuple(fields.items())
        if self._published is not None:
            last_key, last_at = self._published
            if key == last_key and now - last_at < self._republish_s:
                return
        self._published = (key, now)
        self._events.append(Measurement(measurement="scale", fields=fields, tags=tags, raw=content))
