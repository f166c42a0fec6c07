"""A&D balances, A&D standard format: profile ``ad-balance``.

Sources: A&D EK-L series instruction manual, §9-2 "Data format",
http://88.208.23.73:8080/en/manual/aandd/ek-l-series/3176573?page=30 ; A&D GX-A/GF-A
series communication manual, p. 18 (A&D standard format and its CSV variant),
https://www.easymanua.ls/aandd/gf-2002a/manual/1040720?p=18 (device-protocols.md §2.4,
DOC).

Line: a 2-character header (``ST`` stable, ``US`` unstable, ``QT`` count, ``OL``
overload), ``,``, the sign and 8 characters of zero-filled number, the unit
right-aligned in 3 characters, ``<CR><LF>``: ``ST,+00123.45  g``. The baud rate and
parity are chosen in the balance's function table, which these pages do not fix, so
this profile sets none. Driver: ``scale.ascii``.
"""

from __future__ import annotations

import re

from coffee_telemetry.drivers.profiles._profile import Profile

PROFILE = Profile(
    name="ad-balance",
    driver="scale.ascii",
    title="A&D balanças, formato padrão A&D (EK-L, GX-A, GF-A)",
    source=(
        "A&D EK-L manual §9-2,"
        " http://88.208.23.73:8080/en/manual/aandd/ek-l-series/3176573?page=30;"
        " A&D GX-A/GF-A communication manual p. 18,"
        " https://www.easymanua.ls/aandd/gf-2002a/manual/1040720?p=18"
    ),
    evidence="manual",
    defaults={},
    signature=re.compile(rb"(?m)^(?:ST|US|QT|OL),[+-][0-9. ]{8}[ a-zA-Z%]{3}\r?$"),
)
