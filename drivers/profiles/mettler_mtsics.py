"""Mettler Toledo balances and indicators on MT-SICS: profile ``mettler-mtsics``.

Sources: Mettler Toledo, *MT-SICS Reference Manual* 11780711 (Standard Interface
Command Set, levels 0 and 1: commands ``S``, ``SI``, ``SIR``, reply
``ID status weight unit`` and the status letters),
https://dokumen.tips/documents/reference-manual-standard-interface-command-set-mt-sics-reference-manual.html
(mirror); factory interface settings (9600 baud, 8 bits no parity, 1 stop bit, Xon/Xoff
handshake, end of line CR LF) from the AT balances' operating instructions,
https://www.manualshelf.com/manual/mettler-toledo/at-balances/4-operating-instructions-english/page-23.html
(device-protocols.md §2.1, DOC + CODE).

The balance answers what the host asks; ``SIR`` makes it stream ``S S     100.00 g``
lines until the next command. Every setting here is the factory one and can be changed
in the balance's menu. Driver: ``scale.mtsics``.
"""

from __future__ import annotations

import re

from coffee_telemetry.drivers.profiles._profile import Profile

PROFILE = Profile(
    name="mettler-mtsics",
    driver="scale.mtsics",
    title="Mettler Toledo MT-SICS (balanças e indicadores)",
    source=(
        "MT-SICS Reference Manual 11780711,"
        " https://dokumen.tips/documents/reference-manual-standard-interface-command-set-mt-sics-reference-manual.html;"
        " factory settings: AT balances operating instructions p. 23,"
        " https://www.manualshelf.com/manual/mettler-toledo/at-balances/4-operating-instructions-english/page-23.html"
    ),
    evidence="manual",
    defaults={
        "serial": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1, "xonxoff": True},
        "mtsics": {"line_ending": "crlf"},
    },
    signature=re.compile(rb"(?m)^S [SD+-](?: +-?\d+(?:\.\d+)? \S{1,3})?\r?$"),
)
