r"""Label/value pairs on a printed ticket line, and which reading field each label means.

A ticket line holds one pair (``Umidade:  11,8 %``), two (``Umid: 11,8%    Temp: 24,6C``),
a bare title (``GEHAKA G650``), a rule (``--------``) or nothing. ``cells`` cuts a line
into pairs: at runs of three or more spaces, but only when every piece has a separator
of its own (``:``, ``=`` or a dot leader), so that ``Umidade      11,8 %`` stays one pair
whose separator is the spaces. ``pair`` splits a cell at its separator and reads the
value: a number (decimal comma or point) with its unit, a date, a time, or text.

``field_for(label, value)`` maps a label to a field of the ``moisture`` measurement by
its words, in Portuguese, Spanish and English, after folding case and accents and
dropping punctuation (``P.H.`` is ``ph``, ``Nº Amostra`` is ``no amostra``). Rules
are tried in order, so ``Peso hectolitro`` is a density before ``Peso`` is a mass:

    bulk density   ph, pe, peso hectol*, hectol*, dens*, peso especifico, massa especifica,
                   test weight, bulk density, hl weight   -> bulk_density_kg_hl (g/l: _g_l)
    moisture       umid*, humed*, hum, moisture*, moist, mc, h2o  -> moisture_pct
    temperature    temp*                                 -> temperature_c (°F: temperature_f)
    mass           peso*, massa*, weight*, mass*, masa*  -> sample_mass_g (kg: sample_mass_kg)
    sample id      amostra*, muestra*, sample*, id, no, nro, numero, ticket -> sample_id
    product        produto, prod, grao, grano, grain, product, curva, curve, cultivo,
                   crop, especie, cereal                 -> product (a tag)
    lot            lote, lot, batch, partida             -> lot (a tag)
    date, time     data, fecha, date; hora, time, horario -> meter_time (or meter_date and
                   meter_clock when printed on two lines)

A label that matches no rule is *unexplained*: ``propose`` lists it rather than guess.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DATE",
    "NUMBER",
    "TIME",
    "Pair",
    "ValueKind",
    "cells",
    "field_for",
    "fold",
    "is_rule",
    "line_pairs",
    "pair",
]

ValueKind = Literal["number", "date", "time", "datetime", "text"]

#: A decimal number as tickets print it.
NUMBER = r"[-+]?\d+(?:[.,]\d+)?"
#: A date: day/month/year (or year-month-day).
DATE = r"\d{1,2}/\d{1,2}/\d{2,4}|\d{4}-\d{2}-\d{2}"
#: A time of day.
TIME = r"\d{1,2}:\d{2}(?::\d{2})?"

_UNIT = r"%|°\s?C|º\s?C|°\s?F|º\s?F|C|F|kg/hl|kg/hL|g/l|g/L|kg|g|lb"
_NUMBER_VALUE = re.compile(rf"({NUMBER})\s*({_UNIT})?(?![\w/])(.*)", re.IGNORECASE)
_DATETIME_VALUE = re.compile(rf"({DATE})\D{{0,20}}?({TIME})\b(.*)")
_DATE_VALUE = re.compile(rf"({DATE})(?!\d)(.*)")
_TIME_VALUE = re.compile(rf"({TIME})(?!\d)(.*)")
_SEPARATOR = re.compile(r"\s*(?:\.{2,}[\s.]*:?|[:=])\s*|\s{2,}|\s+(?=[-+]?\d)")
_HAS_SEPARATOR = re.compile(r"[:=]|\.{2,}")
_COLUMNS = re.compile(r"\s{3,}")
_LABEL_START = re.compile(r"[^\W\d_]")
_RULE = re.compile(r"[\s\-=*_~#.+]*")


@dataclass(frozen=True, slots=True)
class Pair:
    """One label and its value, as printed.

    Attributes:
        label: The label as printed (``Umid.``), without the separator.
        value: The value text as printed (``11,8 %``).
        kind: What the value is.
        number: The number (``kind == "number"``).
        unit: Its unit as printed (``%``, ``°C``, ``kg/hl``), or ``""``.
        column: 0 for the first cell of the line, 1 for the next...
        start: Where the label starts in the line.
        separator: What stood between label and value (``": "``, ``"....: "``).
    """

    label: str
    value: str
    kind: ValueKind
    number: float | None = None
    unit: str = ""
    column: int = 0
    start: int = 0
    separator: str = ""


def fold(label: str) -> str:
    """A label folded for matching: lowercase, no accents, no punctuation, single spaces.

    Dots between letters vanish (``P.H.`` -> ``ph``); other punctuation becomes space.
    """
    text = unicodedata.normalize("NFKD", label.replace("º", "o").replace("ª", "a"))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"(?<=\w)\.(?=\w)", "", text)
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(text.split())


def is_rule(line: str) -> bool:
    """A line of dashes, equals signs or stars (or blank): layout, not data."""
    return _RULE.fullmatch(line) is not None


def cells(line: str) -> list[tuple[int, str]]:
    """The cells of a line, each with its start column (see the module docstring)."""
    pieces: list[tuple[int, str]] = []
    start = len(line) - len(line.lstrip())
    for found in _COLUMNS.finditer(line, start):
        pieces.append((start, line[start : found.start()]))
        start = found.end()
    pieces.append((start, line[start:].rstrip()))
    pieces = [(at, text) for at, text in pieces if text]
    if len(pieces) > 1 and all(
        _HAS_SEPARATOR.search(text) and _LABEL_START.match(text) for _, text in pieces
    ):
        return pieces
    body = line.strip()
    return [(len(line) - len(line.lstrip()), body)] if body else []


def _value(text: str) -> tuple[ValueKind, float | None, str, str]:
    """Kind, number, unit and the rest of a value."""
    text = text.strip()
    if found := _DATETIME_VALUE.match(text):
        return "datetime", None, "", found.group(3)
    if found := _DATE_VALUE.match(text):
        return "date", None, "", found.group(2)
    if found := _TIME_VALUE.match(text):
        return "time", None, "", found.group(2)
    if found := _NUMBER_VALUE.fullmatch(text):
        rest = found.group(3).strip()
        if not rest or not re.search(r"\d", rest):
            number = float(found.group(1).replace(",", "."))
            return "number", number, (found.group(2) or "").replace(" ", ""), rest
    return "text", None, "", ""


def pair(cell: str, *, column: int = 0, start: int = 0) -> Pair | None:
    """Split a cell into label and value; ``None`` when it has no label or no value."""
    if not _LABEL_START.match(cell):
        return None
    for sep in _SEPARATOR.finditer(cell):
        if sep.start() == 0:
            continue
        label = cell[: sep.start()].rstrip(" .")
        value = cell[sep.end() :].strip()
        if not value or not label or not fold(label):
            continue
        if re.search(r"\d", label) and not re.fullmatch(r"[^\d]*\d?[^\d]*", label):
            continue  # a label with figures in it is a value seen too early
        kind, number, unit, _rest = _value(value)
        separator = cell[len(label) : sep.end()]
        return Pair(label, value, kind, number, unit, column, start, separator)
    return None


def line_pairs(line: str) -> list[Pair]:
    """Every label/value pair on a line."""
    out = []
    for column, (at, text) in enumerate(cells(line)):
        found = pair(text, column=column, start=at)
        if found is not None:
            out.append(found)
    return out


_MOISTURE = re.compile(r"^(?:umid\w*|humed\w*|hum|moist\w*|mc|h2o)$")
_MASS = re.compile(r"^(?:peso\w*|massa\w*|masa\w*|weight\w*|mass\w*)$")
_ID = re.compile(r"^(?:amostra\w*|muestra\w*|sample\w*|id|no|n|nro|numero|ticket)$")
_PRODUCT = frozenset(
    [
        "producto",
        "variedad",
        "variedade",
        "produto",
        "prod",
        "grao",
        "graos",
        "grano",
        "grain",
        "product",
        "curva",
        "curve",
        "cultivo",
        "crop",
        "especie",
        "cereal",
    ]
)
_LOT = frozenset({"lote", "lot", "batch", "partida"})
_DATE = frozenset({"data", "fecha", "date", "dia"})
_TIME = frozenset({"hora", "time", "horario", "hr"})


def _is_density(words: list[str]) -> bool:
    joined = " ".join(words)
    return (
        any(w in ("ph", "pe", "hl") or w.startswith(("dens", "hectol")) for w in words)
        or "peso especifico" in joined
        or "massa especifica" in joined
        or "test weight" in joined
        or "bulk density" in joined
    )


def field_for(label: str, kind: ValueKind, unit: str = "") -> str | None:
    """The reading field a label means (see the module docstring), or ``None``.

    Args:
        label: The label as printed.
        kind: The kind of its value (a number label needs a number, and so on).
        unit: The value's unit, which picks ``_g``/``_kg`` or ``°C``/``°F`` names.
    """
    words = fold(label).split()
    if not words:
        return None
    unit = unit.lower().replace("º", "°")
    if kind == "number":
        if _is_density(words):
            return "bulk_density_g_l" if unit == "g/l" else "bulk_density_kg_hl"
        if any(_MOISTURE.match(w) for w in words):
            return "moisture_pct"
        if any(w.startswith("temp") for w in words):
            return "temperature_f" if unit.endswith("f") else "temperature_c"
        if any(_MASS.match(w) for w in words):
            return {"kg": "sample_mass_kg", "lb": "sample_mass_lb"}.get(unit, "sample_mass_g")
    if kind in ("number", "text"):
        if any(w in _LOT for w in words):
            return "lot"
        if any(w in _PRODUCT for w in words):
            return "product" if kind == "text" else None
        if any(_ID.match(w) for w in words) and not any(_MASS.match(w) for w in words):
            return "sample_id"
    if kind in ("date", "datetime") and any(w in _DATE for w in words):
        return "meter_time" if kind == "datetime" else "meter_date"
    if kind == "time" and any(w in _TIME for w in words):
        return "meter_clock"
    return None
