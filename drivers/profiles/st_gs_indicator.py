"""Weighing indicators printing ``ST,GS,+  1.250kg`` lines: profile ``st-gs-indicator``.

Sources (device-protocols.md §2.4 and §2.5, DOC): Tiger TI-02-P user manual, §7.1 "Auto
weight format string", https://www.easymanua.ls/tiger/ti-02-p/manual?p=21 ; Liden
LUW2001 user manual,
https://manualshive.com/en/manual/liden-weighing/luw2001-lbw/luw2001-lbw_user-manual_1907226-18.html
; Kern KFB-TM manual, https://www.easymanua.ls/kern/kfb-tm/manual?p=50 ; A&D AD-4404 and
AD-4325 indicator format (AD-4404 manual §9.2.6).

Line: status ``ST``/``US``/``OL`` (A&D also ``LO``), ``,``, ``GS`` gross or ``NT`` net
(A&D also ``TR``), ``,``, sign, the weight in 7 characters with its decimal point,
an optional ``,``, the unit (``kg``, ``lb``, ``g``, ``t``, ``oz``), ``<CR><LF>``. The
vendors differ only in the comma before the unit and the sign character, which the
driver's grammar accepts. Baud rate and parity are menu settings these manuals leave
to the installer, so this profile sets none. Driver: ``scale.ascii``.
"""

from __future__ import annotations

import re

from coffee_telemetry.drivers.profiles._profile import Profile

PROFILE = Profile(
    name="st-gs-indicator",
    driver="scale.ascii",
    title="Indicadores ST,GS (Tiger TI-02-P, Liden LUW2001, Kern KFB-TM, A&D AD-4404/AD-4325)",
    source=(
        "Tiger TI-02-P manual §7.1, https://www.easymanua.ls/tiger/ti-02-p/manual?p=21;"
        " Liden LUW2001 manual, https://manualshive.com/en/manual/liden-weighing/luw2001-lbw/"
        "luw2001-lbw_user-manual_1907226-18.html;"
        " Kern KFB-TM manual, https://www.easymanua.ls/kern/kfb-tm/manual?p=50"
    ),
    evidence="manual",
    defaults={},
    signature=re.compile(rb"(?m)^(?:ST|US|OL|LO),(?:GS|NT|TR),"),
)
