"""A serial line between a meter and a port set differently, emulated bit by bit.

Linux pseudo-terminals accept any baud rate but refuse parity and 7 data bits
(device-protocols.md §5.3), and they carry bytes, not bits: a pty never garbles
anything. To test what a port hears when it is set wrong, ``UartPty`` does what the
wire and the receiving UART would do. Each ``write`` turns the meter's bytes into the
bits of its character format (``to_bits``), at the meter's baud rate; the receiving
UART samples them at the baud rate and format the pty is set to *now* (read back
from the master side, where the listener's ``tcsetattr`` shows), and ``receive``
delivers what the kernel's line discipline would:

- The receiver hunts for a falling edge (idle is high), checks the start bit at the
  middle of its first bit time, samples the data bits LSB first, the parity bit if it
  has one, and one stop bit, each at the middle of its own bit time.
- A stop bit read as 0 is a framing error (all bits 0: a break). Linux delivers such
  a character as NUL (``IGNPAR`` and ``PARMRK`` off, the default); a parity mismatch
  too, when ``INPCK`` is on, and is not checked otherwise.
- After a character it hunts again from the middle of the stop bit, so a framing
  error caused by a wrong baud rate cascades as it does on a real line.

Each write is a burst on an idle line: the receiver starts it hunting. Noise
(``bit_error_rate``) flips bits on the wire. When the pty is set exactly as the meter
sends and there is no noise, bytes pass unchanged.
"""

from __future__ import annotations

import math
import random
import termios
from dataclasses import dataclass
from typing import Literal

from coffee_telemetry.simulators.pty import PtyPort

__all__ = ["UartFormat", "UartPty", "pty_format", "receive", "to_bits"]

_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
}


@dataclass(frozen=True, slots=True)
class UartFormat:
    """Baud rate and character format of one end of the line.

    Attributes:
        baudrate: Bits per second.
        bytesize: Data bits (5..8).
        parity: ``N``, ``E`` or ``O``.
        stopbits: 1 or 2.
    """

    baudrate: int = 9600
    bytesize: int = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1

    @classmethod
    def parse(cls, text: str) -> UartFormat:
        """``9600 7E1`` as a format."""
        baud, fmt = text.split()
        parity: Literal["N", "E", "O"] = "E" if fmt[1] == "E" else "O" if fmt[1] == "O" else "N"
        return cls(int(baud), int(fmt[0]), parity, int(fmt[2]))


def _parity_bit(value: int, parity: str) -> int:
    ones = bin(value).count("1") & 1
    return ones if parity == "E" else ones ^ 1


def to_bits(data: bytes, fmt: UartFormat) -> bytearray:
    """The levels on the wire, one element per bit time, for ``data`` sent back to back.

    Two idle bit times lead, so the first start bit is an edge.
    """
    bits = bytearray(b"\x01\x01")
    mask = (1 << fmt.bytesize) - 1
    for byte in data:
        value = byte & mask
        bits.append(0)
        bits.extend((value >> k) & 1 for k in range(fmt.bytesize))
        if fmt.parity != "N":
            bits.append(_parity_bit(value, fmt.parity))
        bits.extend(b"\x01" * fmt.stopbits)
    return bits


def receive(
    bits: bytes | bytearray, *, sender_baud: int, rx: UartFormat, check_parity: bool = False
) -> bytes:
    """What a UART set to ``rx`` delivers for ``bits`` sent at ``sender_baud``.

    Characters with a framing error, a break, or (with ``check_parity``) a parity
    error come out as NUL, as Linux delivers them by default.
    """
    t_send = 1.0 / sender_baud
    t_recv = 1.0 / rx.baudrate
    size = len(bits)
    samples = 1 + rx.bytesize + (rx.parity != "N") + 1
    out = bytearray()

    def level(t: float) -> int:
        index = int(t / t_send)
        return bits[index] if index < size else 1

    t = 0.0
    while True:
        start = max(1, math.ceil(t / t_send - 1e-9))
        edge = bits.find(b"\x01\x00", start - 1)
        if edge < 0:
            return bytes(out)
        t_edge = (edge + 1) * t_send
        if level(t_edge + 0.5 * t_recv) != 0:
            t = t_edge + 0.5 * t_recv  # a glitch, not a start bit
            continue
        read = [level(t_edge + (k + 0.5) * t_recv) for k in range(1, samples)]
        value = sum(bit << k for k, bit in enumerate(read[: rx.bytesize]))
        stop = read[-1]
        bad = stop == 0
        if rx.parity != "N" and check_parity:
            bad = bad or read[rx.bytesize] != _parity_bit(value, rx.parity)
        out.append(0 if bad else value)
        t = t_edge + (samples - 0.5) * t_recv


def pty_format(master: int) -> tuple[UartFormat, bool]:
    """How the listener has set the pty: its format, and whether it checks parity (INPCK)."""
    iflag, _oflag, cflag, _lflag, ispeed, _ospeed, _cc = termios.tcgetattr(master)
    sizes = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}
    parity: Literal["N", "E", "O"] = "N"
    if cflag & termios.PARENB:
        parity = "O" if cflag & termios.PARODD else "E"
    fmt = UartFormat(
        baudrate=_SPEEDS.get(ispeed, 9600),
        bytesize=sizes.get(cflag & termios.CSIZE, 8),
        parity=parity,
        stopbits=2 if cflag & termios.CSTOPB else 1,
    )
    return fmt, bool(iflag & termios.INPCK)


class UartPty(PtyPort):
    """A ``PtyPort`` whose writes reach the listener as its UART settings make them.

    Args:
        device: How the meter sends (``UartFormat.parse("4800 7E1")``).
        bit_error_rate: Chance each bit on the wire is flipped.
        seed: Seed of the noise.
        link: As ``PtyPort``.

    Attributes:
        last_rx: The listener's format at the last write.
    """

    def __init__(
        self,
        device: UartFormat,
        *,
        bit_error_rate: float = 0.0,
        seed: int | None = None,
        link: str | None = None,
    ) -> None:
        super().__init__(link=link)
        self.device = device
        self.bit_error_rate = bit_error_rate
        self._rng = random.Random(seed)
        self.last_rx: UartFormat | None = None

    def heard(self, data: bytes) -> bytes:
        """What the listener, as it is set now, receives for ``data``."""
        master = self._master
        if master is None:
            return b""
        rx, check = pty_format(master)
        self.last_rx = rx
        if rx == self.device and self.bit_error_rate <= 0:
            return data
        bits = to_bits(data, self.device)
        if self.bit_error_rate > 0:
            rate, rng = self.bit_error_rate, self._rng
            for i in range(2, len(bits)):
                if rng.random() < rate:
                    bits[i] ^= 1
        return receive(bits, sender_baud=self.device.baudrate, rx=rx, check_parity=check)

    def write(self, data: bytes) -> int:
        """Send ``data`` as the meter would; returns ``len(data)`` if all of it went out."""
        out = self.heard(data)
        taken = super().write(out)
        return len(data) if taken == len(out) else min(taken, len(data) - 1)
