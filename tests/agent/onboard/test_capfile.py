"""The capture file format: written line by line, read strictly, cut files kept."""

from __future__ import annotations

import io
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.onboard.capfile import (
    MAGIC,
    CaptureFormatError,
    CaptureWriter,
    parse_capture,
    read_capture,
)
from coffee_telemetry.agent.onboard.lineformat import LineSettings, SettingsError
from coffee_telemetry.agent.onboard.visible import visible, visible_lines
from tests.agent.onboard.helpers import STARTED, capture_text

TICKET = b"\x1b@GEHAKA G650\r\nUmidade:  11,8 %\r\n\x1dVB\x00\x0c"


def write(chunks: list[tuple[float, bytes]], *, end: bool = True) -> str:
    out = io.StringIO()
    writer = CaptureWriter(out, port="/dev/ttyUSB0", started=STARTED)
    writer.listen(LineSettings(4800))
    writer.chunk(0.5, b"\x00\xf8garbage")
    writer.decide(LineSettings(9600), confidence=0.93, detected="texto limpo, 212 bytes")
    writer.listen(LineSettings(9600))
    for t_s, data in chunks:
        writer.chunk(t_s, data)
    if end:
        writer.close("stopped")
    return out.getvalue()


def test_round_trip_keeps_chunks_times_and_settings() -> None:
    text = write([(1.0, TICKET), (4.25, TICKET * 3)])
    capture = parse_capture(text.encode())
    assert capture.port == "/dev/ttyUSB0"
    assert capture.started == "2025-05-12T14:03:00.000Z"
    assert capture.serial == LineSettings(9600)
    assert capture.confidence == 0.93
    assert capture.complete
    assert capture.end_reason == "stopped"
    assert not capture.warnings
    assert [(c.t_s, c.data) for c in capture.recording()] == [(1.0, TICKET), (4.25, TICKET * 3)]
    detection = [c for c in capture.chunks if not c.recording]
    assert [(c.listen, c.data) for c in detection] == [(LineSettings(4800), b"\x00\xf8garbage")]


def test_file_is_ascii_with_short_lines_for_e_mail() -> None:
    text = write([(1.0, bytes(range(256)) * 3)])
    assert text.isascii()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.startswith(MAGIC + "\n")
    assert "#| <ESC>@GEHAKA" in write([(1.0, TICKET)])


@given(
    chunks=st.lists(
        st.tuples(st.floats(1, 1e5, allow_nan=False), st.binary(min_size=1, max_size=200)),
        max_size=20,
    )
)
def test_any_chunks_read_back_exactly(chunks: list[tuple[float, bytes]]) -> None:
    chunks = sorted(chunks, key=lambda c: c[0])
    capture = parse_capture(write(chunks).encode())
    assert [c.data for c in capture.recording()] == [d for _, d in chunks]
    assert [c.t_s for c in capture.recording()] == [float(f"{t:.6f}") for t, _ in chunks]


def test_cut_short_file_is_kept_with_a_warning() -> None:
    text = write([(1.0, TICKET), (2.0, TICKET)], end=False)
    capture = parse_capture(text.encode())
    assert not capture.complete
    assert [c.data for c in capture.recording()] == [TICKET, TICKET]
    assert any("cut short" in w for w in capture.warnings)
    # Power lost in the middle of a line: the half line is dropped, the rest kept.
    cut = text.encode()[:-7]
    capture = parse_capture(cut)
    assert any("last line" in w for w in capture.warnings)
    assert capture.recording()[0].data == TICKET


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("1b40", "1b41", 1), "edited or damaged"),
        (lambda t: t.replace("1.000000 <", "0.100000 <", 1), "time goes backwards"),
        (lambda t: t.replace("1.000000 < 1b40", "1.000000 < 1b4", 1), "not a capture line"),
        (lambda t: t.replace("listen: 9600 8N1", "listen: 9601 8N1", 1), "baud rate 9601"),
        (lambda t: t.replace("confidence: 0.93", "confidence: 7", 1), "not 0..1"),
        (lambda t: t + "0.1 < 00\n", "after the end line"),
        (lambda t: t.replace("listen: 4800 8N1\n", "", 1), "before any 'listen:'"),
        (lambda t: t.replace("\n+ ", "\nx ", 1), "not a capture line"),
        (lambda t: "hello\n" + t, "not a coffee-telemetry capture"),
        (lambda t: t.replace(MAGIC, "coffee-telemetry capture 9"), "format '9'"),
        (lambda t: t.replace("Umidade", "Umidad\u00e9"), "not ASCII"),
    ],
)
def test_damaged_files_are_refused_with_the_line(edit: object, message: str) -> None:
    text = write([(1.0, TICKET + TICKET)])
    assert callable(edit)
    with pytest.raises(CaptureFormatError, match=message):
        parse_capture(edit(text).encode("utf-8"))


def test_a_trimmed_capture_without_end_line_reads() -> None:
    # The refusal of an edited file says how to keep part of a capture: drop the end.
    lines = write([(1.0, TICKET), (2.0, TICKET)]).splitlines(keepends=True)
    trimmed = "".join(lines[:-1])
    assert len(parse_capture(trimmed.encode()).recording()) == 2


def test_end_line_counts_both_directions() -> None:
    out = io.StringIO()
    writer = CaptureWriter(out, port="p", started=STARTED)
    writer.listen(LineSettings())
    writer.decide(LineSettings())
    writer.chunk(0.1, b"SIR\r\n", sent=True)
    writer.chunk(0.2, b"S S      1.00 kg\r\n")
    writer.close("duration")
    writer.close("stopped")  # once only
    crc = zlib.crc32(b"S S      1.00 kg\r\n", zlib.crc32(b"SIR\r\n"))
    assert out.getvalue().endswith(f"end: chunks 2, bytes 23, crc32 {crc:08x}, reason duration\n")
    capture = parse_capture(out.getvalue().encode())
    assert [c.data for c in capture.recording()] == [b"S S      1.00 kg\r\n"]
    assert capture.chunks[0].sent


def test_seven_bit_meter_heard_at_8n1_loses_its_parity_bit() -> None:
    out = io.StringIO()
    writer = CaptureWriter(out, port="p", started=STARTED)
    writer.listen(LineSettings(9600))
    writer.decide(LineSettings(9600, 7, "E", 1), heard=LineSettings(9600))
    writer.chunk(0.1, bytes([0xD5, 0x6D]))  # "Um" with even parity in bit 7
    writer.close("stopped")
    capture = parse_capture(out.getvalue().encode())
    assert capture.heard == LineSettings(9600)
    assert capture.recorded_bytes() == b"Um"


def test_eight_bit_parity_heard_at_8n1_is_flagged_lossy() -> None:
    out = io.StringIO()
    writer = CaptureWriter(out, port="p", started=STARTED)
    writer.listen(LineSettings(9600))
    writer.decide(LineSettings(9600, 8, "E", 1))
    writer.chunk(0.1, b"\x00@\x00E")
    writer.close("stopped")
    assert any("were lost" in w for w in parse_capture(out.getvalue().encode()).warnings)


def test_unknown_keys_are_kept_as_warnings() -> None:
    text = write([(1.0, TICKET)]).replace("port:", "operator: ana\nport:", 1)
    assert parse_capture(text.encode()).warnings == ("line 2: unknown key 'operator' ignored",)


def test_read_capture_names_missing_and_huge_files(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    with pytest.raises(CaptureFormatError, match="cannot read"):
        read_capture(tmp_path / "nope.txt")
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(CaptureFormatError, match="empty file"):
        read_capture(path)


@settings(max_examples=300)
@given(junk=st.binary(max_size=400))
def test_binary_junk_is_refused_clearly(junk: bytes) -> None:
    try:
        parse_capture(junk)
    except CaptureFormatError as exc:
        problem = str(exc)
    else:
        return
    assert problem.startswith("<capture>")


@settings(max_examples=300)
@given(data=st.data())
def test_edited_captures_never_escape_but_as_a_refusal(data: st.DataObject) -> None:
    text = capture_text([TICKET, TICKET], seed=2).encode()
    position = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.binary(max_size=4))
    edited = text[:position] + replacement + text[position + 1 :]
    try:
        capture = parse_capture(edited)
    except CaptureFormatError:
        return
    assert sum(len(c.data) for c in capture.chunks) <= len(edited)


def test_settings_short_form() -> None:
    assert str(LineSettings.parse("4800,7e1")) == "4800 7E1"
    assert LineSettings.parse("115200 8O2") == LineSettings(115200, 8, "O", 2)
    for bad in ("9600", "9600 9N1", "300 8N1", "fast"):
        with pytest.raises(SettingsError):
            LineSettings.parse(bad)


def test_visible_names_control_codes() -> None:
    assert (
        visible(b"\x02MAIZ\r\n\x03\x1b@\x0c\xe3\xff") == "<STX>MAIZ<CR><LF><ETX><ESC>@<FF><E3><FF>"
    )
    assert visible(b"Gr\xe3o", ascii_only=False) == "Grão"
    assert visible_lines(b"a\r\nb\rc\x0cd") == ["a<CR><LF>", "b<CR>", "c<FF>", "d"]
