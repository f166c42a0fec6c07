"""What a meter profile is, and how one is laid under a ``[[devices]]`` table.

A profile is data: the driver a model needs, the serial settings its manual gives, and
the driver options (framing, field patterns) that read its output, each as the keys a
site file would hold. It is laid *under* the device's own table, so a key written in
the site file always wins: ``merge(profile.defaults, explicit)``, table by table (a
list such as ``ticket.fields`` is replaced whole, never spliced).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

#: A profile name: lowercase words joined by ``-`` (``tesma-plus2``).
NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

Evidence = Literal["manual", "inferred"]


@dataclass(frozen=True, slots=True)
class Profile:
    """One named meter profile.

    Attributes:
        name: What ``profile = "..."`` in ``[[devices]]`` says.
        driver: The driver that reads this output.
        title: The models, in one line.
        source: The manual (title, section, URL) the format comes from.
        evidence: ``manual`` when a manual gives the bytes; ``inferred`` when no manual
            does and the layout is the project's documented inference (§6 A2).
        defaults: Keys of a ``[[devices]]`` table besides ``driver``: ``serial`` and
            the driver's own table, as a site file would hold them.
        signature: A byte pattern one frame of this output matches (bit 7 cleared);
            tells apart profiles of one driver when a capture fits several.
    """

    name: str
    driver: str
    title: str
    source: str
    evidence: Evidence
    defaults: Mapping[str, object]
    signature: re.Pattern[bytes]

    def __post_init__(self) -> None:
        if not NAME.match(self.name):  # pragma: no cover - a can't-happen in the table
            raise ValueError(f"bad profile name {self.name!r}")

    def device_table(self) -> dict[str, object]:
        """``driver`` and the defaults, as a fresh TOML-shaped table."""
        return merge({"driver": self.driver}, self.defaults)

    def seen_in(self, data: bytes) -> bool:
        """Whether ``data`` holds a frame of this output (bit 7, parity on 7E1, ignored)."""
        return self.signature.search(data.translate(_SEVEN_BITS)) is not None


_SEVEN_BITS = bytes(b & 0x7F for b in range(256))


def _copy(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def merge(defaults: Mapping[str, object], explicit: Mapping[str, object]) -> dict[str, object]:
    """``explicit`` laid over ``defaults``: tables merge key by key, the rest is replaced."""
    out: dict[str, object] = {str(k): _copy(v) for k, v in defaults.items()}
    for key, value in explicit.items():
        below = out.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            out[key] = merge(below, value)
        else:
            out[key] = _copy(value)
    return out
