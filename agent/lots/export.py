"""Exports of a lot's record: CSV for spreadsheets, a PDF report for buyers and certifiers.

Theory of operation
-------------------
Both read ``LotRecord`` values only (``agent.lots.model``); whoever calls them loads the
records.

**CSV** (``records_csv``): one row per moisture reading and per weighment of each lot,
in time order, with the lot's producer on every row and each reading's meter, method
and calibration (``agent.evidence.meter_report``). UTF-8 with a byte-order mark, so
Excel opens accents right; ``,`` between fields and ``.`` in numbers, or, with
``decimal_comma``, ``;`` and ``,`` as a Brazilian Excel expects. Fields are quoted
when they need it (separators, quotes, line breaks). A text field that a spreadsheet
could take for a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) gets a leading ``'``, as does one that starts with ``'`` itself, so
``read_csv`` takes exactly one ``'`` off and gets the original back. Numbers are never
prefixed. Times are given twice: in the site's time zone (what people read) and in
UTC (ISO 8601). Given the box's public key (``agent.evidence.identity``; the
``configured_*`` functions always pass it when the box has one), the file starts with
one ``#`` line before the header: the key (base64 of its raw 32 bytes) and its
fingerprint, the same that signs the box's lot packs; ``read_csv`` skips it.

**PDF** (``lot_report_pdf``, with fpdf2 and the DejaVu fonts): the site's name, the
lot's data and details, the moisture summary and verdict against the wet-lot
threshold, a chart of every device's readings drawn with vector lines (each device's
series thinned to the lowest and highest value per chart column, which draws the same
picture), the meters (each reading's meter, method and calibration, readings taken past their
calibration's due date flagged, cross-checks between meters, the oven reference and
each meter's bias) when the lot has meter evidence, the drying estimate when there is
one, the weighments and their total, the
timeline, and the generation time; every page's footer names the lot, the generation
time and, given one, the box's public key and fingerprint. Text from outside (producer
names, notes, device text) is wrapped, never cut; a character the font cannot draw, and
every invisible control or format character (right-to-left marks, overrides, zero-width joiners), is
shown as ``<U+XXXX>``, so nothing is dropped or reordered unseen.

**Checks.** ``record_sha256`` is the SHA-256 of the record's canonical serialisation
(``canonical_json``): the UTF-8 JSON of ``{"format": CANONICAL_FORMAT, "record": ...}``
where a dataclass is an object of its fields by name, fields at their default value
are left out (a field added later with a default keeps old hashes), tuples are arrays,
keys are sorted, separators are ``,`` and ``:`` with no spaces, non-ASCII is written as
is, and floats are Python's shortest round-trip form (``NaN``, ``Infinity`` and
``-Infinity`` as strings). The report prints it and carries it in its metadata
(Keywords: ``coffee-telemetry-lot-report lot=<code> data-sha256=<hex>``). After the
PDF's ``%%EOF`` one comment line is appended::

    %coffee-telemetry-lot-report v1 lot=<quoted code> data-sha256=<hex> file-sha256=<hex>

where ``file-sha256`` covers every byte before `` file-sha256=`` (the whole PDF and the
line's own lot and data hash). ``verify_report`` checks a copy with it: the file must
be byte for byte what was written (any edit breaks the file hash), and the lot's
record in the store must still hash to ``data-sha256``. The hashes are not a
signature: anyone can compute a SHA-256, so someone who edits a report on purpose and
recomputes the file hash is not caught. What ``verify`` shows is that a copy was not
changed since it was made, and that the box's record is still the one it was made
from; the box stays the authority (a fresh report from it is the reference).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Literal

from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.evidence.identity import BoxIdentity, box_identity
from coffee_telemetry.agent.evidence.meter_report import CSV_COLUMNS as METER_CSV_COLUMNS
from coffee_telemetry.agent.evidence.meter_report import PdfTools, pdf_section
from coffee_telemetry.agent.evidence.meter_report import csv_cells as meter_csv_cells
from coffee_telemetry.agent.lots.drying import DryingEstimate, describe, estimate_for_record
from coffee_telemetry.agent.lots.model import LotEvent, LotRecord
from coffee_telemetry.agent.lots.receipt import (
    RECEIPT_CSV_COLUMNS,
    receipt_csv_cells,
    receipt_pdf,
)

__all__ = [
    "CANONICAL_FORMAT",
    "Lang",
    "VerifyResult",
    "canonical_json",
    "configured_csv",
    "configured_report",
    "lot_report_pdf",
    "read_csv",
    "read_trailer",
    "record_sha256",
    "records_csv",
    "report_file_name",
    "verify_report",
]

#: The canonical serialisation's name and version (part of what is hashed).
CANONICAL_FORMAT = "coffee-telemetry/lot-record/1"
#: Report languages.
Lang = Literal["pt-BR", "en"]
#: Where the DejaVu fonts are on Debian (``fonts-dejavu-core``).
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
_TRAILER_TAG = b"%coffee-telemetry-lot-report v1 "
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


# -- canonical serialisation -------------------------------------------------------------


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, object], ...]:
    """A dataclass's field names and default values (``_NO_DEFAULT`` if none)."""
    out: list[tuple[str, object]] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out.append((f.name, f.default))
        elif f.default_factory is not dataclasses.MISSING:
            out.append((f.name, f.default_factory()))
        else:
            out.append((f.name, _NO_DEFAULT))
    return tuple(out)


_NO_DEFAULT = object()


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            name: _plain(v)
            for name, default in _fields(type(value))
            if (v := getattr(value, name)) is not default
            and (default is _NO_DEFAULT or type(v) is not type(default) or v != default)
        }
    if isinstance(value, float):
        return (
            value
            if math.isfinite(value)
            else repr(value).replace("inf", "Infinity").replace("nan", "NaN")
        )
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def canonical_json(record: LotRecord) -> bytes:
    """The record's canonical serialisation (see the module docstring)."""
    doc = {"format": CANONICAL_FORMAT, "record": _plain(record)}
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_sha256(record: LotRecord) -> str:
    """SHA-256 (hex) of ``canonical_json(record)``."""
    return hashlib.sha256(canonical_json(record)).hexdigest()


# -- CSV ----------------------------------------------------------------------------------

_CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "pt-BR": (
        "lote", "tipo", "hora_local", "hora_utc", "dispositivo", "estacao", "umidade_pct",
        "temperatura_c", "amostra", "qualidade_hora", "bruto_kg", "tara_kg", "liquido_kg",
        "gatilho", "produtor", "ticket",
    ),
    "en": (
        "lot", "kind", "local_time", "utc_time", "device", "station", "moisture_pct",
        "temperature_c", "sample_id", "time_quality", "gross_kg", "tare_kg", "net_kg",
        "trigger", "producer", "ticket",
    ),
}  # fmt: skip
_CSV_KINDS = {"pt-BR": ("leitura", "pesagem"), "en": ("reading", "weighment")}


def _safe_text(text: str | None) -> str:
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_number(value: float | None, decimal_comma: bool) -> str:
    if value is None:
        return ""
    text = repr(float(value)) if math.isfinite(value) else ""
    return text.replace(".", ",") if decimal_comma else text


def _times(ts_ns: int, tz: tzinfo) -> tuple[str, str]:
    try:
        at = datetime.fromtimestamp(ts_ns / 1e9, UTC)
    except (OverflowError, OSError, ValueError):
        return "", ""
    return (
        at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )


def records_csv(
    records: Iterable[LotRecord],
    *,
    decimal_comma: bool = False,
    lang: Lang = "pt-BR",
    tz: tzinfo = UTC,
    station_key: BoxIdentity | None = None,
) -> bytes:
    """Readings and weighments of lots as CSV (UTF-8 with BOM; see the module docstring).

    Args:
        records: One lot, or the lots of a date range.
        decimal_comma: ``;`` between fields and ``,`` in numbers.
        lang: Header and kind names.
        tz: The site's time zone, for the local-time column.
        station_key: The box's public key, written as a ``#`` line before the header.
    """
    out = io.StringIO()
    if station_key is not None:
        out.write(station_key_line(station_key, lang) + "\r\n")
    writer = csv.writer(
        out,
        delimiter=";" if decimal_comma else ",",
        quoting=csv.QUOTE_MINIMAL,
        lineterminator="\r\n",
    )
    writer.writerow(_CSV_COLUMNS[lang] + METER_CSV_COLUMNS[lang] + RECEIPT_CSV_COLUMNS[lang])
    reading_kind, weighment_kind = _CSV_KINDS[lang]
    no_meter = ("",) * len(METER_CSV_COLUMNS[lang])

    def num(value: float | None) -> str:
        return _csv_number(value, decimal_comma)

    for record in records:
        code = _safe_text(record.summary.code)
        producer = _safe_text(record.details.producer)
        rows: list[tuple[int, int, list[str]]] = []
        meters = meter_csv_cells(record, tz, lang)
        for r in record.readings:
            local, utc = _times(r.ts_ns, tz)
            rows.append((r.ts_ns, 0, [
                code, reading_kind, local, utc, _safe_text(r.device), _safe_text(r.station),
                num(r.moisture_pct), num(r.temperature_c), _safe_text(r.sample_id),
                _safe_text(r.time_quality), "", "", "", "", producer, _safe_text(r.audit),
                *(_safe_text(x) for x in meters.get((r.device, r.seq), no_meter)),
            ]))  # fmt: skip
        for w in record.weighments:
            local, utc = _times(w.ts_ns, tz)
            rows.append((w.ts_ns, 1, [
                code, weighment_kind, local, utc, _safe_text(w.device), _safe_text(w.station),
                "", "", "", "", num(w.gross_kg), num(w.tare_kg), num(w.net_kg),
                _safe_text(w.trigger), producer, "", *no_meter,
            ]))  # fmt: skip
        for e in record.events:  # corrections and blends: the event's sentence as the ticket
            if e.kind in ("moved_out", "moved_in", "blend", "blended"):
                local, utc = _times(e.ts_ns, tz)
                pct = e.data.get("moisture_pct")
                rows.append((e.ts_ns, 2, [
                    code, _EVENT_KINDS[lang][e.kind], local, utc,
                    _safe_text(str(e.data.get("device", ""))), "",
                    num(pct) if isinstance(pct, float) else "", "", "", "", "", "", "", "",
                    producer, _safe_text(e.text), *no_meter,
                ]))  # fmt: skip
        rows.sort(key=lambda row: (row[0], row[1]))
        receipt = receipt_csv_cells(record, number=num, text=_safe_text)
        writer.writerows([*row, *receipt] for _, _, row in rows)
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")


def station_key_line(key: BoxIdentity, lang: Lang = "pt-BR") -> str:
    """The CSV's first line: ``#``, the box's public key and its fingerprint."""
    t = _TEXT[lang]
    return "# {} · {}".format(
        t["station_key"].format(key=key.public_key),
        t["station_fingerprint"].format(fingerprint=key.fingerprint),
    )


def read_csv(data: bytes) -> list[dict[str, str]]:
    """Rows of a ``records_csv`` file by column name, text prefixes taken off.

    The separator is found from the header (``;`` or ``,``); numbers stay text (with a
    decimal comma when the file has one).
    """
    text = data.decode("utf-8-sig")
    while text.startswith("#"):  # the station's key line, and any other comment first
        text = text.split("\r\n", 1)[1] if "\r\n" in text else ""
    first = text.split("\r\n", 1)[0]
    delimiter = ";" if ";" in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = list(reader)
    if not rows:
        return []
    header = rows[0]
    return [
        {name: (v[1:] if v.startswith(_FORMULA_START) and v[:1] == "'" else v)
         for name, v in zip(header, row, strict=False)}
        for row in rows[1:]
    ]  # fmt: skip


# -- text for the report ------------------------------------------------------------------

_TEXT: dict[str, dict[str, str]] = {
    "pt-BR": {
        "title": "Relatório do lote {code}",
        "site": "Cooperativa / armazém",
        "lot": "Dados do lote",
        "first": "Primeira vez visto",
        "last": "Última vez visto",
        "stations": "Estações",
        "devices": "Dispositivos",
        "product": "Produto (etiqueta)",
        "producer": "Produtor",
        "bags": "Sacas declaradas",
        "type": "Tipo de café",
        "note": "Observação",
        "updated": "Detalhes alterados por",
        "moisture": "Umidade",
        "n": "Leituras",
        "mean": "Média",
        "min": "Mínima",
        "max": "Máxima",
        "lastv": "Última",
        "threshold": "Limite de lote úmido",
        "verdict": "Veredito",
        "wet": "ÚMIDO: ao menos uma leitura no limite ou acima",
        "ok": "dentro do limite: nenhuma leitura no limite ou acima",
        "none": "sem leituras de umidade",
        "all_in_csv": "A lista completa das leituras está na exportação CSV do lote.",
        "chart": "Umidade ao longo do tempo",
        "legend_threshold": "linha tracejada vermelha: limite de lote úmido",
        "legend_target": "pontilhada verde: umidade alvo da secagem",
        "drying": "Estimativa de secagem",
        "target": "Umidade alvo",
        "eta": "Previsão para atingir o alvo",
        "remaining": "Tempo restante",
        "equilibrium": "Umidade de equilíbrio ajustada",
        "rate": "Taxa de secagem ajustada",
        "rmse": "Desvio do ajuste",
        "weighments": "Pesagens",
        "no_weighments": "Nenhuma pesagem registrada.",
        "w_time": "Hora",
        "w_device": "Balança",
        "w_station": "Estação",
        "w_gross": "Bruto (kg)",
        "w_tare": "Tara (kg)",
        "w_net": "Líquido (kg)",
        "w_trigger": "Origem",
        "total": "Total líquido",
        "timeline": "Linha do tempo",
        "no_events": "Nenhum evento registrado.",
        "e_time": "Hora",
        "e_kind": "Evento",
        "e_text": "Descrição",
        "e_by": "Quem / origem",
        "generated": "Gerado em {at} ({zone})",
        "hash": "SHA-256 dos dados do lote",
        "hash_note": "Confira uma cópia com: coffee-telemetry lot verify ARQUIVO",
        "page": "Página {n}/{nb}",
        "station_key": "Chave pública desta estação (Ed25519): {key}",
        "station_fingerprint": "impressão digital {fingerprint}",
        "hours": "{h} h",
        "per_h": "{k} por hora",
        "times": "Horários em {zone}.",
    },
    "en": {
        "title": "Lot report {code}",
        "site": "Cooperative / warehouse",
        "lot": "Lot data",
        "first": "First seen",
        "last": "Last seen",
        "stations": "Stations",
        "devices": "Devices",
        "product": "Product (tag)",
        "producer": "Producer",
        "bags": "Declared bags",
        "type": "Coffee type",
        "note": "Note",
        "updated": "Details changed by",
        "moisture": "Moisture",
        "n": "Readings",
        "mean": "Mean",
        "min": "Minimum",
        "max": "Maximum",
        "lastv": "Last",
        "threshold": "Wet-lot threshold",
        "verdict": "Verdict",
        "wet": "WET: at least one reading at or above the threshold",
        "ok": "within the threshold: no reading at or above it",
        "none": "no moisture readings",
        "all_in_csv": "The full list of readings is in the lot's CSV export.",
        "chart": "Moisture over time",
        "legend_threshold": "red dashed line: wet-lot threshold",
        "legend_target": "green dotted line: drying target moisture",
        "drying": "Drying estimate",
        "target": "Target moisture",
        "eta": "Expected to reach the target",
        "remaining": "Time remaining",
        "equilibrium": "Fitted equilibrium moisture",
        "rate": "Fitted drying rate",
        "rmse": "Fit residual",
        "weighments": "Weighments",
        "no_weighments": "No weighments recorded.",
        "w_time": "Time",
        "w_device": "Scale",
        "w_station": "Station",
        "w_gross": "Gross (kg)",
        "w_tare": "Tare (kg)",
        "w_net": "Net (kg)",
        "w_trigger": "Trigger",
        "total": "Total net",
        "timeline": "Timeline",
        "no_events": "No events recorded.",
        "e_time": "Time",
        "e_kind": "Event",
        "e_text": "Description",
        "e_by": "Who / source",
        "generated": "Generated on {at} ({zone})",
        "hash": "SHA-256 of the lot's data",
        "hash_note": "Check a copy with: coffee-telemetry lot verify FILE",
        "page": "Page {n}/{nb}",
        "station_key": "This station's public key (Ed25519): {key}",
        "station_fingerprint": "fingerprint {fingerprint}",
        "hours": "{h} h",
        "per_h": "{k} per hour",
        "times": "Times in {zone}.",
    },
}

_EVENT_KINDS: dict[str, dict[str, str]] = {
    "pt-BR": {
        "assigned": "lote definido",
        "cleared": "lote encerrado",
        "alert": "alerta",
        "ack": "alerta reconhecido",
        "resolved": "alerta resolvido",
        "service": "serviço",
        "details": "detalhes",
        "dried": "saiu do secador",
        "ready": "pronto para beneficiar",
        "receipt": "recibo de entrada",
        "moved_out": "leitura movida para outro lote",
        "moved_in": "leitura recebida de outro lote",
        "blend": "mistura (blend)",
        "blended": "entrou em mistura",
    },
    "en": {
        "assigned": "lot set",
        "cleared": "lot cleared",
        "alert": "alert",
        "ack": "alert acknowledged",
        "resolved": "alert resolved",
        "service": "service",
        "details": "details",
        "dried": "left the dryer",
        "ready": "ready to hull",
        "receipt": "intake receipt",
        "moved_out": "reading moved to another lot",
        "moved_in": "reading moved in from another lot",
        "blend": "blend",
        "blended": "blended into",
    },
}


def format_number(value: float, decimals: int, lang: Lang) -> str:
    """``value`` with ``decimals`` places and thousands grouped (``1.234,5`` in pt-BR)."""
    if not math.isfinite(value):
        return "-"
    text = f"{value:,.{decimals}f}"
    if lang == "pt-BR":
        text = text.replace(",", "\0").replace(".", ",").replace("\0", ".")
    return text


def format_pct(value: float | None, lang: Lang) -> str:
    """A moisture, ``11,8 %`` in pt-BR, ``11.8 %`` in English."""
    return "-" if value is None else f"{format_number(value, 1, lang)} %"


def _format_time(ts_ns: int, tz: tzinfo, lang: Lang) -> str:
    try:
        at = datetime.fromtimestamp(ts_ns / 1e9, UTC).astimezone(tz)
    except (OverflowError, OSError, ValueError):
        return "-"
    return at.strftime("%d/%m/%Y %H:%M:%S" if lang == "pt-BR" else "%Y-%m-%d %H:%M:%S")


def _format_duration(seconds: float, lang: Lang) -> str:
    hours = seconds / 3600
    return _TEXT[lang]["hours"].format(h=format_number(hours, 1, lang))


@functools.cache
def _font_files() -> tuple[Path, Path, Path, frozenset[int]]:
    """Regular, bold and mono DejaVu files, and the code points the regular one draws."""
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]  # fpdf2's dependency

    for folder in FONT_DIRS:
        regular, bold, mono = (
            folder / "DejaVuSans.ttf",
            folder / "DejaVuSans-Bold.ttf",
            folder / "DejaVuSansMono.ttf",
        )
        if regular.is_file() and bold.is_file() and mono.is_file():
            with TTFont(regular, lazy=True) as font:
                cmap = frozenset(font.getBestCmap())
            return regular, bold, mono, cmap
    raise ConfigError(
        [
            (
                "",
                "the PDF report needs the DejaVu fonts:"
                " install the Debian package fonts-dejavu-core",
            )
        ]
    )


def printable(text: str, drawable: frozenset[int]) -> str:
    """``text`` with what would not be seen as itself shown as ``<U+XXXX>`` (see above).

    Line breaks and tabs become spaces (the report wraps text itself).
    """
    out: list[str] = []
    for ch in text:
        if ch in "\n\r\t":
            out.append(" ")
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or ord(ch) not in drawable:
            out.append(f"<U+{ord(ch):04X}>")
        else:
            out.append(ch)
    return "".join(out)


# -- PDF ----------------------------------------------------------------------------------

_DEVICE_COLOURS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(ticks, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _thin(points: Sequence[tuple[float, float]], columns: int) -> list[tuple[float, float]]:
    """The lowest and highest point per column, in time order (the same picture)."""
    if len(points) <= 2 * columns:
        return list(points)
    x0, x1 = points[0][0], points[-1][0]
    width = (x1 - x0) or 1.0
    out: list[tuple[float, float]] = []
    bucket: list[tuple[float, float]] = []
    current = -1
    for p in points:
        col = min(columns - 1, int((p[0] - x0) / width * columns))
        if col != current and bucket:
            lo, hi = min(bucket, key=lambda q: q[1]), max(bucket, key=lambda q: q[1])
            out.extend(sorted({lo, hi}))
            bucket = []
        current = col
        bucket.append(p)
    if bucket:
        lo, hi = min(bucket, key=lambda q: q[1]), max(bucket, key=lambda q: q[1])
        out.extend(sorted({lo, hi}))
    return out


def lot_report_pdf(
    record: LotRecord,
    *,
    site_name: str,
    generated_ns: int,
    lang: Lang = "pt-BR",
    tz: tzinfo = UTC,
    drying: DryingEstimate | None = None,
    creator: str = "coffee-telemetry",
    cross_check: tuple[float, float] = (3600.0, 0.8),
    station_key: BoxIdentity | None = None,
) -> bytes:
    """The lot's PDF report (see the module docstring), with its check trailer.

    Args:
        record: The lot.
        site_name: The cooperative's or site's name.
        generated_ns: The generation time printed.
        lang: ``pt-BR`` or ``en``.
        tz: The site's time zone (every time printed is in it).
        drying: The drying estimate, shown when it has a fit.
        creator: The program named in the metadata.
        cross_check: The meters' cross-check window (s) and tolerance (pp).
        station_key: The box's public key, printed in every page's footer.
    """
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    regular, bold, mono, drawable = _font_files()
    t = _TEXT[lang]
    digest = record_sha256(record)
    code = record.summary.code

    def p(text: str | None) -> str:
        return printable(text or "", drawable)

    zone = str(getattr(tz, "key", None) or tz.tzname(None) or "UTC")
    generated = _format_time(generated_ns, tz, lang)

    class Report(FPDF):
        def footer(self) -> None:
            self.set_y(-12 if station_key is None else -15.5)
            self.set_font("DejaVu", "", 7)
            self.set_text_color(90, 90, 90)
            title = t["title"].format(code=code)
            when = t["generated"].format(at=generated, zone=zone)
            self.cell(0, 4, p(f"{title} · {when}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            if station_key is not None:  # the key that signs this box's lot packs
                key = t["station_key"].format(key=station_key.public_key)
                self.cell(0, 3.5, key, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                mark = t["station_fingerprint"].format(fingerprint=station_key.fingerprint)
                self.cell(0, 4, mark, new_x=XPos.LMARGIN)
            self.cell(0, 4, t["page"].format(n=self.page_no(), nb="{nb}"), align="R")

    pdf = Report(orientation="P", unit="mm", format="A4")
    pdf.set_compression(True)
    pdf.add_font("DejaVu", "", str(regular))
    pdf.add_font("DejaVu", "B", str(bold))
    pdf.add_font("DejaVuMono", "", str(mono))
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.set_margins(15, 15, 15)
    pdf.alias_nb_pages()
    pdf.set_title(p(t["title"].format(code=code)))
    pdf.set_author(p(site_name))
    pdf.set_subject(p(t["title"].format(code=code)))
    pdf.set_creator(creator)
    pdf.set_keywords(
        f"coffee-telemetry-lot-report lot={urllib.parse.quote(code, safe='')} data-sha256={digest}"
    )
    pdf.set_lang("pt-BR" if lang == "pt-BR" else "en")
    try:
        pdf.set_creation_date(datetime.fromtimestamp(generated_ns / 1e9, UTC))
    except (OverflowError, OSError, ValueError):
        pdf.set_creation_date(datetime(1970, 1, 1, tzinfo=UTC))
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def heading(text: str, size: float = 12) -> None:
        if pdf.will_page_break(size * 0.5 + 22):  # never a heading alone at a page's foot
            pdf.add_page()
        pdf.ln(2)
        pdf.set_font("DejaVu", "B", size)
        pdf.multi_cell(width, size * 0.5, p(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("DejaVu", "", 9)

    def line(text: str) -> None:
        pdf.multi_cell(width, 4.6, p(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def field(label: str, value: str) -> None:
        line(f"{label}: {value}")

    # Header.
    heading(t["title"].format(code=code), 16)
    field(t["site"], site_name or "-")
    pdf.set_font("DejaVu", "", 8)
    line(t["times"].format(zone=zone))

    s, d = record.summary, record.details
    heading(t["lot"])
    field(t["first"], _format_time(s.first_ns, tz, lang))
    field(t["last"], _format_time(s.last_ns, tz, lang))
    field(t["stations"], ", ".join(s.stations) or "-")
    field(t["devices"], ", ".join(s.devices) or "-")
    field(t["product"], s.product or "-")
    field(t["producer"], d.producer or "-")
    field(t["bags"], "-" if d.bags is None else format_number(d.bags, 0, lang))
    field(t["type"], d.product_type or "-")
    field(t["note"], d.note or "-")
    if d.updated_by and d.updated_ns > 0:
        field(t["updated"], f"{d.updated_by} ({_format_time(d.updated_ns, tz, lang)})")
    receipt_pdf(
        record,
        heading=heading,
        line=line,
        when=lambda ts: _format_time(ts, tz, lang),
        number=lambda v, n: format_number(v, n, lang),
        lang=lang,
    )

    heading(t["moisture"])
    field(t["n"], format_number(s.readings, 0, lang))
    field(t["mean"], format_pct(s.mean_moisture_pct, lang))
    field(t["min"], format_pct(s.min_moisture_pct, lang))
    field(t["max"], format_pct(s.max_moisture_pct, lang))
    field(t["lastv"], format_pct(s.last_moisture_pct, lang))
    field(t["threshold"], format_pct(record.threshold_pct, lang))
    pdf.set_font("DejaVu", "B", 9)
    if s.verdict == "wet":
        pdf.set_text_color(180, 0, 0)
    field(t["verdict"], t[s.verdict])
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("DejaVu", "", 9)
    if record.readings:
        line(t["all_in_csv"])
        _chart(pdf, record, drying, width, tz, lang)

    window_s, tolerance_pp = cross_check
    pdf_section(
        record,
        PdfTools(
            heading=heading,
            line=line,
            table=lambda head, rows, widths: _table(pdf, head, rows, widths),
            when=lambda ts: _format_time(ts, tz, lang),
            number=lambda v, n: format_number(v, n, lang),
            printable=p,
        ),
        lang=lang,
        tz=tz,
        window_s=window_s,
        tolerance_pp=tolerance_pp,
    )

    if drying is not None and drying.fit is not None:
        heading(t["drying"])
        field(t["target"], format_pct(drying.target_pct, lang))
        line(describe(drying, lang))
        if drying.status == "estimate" and drying.eta_ns is not None:
            field(t["eta"], _format_time(drying.eta_ns, tz, lang))
        if drying.status == "estimate" and drying.remaining_s is not None:
            field(t["remaining"], _format_duration(drying.remaining_s, lang))
        fit = drying.fit
        field(t["equilibrium"], format_pct(fit.me_pct, lang))
        field(t["rate"], t["per_h"].format(k=format_number(fit.k_per_h, 3, lang)))
        field(t["rmse"], f"{format_number(fit.rmse_pp, 2, lang)} pp")

    heading(t["weighments"])
    if record.weighments:
        _table(
            pdf,
            (t["w_time"], t["w_device"], t["w_station"], t["w_gross"], t["w_tare"], t["w_net"],
             t["w_trigger"]),
            [
                (_format_time(w.ts_ns, tz, lang), p(w.device), p(w.station),
                 format_number(w.gross_kg, 1, lang), format_number(w.tare_kg, 1, lang),
                 format_number(w.net_kg, 1, lang), p(w.trigger))
                for w in record.weighments
            ],
            (32, 28, 24, 22, 20, 22, 32),
            numeric=(3, 4, 5),
        )  # fmt: skip
        total = sum(w.net_kg for w in record.weighments)
        pdf.set_font("DejaVu", "B", 9)
        field(t["total"], f"{format_number(total, 1, lang)} kg ({len(record.weighments)})")
        pdf.set_font("DejaVu", "", 9)
    else:
        line(t["no_weighments"])

    heading(t["timeline"])
    if record.events:
        _table(
            pdf,
            (t["e_time"], t["e_kind"], t["e_text"], t["e_by"]),
            [_event_row(e, tz, lang, p) for e in record.events],
            (32, 30, 80, 38),
        )
    else:
        line(t["no_events"])

    heading(t["hash"], 10)
    pdf.set_font("DejaVuMono", "", 8)
    line(digest)
    pdf.set_font("DejaVu", "", 8)
    line(t["hash_note"])
    line(t["generated"].format(at=generated, zone=zone))

    return _with_trailer(bytes(pdf.output()), code, digest)


def _event_row(
    event: LotEvent, tz: tzinfo, lang: Lang, p: Callable[[str | None], str]
) -> tuple[str, ...]:
    who = " / ".join(x for x in (event.by, event.source) if x)
    return (
        _format_time(event.ts_ns, tz, lang),
        _EVENT_KINDS[lang].get(event.kind, event.kind),
        p(event.text),
        p(who) or "-",
    )


def _table(
    pdf: object,
    headings: Sequence[str],
    rows: Sequence[Sequence[str]],
    widths: Sequence[float],
    *,
    numeric: Sequence[int] = (),
) -> None:
    """A ruled table whose cells wrap (never cut) and whose heading repeats on each page.

    fpdf2's own ``table`` lays every cell out through ``multi_cell``; this one measures
    a cell first and wraps only what does not fit, several times faster for long tables.
    """
    from fpdf import FPDF
    from fpdf.enums import WrapMode, XPos, YPos

    assert isinstance(pdf, FPDF)
    size, lh, pad = 7.5, 3.4, 0.8
    scale = (pdf.w - pdf.l_margin - pdf.r_margin) / sum(widths)
    cols = [w * scale for w in widths]

    def lines_of(text: str, width: float) -> list[str]:
        if pdf.get_string_width(text) <= width - 2 * pad:
            return [text]
        out = pdf.multi_cell(
            width - 2 * pad, lh, text, dry_run=True, output="LINES", wrapmode=WrapMode.CHAR
        )
        assert isinstance(out, list)
        return [str(x) for x in out] or [""]

    def draw(cells: Sequence[str], *, head: bool) -> None:
        pdf.set_font("DejaVu", "B" if head else "", size)
        wrapped = [lines_of(text, w) for text, w in zip(cells, cols, strict=True)]
        height = max(len(x) for x in wrapped) * lh + pad
        if not head and pdf.will_page_break(height):
            pdf.add_page()
            draw(headings, head=True)
            pdf.set_font("DejaVu", "", size)
        x, y = pdf.l_margin, pdf.get_y()
        for i, (parts, w) in enumerate(zip(wrapped, cols, strict=True)):
            pdf.rect(x, y, w, height, style="DF" if head else "D")
            for j, part in enumerate(parts):
                pdf.set_xy(x + pad, y + pad / 2 + j * lh)
                pdf.cell(w - 2 * pad, lh, part, align="R" if i in numeric else "L")
            x += w
        pdf.set_xy(pdf.l_margin, y + height)

    pdf.set_draw_color(150, 150, 150)
    pdf.set_fill_color(230, 230, 230)
    pdf.set_line_width(0.1)
    if pdf.will_page_break(3 * lh + 2 * pad):
        pdf.add_page()
    draw(headings, head=True)
    for row in rows:
        draw(row, head=False)
    pdf.set_draw_color(0, 0, 0)
    pdf.set_font("DejaVu", "", 9)
    pdf.set_x(pdf.l_margin)
    _ = (XPos, YPos)


def _chart(
    pdf: object,
    record: LotRecord,
    drying: DryingEstimate | None,
    width: float,
    tz: tzinfo,
    lang: Lang,
) -> None:
    """Every device's readings over time, the threshold and the target, as vector lines."""
    from fpdf import FPDF
    from fpdf.enums import WrapMode, XPos, YPos

    assert isinstance(pdf, FPDF)
    t = _TEXT[lang]
    height = 70.0
    if pdf.will_page_break(height + 22):
        pdf.add_page()
    pdf.ln(2)
    pdf.set_font("DejaVu", "B", 10)
    pdf.cell(width, 5, t["chart"], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    left, top = pdf.l_margin + 12, pdf.get_y() + 2
    w, h = width - 14, height
    series: dict[str, list[tuple[float, float]]] = {}
    for r in record.readings:
        if math.isfinite(r.moisture_pct):
            series.setdefault(r.device, []).append((float(r.ts_ns), r.moisture_pct))
    values = [y for pts in series.values() for _, y in pts]
    times = [x for pts in series.values() for x, _ in pts]
    if not values:
        return
    t0, t1 = min(times), max(times)
    if t1 - t0 < 60e9:
        t0, t1 = t0 - 1800e9, t1 + 1800e9
    marks = [v for v in (record.threshold_pct,) if v is not None and math.isfinite(v)]
    if drying is not None and drying.fit is not None and math.isfinite(drying.target_pct):
        marks.append(drying.target_pct)
    lo = min(values + marks)
    hi = max(values + marks)
    if hi - lo < 1:
        lo, hi = lo - 0.5, hi + 0.5
    step = _nice_step(hi - lo, 5)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step

    def x_of(ts: float) -> float:
        return left + (ts - t0) / (t1 - t0) * w

    def y_of(v: float) -> float:
        return top + h - (v - lo) / (hi - lo) * h

    pdf.set_font("DejaVu", "", 6.5)
    pdf.set_text_color(80, 80, 80)
    pdf.set_line_width(0.1)
    pdf.set_draw_color(215, 215, 215)
    v = lo
    while v <= hi + step / 2:
        y = y_of(v)
        pdf.line(left, y, left + w, y)
        pdf.set_xy(pdf.l_margin, y - 1.5)
        pdf.cell(11, 3, format_number(v, 1 if step < 1 else 0, lang), align="R")
        v += step
    for i in range(5):
        ts = t0 + (t1 - t0) * i / 4
        x = x_of(ts)
        pdf.line(x, top, x, top + h)
        label_x, align = (x, "L") if i == 0 else (x - 28, "R") if i == 4 else (x - 14, "C")
        pdf.set_xy(label_x, top + h + 0.8)
        pdf.cell(28, 3, _format_time(int(ts), tz, lang)[:-3], align=align)
    pdf.set_draw_color(60, 60, 60)
    pdf.set_line_width(0.25)
    pdf.rect(left, top, w, h)

    if record.threshold_pct is not None and lo <= record.threshold_pct <= hi:
        pdf.set_draw_color(200, 0, 0)
        pdf.set_dash_pattern(dash=1.5, gap=1)
        pdf.line(left, y_of(record.threshold_pct), left + w, y_of(record.threshold_pct))
    if drying is not None and drying.fit is not None and lo <= drying.target_pct <= hi:
        pdf.set_draw_color(0, 140, 60)
        pdf.set_dash_pattern(dash=0.4, gap=0.8)
        pdf.line(left, y_of(drying.target_pct), left + w, y_of(drying.target_pct))
    pdf.set_dash_pattern()

    columns = int(w / 0.2)
    pdf.set_line_width(0.3)
    for i, (_device, pts) in enumerate(sorted(series.items())):
        colour = _DEVICE_COLOURS[i % len(_DEVICE_COLOURS)]
        pdf.set_draw_color(*colour)
        pdf.set_fill_color(*colour)
        drawn = [(x_of(x), y_of(y)) for x, y in _thin(pts, columns)]
        if len(drawn) >= 2:
            pdf.polyline(drawn)
        for x, y in drawn if len(drawn) <= 60 else ():
            pdf.rect(x - 0.45, y - 0.45, 0.9, 0.9, style="F")
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.2)

    # Legend: one colour per device, then the lines.
    pdf.set_xy(pdf.l_margin, top + h + 5)
    for i, (device, _pts) in enumerate(sorted(series.items())):
        colour = _DEVICE_COLOURS[i % len(_DEVICE_COLOURS)]
        x, y = pdf.get_x(), pdf.get_y()
        label = printable(device, _font_files()[3])
        label_w = min(pdf.get_string_width(label) + 8, width)
        if x + label_w > pdf.l_margin + width:
            pdf.ln(3.5)
            x, y = pdf.get_x(), pdf.get_y()
        pdf.set_fill_color(*colour)
        pdf.rect(x, y + 0.8, 3, 1.6, style="F")
        pdf.set_x(x + 4)
        pdf.multi_cell(
            label_w - 4, 3.5, label, new_x=XPos.RIGHT, new_y=YPos.TOP, wrapmode=WrapMode.CHAR
        )
    pdf.ln(4)
    pdf.set_x(pdf.l_margin)
    lines = [t["legend_threshold"]] if record.threshold_pct is not None else []
    if drying is not None and drying.fit is not None:
        lines.append(t["legend_target"])
    if lines:
        pdf.multi_cell(width, 3.5, "; ".join(lines), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("DejaVu", "", 9)


def configured_report(
    record: LotRecord,
    cfg: Config,
    *,
    generated_ns: int,
    lang: Lang = "pt-BR",
    creator: str = "coffee-telemetry",
) -> bytes:
    """``lot_report_pdf`` with the site's name, time zone and ``[lots]`` drying targets."""
    drying = estimate_for_record(
        record,
        default_pct=cfg.lots.target_moisture_pct,
        by_product=cfg.lots.target_moisture_by_product,
    )
    return lot_report_pdf(
        record,
        site_name=cfg.site.name or cfg.site.id,
        generated_ns=generated_ns,
        lang=lang,
        tz=cfg.site.zone,
        drying=drying,
        creator=creator,
        cross_check=(
            cfg.alerts.meter_disagreement.window_s,
            cfg.alerts.meter_disagreement.tolerance_pp,
        ),
        station_key=box_identity(cfg.agent.data_dir),
    )


def configured_csv(
    records: Iterable[LotRecord],
    cfg: Config,
    *,
    lang: Lang = "pt-BR",
    decimal_comma: bool | None = None,
) -> bytes:
    """``records_csv`` in the site's time zone; decimal comma by default in pt-BR."""
    return records_csv(
        records,
        decimal_comma=lang == "pt-BR" if decimal_comma is None else decimal_comma,
        lang=lang,
        tz=cfg.site.zone,
        station_key=box_identity(cfg.agent.data_dir),
    )


def report_file_name(code: str, *, csv: bool = False) -> str:
    """A file name for a lot's report (``lote-L-0042.pdf``; ``/`` in a code becomes ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", code)[:64] or "lote"
    return f"lote-{safe}.{'csv' if csv else 'pdf'}"


# -- checking a copy ----------------------------------------------------------------------


def _with_trailer(body: bytes, code: str, data_hex: str) -> bytes:
    """``body`` and its check line, whose file hash covers all that comes before it."""
    quoted = urllib.parse.quote(code, safe="")
    covered = body + b"\n" + _TRAILER_TAG + f"lot={quoted} data-sha256={data_hex}".encode()
    return covered + f" file-sha256={hashlib.sha256(covered).hexdigest()}\n".encode()


_TRAILER = re.compile(
    rb"\n%coffee-telemetry-lot-report v1 lot=([A-Za-z0-9%._~-]{1,400})"
    rb" data-sha256=([0-9a-f]{64})( file-sha256=([0-9a-f]{64})\n)\Z"
)


@dataclass(frozen=True, slots=True)
class Trailer:
    """What a report's check line says.

    Attributes:
        code: The lot code.
        data_sha256: SHA-256 of the lot's data when the report was made.
        file_sha256: SHA-256 of every byte before `` file-sha256=``.
        file_ok: Whether those bytes still hash to ``file_sha256``.
    """

    code: str
    data_sha256: str
    file_sha256: str
    file_ok: bool


def read_trailer(data: bytes) -> Trailer | None:
    """The check line of a report's bytes (None: not a report made here, or cut short)."""
    tail = data[-1024:]
    match = _TRAILER.search(tail)
    if match is None:
        return None
    covered = data[: len(data) - len(tail) + match.start(3)]
    file_hex = match.group(4).decode()
    return Trailer(
        code=urllib.parse.unquote(match.group(1).decode()),
        data_sha256=match.group(2).decode(),
        file_sha256=file_hex,
        file_ok=hashlib.sha256(covered).hexdigest() == file_hex,
    )


#: How a copy compares with the box: ``intact`` (the file is as written and the
#: box's record still has the same data), ``modified`` (the file was changed),
#: ``record_changed`` (the file is as written, but the lot's record differs now),
#: ``unknown_lot`` (the box has no such lot), ``not_a_report`` (no check line).
VerifyStatus = Literal["intact", "modified", "record_changed", "unknown_lot", "not_a_report"]

_VERIFY_TEXT: dict[str, dict[VerifyStatus, str]] = {
    "pt-BR": {
        "intact": "íntegro: o arquivo é o gerado e os dados conferem com o registro do lote",
        "modified": "ALTERADO: o arquivo não é o que foi gerado",
        "record_changed": "o arquivo está íntegro, mas o registro do lote mudou desde o relatório"
        " (novas leituras, pesagens ou eventos): gere um novo relatório",
        "unknown_lot": "este equipamento não tem registro do lote",
        "not_a_report": "não é um relatório de lote gerado pelo coffee-telemetry (ou está cortado)",
    },
    "en": {
        "intact": "intact: the file is as generated and its data match the lot's record",
        "modified": "MODIFIED: the file is not what was generated",
        "record_changed": "the file is intact, but the lot's record changed since the report"
        " (new readings, weighments or events): make a new report",
        "unknown_lot": "this box has no record of the lot",
        "not_a_report": "not a lot report made by coffee-telemetry (or cut short)",
    },
}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of ``verify_report``.

    Attributes:
        status: ``VerifyStatus``.
        code: The lot code the report names ("" without a check line).
        report_sha256: The data hash the report carries.
        record_sha256: The data hash of the box's record now (None if not loaded).
    """

    status: VerifyStatus
    code: str = ""
    report_sha256: str = ""
    record_sha256: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the copy is intact and matches the box."""
        return self.status == "intact"

    def describe(self, lang: Lang = "pt-BR") -> str:
        """The outcome as a sentence."""
        return _VERIFY_TEXT[lang][self.status]


def verify_report(data: bytes, load: Callable[[str], LotRecord | None]) -> VerifyResult:
    """Check a report's bytes against the lot's record (see the module docstring).

    Args:
        data: The report file's bytes.
        load: The record store's lookup: the lot's record by code, None if unknown.
    """
    trailer = read_trailer(data)
    if trailer is None:
        return VerifyResult(status="not_a_report")
    if not trailer.file_ok:
        return VerifyResult(status="modified", code=trailer.code, report_sha256=trailer.data_sha256)
    record = load(trailer.code)
    if record is None:
        return VerifyResult(
            status="unknown_lot", code=trailer.code, report_sha256=trailer.data_sha256
        )
    now = record_sha256(record)
    return VerifyResult(
        status="intact" if now == trailer.data_sha256 else "record_changed",
        code=trailer.code,
        report_sha256=trailer.data_sha256,
        record_sha256=now,
    )
