"""Shared framing helpers: ESC/POS stripping, lines, decimals, the wrong-baud check, events."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.drivers._framing import (
    TEXT_BYTES,
    EscPosStripper,
    EventQueue,
    IdleGap,
    LineEnding,
    LineReader,
    LineSplitter,
    StrayBytes,
    cap,
    looks_misframed,
    parse_decimal,
    strip_escpos,
)
from coffee_telemetry.drivers.errors import DriverUsageError
from coffee_telemetry.drivers.events import Discarded


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given positions (any order, out of range ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def strip_chunked(data: bytes, chunks: list[bytes], *, mark_init: bool = False) -> bytes:
    stripper = EscPosStripper(mark_init=mark_init)
    assert b"".join(chunks) == data
    return b"".join(stripper.feed(chunk) for chunk in chunks)


# -- ESC/POS ---------------------------------------------------------------------

# (input, stripped). Every sequence §6 A2 lists, and the edge cases of the state machine.
ESCPOS_CASES = [
    (b"\x1b@GEHAKA", b"GEHAKA"),  # ESC @ initialise
    (b"\x1b!\x08Umidade\x1b!\x00", b"Umidade"),  # ESC ! n print mode
    (b"\x1bE\x01bold\x1bE\x00", b"bold"),  # ESC E n emphasis
    (b"a\x1bd\x03b", b"ab"),  # ESC d n feed lines
    (b"a\x1bJ\x40b", b"ab"),  # ESC J n feed dots ('@' as a parameter is not ESC @)
    (b"\x1ba\x01centre", b"centre"),  # ESC a n justification
    (b"\x1b-\x01under\x1b-\x00", b"under"),  # ESC - n underline
    (b"x\x1dV\x00y", b"xy"),  # GS V m full cut
    (b"x\x1dV1y", b"xy"),  # GS V '1'
    (b"x\x1dVB\x00y", b"xy"),  # GS V 'B' n: cut after feeding n
    (b"x\x1dVA\x0cy", b"xy"),  # GS V 'A' n: the n=12 is not a form feed
    (b"\x1d!\x11big", b"big"),  # GS ! n character size
    (b"cut\x1bi", b"cut"),  # ESC i partial cut
    (b"cut\x1bm", b"cut"),  # ESC m
    (b"\x1bt\x10code page", b"code page"),  # ESC t n, beyond the spec's list
    (b"\x1dL\x10\x00margin", b"margin"),  # GS L nL nH, two parameters
    (b"\x1bZz", b"z"),  # unknown ESC command: ESC + 1 byte
    (b"\x1dZz", b"z"),  # unknown GS command
    (b"a\x1bd\x0cb", b"ab"),  # ESC d 12: a parameter, never a form feed
    (b"a\x1b\r\nb", b"a\r\nb"),  # ESC before a control byte: the ESC alone is dropped
    (b"a\x1d\x0cb", b"a\x0cb"),  # GS before FF: the FF survives
    (b"a\x1b\x1b@b", b"ab"),  # ESC ESC @: the second ESC opens the command
    (b"\x00\x01\x07\x08tab\there\x7f\x0b\x0e\x1f", b"tab\there\x7f"),  # C0 dropped, DEL kept
    (b"line\r\nnext\nff\x0c", b"line\r\nnext\nff\x0c"),  # CR LF FF kept
    ("Grão Café ºC".encode("latin-1"), "Grão Café ºC".encode("latin-1")),  # latin-1 kept
]


@pytest.mark.parametrize(("data", "expected"), ESCPOS_CASES)
def test_strip_escpos_whole_bytewise_and_with_trailing_bytes(data: bytes, expected: bytes) -> None:
    assert strip_escpos(data) == expected
    assert strip_chunked(data, [bytes([b]) for b in data]) == expected
    assert strip_escpos(data + b"tail\r\n") == expected + b"tail\r\n"


def test_escpos_init_becomes_a_marker_only_when_asked() -> None:
    data = b"\x0c\x1b@GEHAKA\r\n\x1dVB\x00\x0c"
    assert strip_chunked(data, [data], mark_init=True) == b"\x0c\x1bGEHAKA\r\n\x0c"
    assert strip_chunked(data, [data], mark_init=False) == b"\x0cGEHAKA\r\n\x0c"


def test_escpos_reset_forgets_an_open_command() -> None:
    stripper = EscPosStripper()
    assert stripper.feed(b"a\x1bd") == b"a"
    stripper.reset()
    assert stripper.feed(b"\x05b") == b"b"  # \x05 would have been the feed count
    assert stripper.feed(b"c\x1d") == b"c"
    stripper.reset()
    assert stripper.feed(b"Vd") == b"Vd"


@settings(max_examples=200)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300)))
def test_escpos_chunking_never_changes_the_output(data: bytes, cuts: list[int]) -> None:
    expected = strip_escpos(data)
    assert strip_chunked(data, pieces(data, cuts)) == expected
    assert not any(b < 0x20 and b not in b"\t\r\n\x0c" for b in expected)


# -- lines -----------------------------------------------------------------------

# (ending, input, completed lines, partial line left)
LINE_CASES: list[tuple[LineEnding, bytes, list[bytes], bytes]] = [
    ("auto", b"a\r\nb\nc\rd", [b"a\r\n", b"b\n", b"c\r"], b"d"),
    ("auto", b"a\r\r\n\n", [b"a\r", b"\r\n", b"\n"], b""),
    ("auto", b"a\r", [], b"a\r"),  # held: an LF may follow
    ("cr", b"a\r\nb\rc", [b"a\r", b"\nb\r"], b"c"),
    ("lf", b"a\r\nb\rc\n", [b"a\r\n", b"b\rc\n"], b""),
    ("crlf", b"a\rb\nc\r\nd\r", [b"a\rb\nc\r\n"], b"d\r"),
    ("crlf", b"a\r\r\n", [b"a\r\r\n"], b""),
]


@pytest.mark.parametrize(("ending", "data", "lines", "partial"), LINE_CASES)
def test_line_splitter_whole_and_bytewise(
    ending: LineEnding, data: bytes, lines: list[bytes], partial: bytes
) -> None:
    for chunks in ([data], [bytes([b]) for b in data]):
        splitter = LineSplitter(ending)
        got = [line for chunk in chunks for line in splitter.feed(chunk)]
        assert got == lines
        assert splitter.partial == partial
        assert splitter.pending == len(partial)


def test_line_splitter_wraps_long_lines_like_a_printer() -> None:
    splitter = LineSplitter("auto", max_line=4)
    assert splitter.feed(b"abcd") == []  # exactly full: wraps only when more comes
    assert splitter.feed(b"efghij\r") == [b"abcd", b"efgh"]
    assert splitter.partial == b"ij\r"
    assert splitter.feed(b"\n") == [b"ij\r\n"]
    assert splitter.feed(b"wxyz\r\n") == [b"wxyz", b"\r\n"]  # even a CR waits for room


def test_line_splitter_flush_and_reset() -> None:
    splitter = LineSplitter()
    assert splitter.flush() == []
    splitter.feed(b"abc\r")
    assert splitter.flush() == [b"abc\r"]
    assert splitter.feed(b"\nx") == [b"\n"]  # the held CR was flushed, so this LF is a line
    splitter.reset()
    assert splitter.pending == 0
    assert splitter.feed(b"y\n") == [b"y\n"]


@settings(max_examples=200)
@given(
    st.sampled_from(["auto", "cr", "lf", "crlf"]),
    st.binary(max_size=200).map(lambda b: b.translate(bytes.maketrans(b"\x00\x01", b"\r\n"))),
    st.lists(st.integers(0, 200)),
    st.integers(1, 8),
)
def test_line_splitter_is_lossless_bounded_and_chunking_free(
    ending: LineEnding, data: bytes, cuts: list[int], max_line: int
) -> None:
    def split(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
        splitter = LineSplitter(ending, max_line=max_line)
        lines = [line for chunk in chunks for line in splitter.feed(chunk)]
        assert splitter.pending <= max_line
        return lines, splitter.partial

    lines, partial = split([data])
    assert b"".join(lines) + partial == data
    assert all(len(line.translate(None, b"\r\n")) <= max_line for line in lines)
    assert split(pieces(data, cuts)) == (lines, partial)


def test_line_reader_drops_long_lines_once_and_resyncs_at_the_line_end() -> None:
    reader = LineReader("auto", max_line=4)
    assert reader.feed(b"ab\r\n \r\nabcdefghij") == [
        b"ab",  # CR and LF taken out; the blank line is skipped
        Discarded(data=b"abcd", reason="too-long"),  # once, not per wrap
    ]
    assert reader.pending == 2
    assert reader.feed(b"\r\nok\n") == [b"ok"]  # the rest of the long line is skipped


def test_line_reader_flush_ends_a_line_at_a_silence() -> None:
    reader = LineReader("auto", max_line=8)
    assert reader.flush() == []
    assert reader.feed(b"a\rb") == [b"a"]
    assert reader.flush() == [Discarded(data=b"b", reason="truncated")]
    assert reader.feed(b"c\r") == []  # held: an LF may follow
    assert reader.flush() == [b"c"]
    assert reader.feed(b" \r") == []
    assert reader.flush() == []  # a blank line
    assert reader.feed(b"123456789") == [Discarded(data=b"12345678", reason="too-long")]
    assert reader.flush() == []  # the rest of a long line is not "truncated"
    assert reader.feed(b"123456789\r") == [Discarded(data=b"12345678", reason="too-long")]
    assert reader.flush() == []  # nor is it a line when its CR is held
    assert reader.feed(b"d\n") == [b"d"]


def test_idle_gap() -> None:
    with pytest.raises(DriverUsageError):
        IdleGap(-1.0)
    with pytest.raises(DriverUsageError):
        IdleGap(float("nan"))
    gap = IdleGap(0.5)
    assert gap.deadline(holding=True) is None  # no bytes yet
    gap.received(10.0)
    assert gap.deadline(holding=False) is None
    assert gap.deadline(holding=True) == 10.5
    assert not gap.ended(10.4, holding=True)
    assert gap.ended(10.5, holding=True)
    assert not gap.ended(99.0, holding=False)


def test_stray_bytes_are_counted_whole_and_kept_up_to_the_limit() -> None:
    stray = StrayBytes(3)
    assert stray.take() is None
    stray.extend(b"")
    assert stray.take() is None  # an empty chunk starts no run
    stray.extend(b"ab")
    stray.append(0x63)
    stray.append(0x64)
    stray.extend(b"ef")
    assert stray.held == 3
    assert stray.take() == b"abc"
    assert (stray.held, stray.take()) == (0, None)
    stray = StrayBytes(0)
    stray.append(0x61)
    assert stray.take() == b""  # nothing kept, but a run was seen
    stray.extend(b"x")
    stray.clear()
    assert stray.take() is None


def test_event_queue_counts_caps_and_drains() -> None:
    queue: EventQueue[str] = EventQueue(max_discarded=2)
    stray = StrayBytes(8)
    queue._flush_stray(stray, "outside-frame")  # no run: no event
    stray.extend(b"xyz")
    queue._flush_stray(stray, "outside-frame")
    queue._discard(b"abc", "bad")
    assert queue.events() == [
        Discarded(data=b"xy", reason="outside-frame"),
        Discarded(data=b"ab", reason="bad"),
    ]
    assert queue.events() == []
    assert (queue.frames_ok, queue.frames_discarded) == (0, 2)


# -- numbers, noise, caps ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("11,8", 11.8),
        ("11.8", 11.8),
        (" -3,25 ", -3.25),
        ("+7", 7.0),
        ("0", 0.0),
        ("1.234,5", None),  # thousands separators are ambiguous: refused
        ("12,", None),
        (",5", None),
        ("", None),
        ("abc", None),
        ("١٢", None),  # non-ASCII digits
        ("9" * 400, None),  # overflows to infinity
    ],
)
def test_parse_decimal(text: str, value: float | None) -> None:
    assert parse_decimal(text) == value


@pytest.mark.parametrize(
    ("line", "suspect"),
    [
        (b"", False),
        (b"Umidade:  11,8 %", False),
        ("Grão: Café arábica".encode("latin-1"), False),
        ("Temperatura: 23,5 ºC".encode("latin-1"), False),
        (b"012345678\x7f", False),  # 1 in 10: exactly 10 %, not more
        (b"01234567\x7f", True),  # 1 in 9
        (b"\xff\xff\xff\xff", True),  # 0xFF bursts
        (bytes(range(0x80, 0xA0)), True),  # C1 codes
        (b"\x92\xe3\xb1\x8a umid", True),
    ],
)
def test_looks_misframed(line: bytes, suspect: bool) -> None:
    assert looks_misframed(line) is suspect


def test_text_bytes_cover_portuguese_and_exclude_noise() -> None:
    assert set("áàâãçéêíóôõúüÁÀÂÃÇÉÊÍÓÔÕÚºª°".encode("latin-1")) <= set(TEXT_BYTES)
    assert not {0x00, 0x7F, 0x80, 0x9F, 0xD7, 0xF7, 0xFF} & set(TEXT_BYTES)


def test_cap() -> None:
    assert cap(b"abcdef", 3) == b"abc"
    assert cap(bytearray(b"ab"), 10) == b"ab"
    assert cap(b"abc", -1) == b""
