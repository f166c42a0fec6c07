r"""Bytes shown to a person: control codes by name, so a ticket's framing can be seen.

``visible(b"\x1b@G650\r\n\x0c")`` is ``<ESC>@G650<CR><LF><FF>``: ESC/POS commands,
STX/ETX frames, form feeds and line ends all show, and nothing in the output can move
a terminal's cursor or change its colours (a meter at the wrong baud rate prints
anything). Bytes 0x80-0xFF are latin-1 letters where they are letters (``Grão``), or
``<E3>`` in the ASCII form a capture file keeps.
"""

from __future__ import annotations

__all__ = ["CONTROL_NAMES", "visible", "visible_lines"]

#: Names of the C0 control codes and DEL.
_C0 = "NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI"
_C0 += " DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN EM SUB ESC FS GS RS US"
CONTROL_NAMES: dict[int, str] = dict(enumerate(_C0.split()))
CONTROL_NAMES[0x7F] = "DEL"

_LETTERS = frozenset(range(0xC0, 0x100)) - {0xD7, 0xF7} | {0xAA, 0xB0, 0xBA}


def _one(byte: int, ascii_only: bool) -> str:
    if 0x20 <= byte < 0x7F:
        return chr(byte)
    name = CONTROL_NAMES.get(byte)
    if name is not None:
        return f"<{name}>"
    if not ascii_only and byte in _LETTERS:
        return chr(byte)
    return f"<{byte:02X}>"


_TABLES = {flag: [_one(b, flag) for b in range(256)] for flag in (True, False)}


def visible(data: bytes, *, ascii_only: bool = True) -> str:
    """The bytes as one line of text with every control code named."""
    table = _TABLES[ascii_only]
    return "".join(table[b] for b in data)


def visible_lines(data: bytes, *, ascii_only: bool = False) -> list[str]:
    """``visible`` cut into lines after each LF, FF, or CR not followed by LF.

    The last element is the unfinished rest (empty when ``data`` ends a line).
    """
    lines: list[str] = []
    start = 0
    for i, byte in enumerate(data):
        ends = byte in (0x0A, 0x0C) or (byte == 0x0D and data[i + 1 : i + 2] != b"\n")
        if ends:
            lines.append(visible(data[start : i + 1], ascii_only=ascii_only))
            start = i + 1
    lines.append(visible(data[start:], ascii_only=ascii_only))
    return lines
