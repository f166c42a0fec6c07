"""Lot codes: what a valid one looks like.

Lot codes reach us from printed tickets, from operators (MQTT commands, the
CLI, the dashboard) and end up in MQTT payloads, InfluxDB tags and web pages.
One rule for all of them: 1 to 32 characters, letters and digits, and ``-``,
``_``, ``.``, ``/`` inside. No spaces, no quotes, no control characters, so a
lot code can never break out of a tag, a topic or a page.
"""

from __future__ import annotations

import re

from agent.errors import TelemetryError

LOT_MAX_LEN = 32
_LOT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,30}[A-Za-z0-9])?")


class LotError(TelemetryError, ValueError):
    """A lot code was refused; the message says why (shown to the operator)."""


def validate_lot(code: str) -> str:
    """Return ``code`` stripped of surrounding spaces if it is a valid lot code.

    Raises:
        LotError: Empty, too long, or with characters that are not allowed.
    """
    stripped = code.strip()
    if not stripped:
        raise LotError("lot code is empty")
    if len(stripped) > LOT_MAX_LEN:
        raise LotError(f"lot code is longer than {LOT_MAX_LEN} characters")
    if not _LOT.fullmatch(stripped):
        raise LotError(
            "lot code may only use letters, digits and - _ . / (not at the start or end)"
        )
    return stripped
