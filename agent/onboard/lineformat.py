"""Serial line settings as a technician writes them: ``9600 8N1``, ``4800 7E1``.

``LineSettings`` is the one value the onboarding tools pass around (what the port was
set to, what the meter sends, what goes into ``[devices.serial]``), with a parser and
a printer for the short form that capture files and messages use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["BAUDRATES", "FORMATS", "LineSettings", "Parity", "SettingsError"]

#: Baud rates a meter may use, most common first (the order detection tries them in);
#: the same set ``[devices.serial] baudrate`` accepts.
BAUDRATES: tuple[int, ...] = (9600, 19200, 4800, 2400, 1200, 38400, 57600, 115200)

Parity = Literal["N", "E", "O"]

#: Character formats detection can tell apart by listening (protocols §4.2).
FORMATS: tuple[str, ...] = ("8N1", "7E1", "7O1", "8E1", "8O1")

_SHORT = re.compile(r"\s*(\d{3,6})\s*[ ,/-]?\s*([78])([NEOneo])([12])\s*")


class SettingsError(ValueError):
    """A settings string that is not ``<baud> <bits><parity><stop>``."""


@dataclass(frozen=True, slots=True, order=True)
class LineSettings:
    """Baud rate and character format of a serial line.

    Attributes:
        baudrate: Bits per second.
        bytesize: Data bits, 7 or 8.
        parity: ``N`` none, ``E`` even, ``O`` odd.
        stopbits: 1 or 2.
    """

    baudrate: int = 9600
    bytesize: Literal[7, 8] = 8
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1

    @property
    def format(self) -> str:
        """The character format alone, e.g. ``7E1``."""
        return f"{self.bytesize}{self.parity}{self.stopbits}"

    def __str__(self) -> str:
        return f"{self.baudrate} {self.format}"

    def with_format(self, fmt: str) -> LineSettings:
        """The same baud rate with another character format (``8E1``)."""
        return LineSettings.parse(f"{self.baudrate} {fmt}")

    @property
    def char_bits(self) -> int:
        """Bits on the wire per character: start, data, parity, stop."""
        return 1 + self.bytesize + (self.parity != "N") + self.stopbits

    @classmethod
    def parse(cls, text: str) -> LineSettings:
        """Read ``9600 8N1`` (also ``9600,7E1`` or ``9600-8n1``).

        Raises:
            SettingsError: Not that shape, or a baud rate outside ``BAUDRATES``.
        """
        found = _SHORT.fullmatch(text)
        if found is None:
            raise SettingsError(f"{text!r}: expected <baud> <bits><parity><stop>, e.g. 9600 8N1")
        baud = int(found.group(1))
        if baud not in BAUDRATES:
            rates = ", ".join(str(b) for b in sorted(BAUDRATES))
            raise SettingsError(f"{text!r}: baud rate {baud} is not one of {rates}")
        bytesize: Literal[7, 8] = 7 if found.group(2) == "7" else 8
        stopbits: Literal[1, 2] = 2 if found.group(4) == "2" else 1
        parity: Parity
        match found.group(3).upper():
            case "E":
                parity = "E"
            case "O":
                parity = "O"
            case _:
                parity = "N"
        return cls(baud, bytesize, parity, stopbits)
