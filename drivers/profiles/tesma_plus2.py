"""Tesma Plus2 / Plus2 Printer grain moisture meter: profile ``tesma-plus2``.

Source: Tesma, *Humedímetro Plus2 Printer — Manual de Instrucciones*, §5 "Comunicación
con una PC", p. 32, https://manualslib.mx/manual/59471/Tesma-Plus2-Printer.html?page=32
(device-protocols.md §1.2, DOC).

What the manual says: RS-232C, 9600 baud, no parity, 8 data bits, 1 stop bit (9600,
N, 8, 1); while on, the meter sends a fixed 18-character string once a second, unasked:
``<STX>``, the grain name in 8 characters, ``<CR><LF>``, the moisture as two digits,
``.``, one digit, ``<CR><LF>``, ``<ETX>``; its own example is
``02 4D 41 49 5A 20 20 20 20 0D 0A 31 34 2E 34 0D 0A 03`` (MAIZ, 14.4 %). The PC output
works only with the ticket printer module disabled. Driver: ``moisture.tesma``.
"""

from __future__ import annotations

import re

from coffee_telemetry.drivers.profiles._profile import Profile

PROFILE = Profile(
    name="tesma-plus2",
    driver="moisture.tesma",
    title="Tesma Plus2 / Plus2 Printer (humedímetro)",
    source=(
        "Tesma Plus2 Printer, Manual de Instrucciones, §5 'Comunicación con una PC', p. 32,"
        " https://manualslib.mx/manual/59471/Tesma-Plus2-Printer.html?page=32"
    ),
    evidence="manual",
    defaults={"serial": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}},
    signature=re.compile(rb"\x02[^\x00-\x1f]{8}\r\n\d\d\.\d\r\n\x03"),
)
