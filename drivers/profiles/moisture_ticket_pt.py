"""Printed moisture tickets with Portuguese labels: profile ``moisture-ticket-pt``.

Source: the ticket layout of device-protocols.md §6 A2, which ``moisture.ticket`` reads
by default (see ``drivers/moisture_ticket.py``): ``Umidade``, ``Temp.``, ``PH``,
``Peso amostra``, ``Produto``, ``Amostra``, ``Lote`` and a ``dd/mm/aaaa hh:mm`` line,
one label per line, a decimal comma or point, tickets ended by a form feed, ``ESC @``
or a pause. **INFERRED**: no manual of a moisture meter gives these bytes (the Gehaka
G650, G610i and G810 manuals list a "Protocolo da saída serial RS232C" chapter whose
pages are not public, §1.1), so this profile names no meter model. It is the driver's
own table written out, 9600 8N1 as §6 A2 assumes; confirm the labels with
``coffee-telemetry capture`` and ``propose`` on site, which name this profile only
when it reads the capture exactly as the labels learnt from it do.
"""

from __future__ import annotations

import re

from coffee_telemetry.drivers.moisture_ticket import DEFAULT_PATTERNS
from coffee_telemetry.drivers.profiles._profile import Profile

PROFILE = Profile(
    name="moisture-ticket-pt",
    driver="moisture.ticket",
    title="Tíquete de umidade com rótulos em português (layout inferido, sem modelo)",
    source="device-protocols.md §6 A2 (inferred; no public manual gives a meter's ticket bytes)",
    evidence="inferred",
    defaults={
        "serial": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1},
        "ticket": {
            "line_ending": "auto",
            "idle_gap_s": 2.0,
            "fields": [
                {"field": p.field, "regex": p.regex, "kind": p.kind} for p in DEFAULT_PATTERNS
            ],
        },
    },
    signature=re.compile(rb"(?im)^\s*umid(?:ade)?\b[\s.:=]*\d{1,2}[.,]\d"),
)
