"""Mettler Toledo "Toledo continuous" output and its clones: profile ``toledo-continuous``.

Sources: Mettler Toledo Wildcat technical manual, appendix 2, tables 6-8 to 6-11
(continuous output, status words A, B and C),
http://38.142.81.21:8001/manual/wildcat-territory/scale-e15609900a/user-s-manual-english/page-40.html
and page-41; Rockwell Automation 1771 Toledo scale interface module user guide,
appendix D,
http://38.142.81.21:8001/manual/rockwell-automation/57c428-toledo-scale-interface-module/user-guide-english/page-37.html
; IND445 manual, https://www.manualshelf.com/manual/mettler-toledo/ics425a/user-manual-english/page-50.html
(device-protocols.md §2.2, DOC). The same frame is documented for Cardinal 225,
Rice Lake 680 and Fairbanks FB2550 indicators.

Frame: ``<STX> SWA SWB SWC`` six weight digits, six tare digits (absent in the short
form), ``<CR>``, optional checksum; sent at the display rate. The manuals leave the
baud rate and parity to the indicator's menu, so this profile sets none (the agent's
9600 8N1 applies unless the device block says otherwise); the checksum is detected
(``auto``). Driver: ``scale.toledo_continuous``.
"""

from __future__ import annotations

import re

from coffee_telemetry.drivers.profiles._profile import Profile

PROFILE = Profile(
    name="toledo-continuous",
    driver="scale.toledo_continuous",
    title=(
        "Mettler Toledo saída contínua (Wildcat, IND445; Cardinal 225, Rice Lake 680,"
        " Fairbanks FB2550)"
    ),
    source=(
        "Mettler Toledo Wildcat technical manual, app. 2, tables 6-8 to 6-11,"
        " http://38.142.81.21:8001/manual/wildcat-territory/scale-e15609900a/user-s-manual-english/page-40.html;"
        " Rockwell 1771 Toledo interface guide, app. D,"
        " http://38.142.81.21:8001/manual/rockwell-automation/57c428-toledo-scale-interface-module/user-guide-english/page-37.html"
    ),
    evidence="manual",
    defaults={"toledo": {"checksum": "auto"}},
    signature=re.compile(rb"\x02[\x20-\x3f][\x20-\x7f][\x20-\x7f][ 0-9]{6}(?:[ 0-9]{6})?\r"),
)
