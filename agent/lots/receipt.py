"""A lot's intake receipt: what the cooperative writes on its receipt form.

At intake a truck is weighed with its invoice (nota fiscal), and the receipt records the
member whose code is stamped on the sacks, the invoice number, how many sacks, the gross
and net weight, and where the sacks are stacked. ``parse_receipt`` checks a change of it
(a ``lotreceipt`` command's payload, from MQTT or the web, or ``coffee-telemetry lot
receipt``'s options) with the rules of lot codes: bounded lengths, a fixed set of
characters per field, no control characters, nothing written on a refusal. No field
takes free text: ``<``, ``>``, ``&`` and quotes are refused with a message naming the
characters a field allows, and the page escapes what it shows anyway.

Fields (each may be ``null`` to clear it):

==============  =====================================================================
``member``      the member (producer) code: letters, digits and ``- _ . /``, up to 32
``invoice``     the nota fiscal number: digits with ``. - /`` or spaces, up to 60
                (a 44-digit access key fits)
``sacks``       a whole number, 0 to 100 000
``gross_kg``    0 to 1 000 000 kg
``net_kg``      0 to 1 000 000 kg, not above the gross weight
``stack``       the stack position: letters, digits, spaces and ``- _ . / #``, up to 40
==============  =====================================================================

Weights: entered ones are the receipt's (``weight_source`` ``entered``). A receipt with
no entered weight takes them from the lot's weighments when a scale weighed it at its
station (the sum of their gross and net, ``weight_source`` ``scale``), so a station
with a scale needs nothing typed. The receipt lives in the lot record store
(``agent.lots.records``, table ``lot_receipts``); every change is a ``receipt`` event of
the lot's timeline.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from coffee_telemetry.agent.commands import Command, CommandHandler, CommandRefused
from coffee_telemetry.agent.errors import LotError
from coffee_telemetry.agent.lots.model import LotReceipt, LotRecord, LotWeighment
from coffee_telemetry.agent.lots.store import validate_lot
from coffee_telemetry.agent.lots.tables import (
    load_receipt,
)

if TYPE_CHECKING:
    from coffee_telemetry.agent.lots.records import AsyncLotRecords, LotRecords

__all__ = [
    "RECEIPT_COMMAND",
    "RECEIPT_CSV_COLUMNS",
    "RECEIPT_KEYS",
    "ReceiptChange",
    "handle_receipt_command",
    "load_receipt",
    "parse_receipt",
    "receipt_command",
    "receipt_csv_cells",
    "receipt_doc",
    "receipt_pdf",
    "set_receipt",
]

#: The command that sets a lot's receipt: ``cmd/lotreceipt/<lot code, escaped>``.
RECEIPT_COMMAND = "lotreceipt"
#: The receipt's fields, in the order forms and reports show them.
RECEIPT_KEYS = ("member", "invoice", "sacks", "gross_kg", "net_kg", "stack")
MEMBER_MAX_LEN = 32
INVOICE_MAX_LEN = 60
STACK_MAX_LEN = 40
SACKS_MAX = 100_000
WEIGHT_MAX_KG = 1_000_000.0

_MEMBER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9])?")
_INVOICE = re.compile(r"[0-9](?:[0-9./ -]*[0-9])?")
_STACK = re.compile(r"[^\W_](?:[\w ./#-]*[^\W_])?")


@dataclass(frozen=True, slots=True)
class ReceiptChange:
    """A validated change of a lot's receipt: only the keys given change (``None`` clears).

    Attributes:
        values: Some of ``RECEIPT_KEYS``, with what to set.
    """

    values: Mapping[str, str | int | float | None]


def _coded(
    doc: Mapping[str, object], key: str, pattern: re.Pattern[str], max_len: int
) -> str | None:
    value = doc[key]
    if value is None:
        return None
    if not isinstance(value, str):
        raise LotError(f"{key} must be text or null")
    value = value.strip()
    if not value:
        return None
    if len(value) > max_len:
        raise LotError(f"{key} is longer than {max_len} characters")
    if not pattern.fullmatch(value):
        allowed = {
            "member": "letters, digits and - _ . / (not at the start or end)",
            "invoice": "digits with . - / or spaces between them",
            "stack": "letters, digits, spaces and - _ . / # (starting and ending with a "
            "letter or digit)",
        }[key]
        raise LotError(f"{key} may only use {allowed}")
    return value


def _weight(doc: Mapping[str, object], key: str) -> float | None:
    value = doc[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LotError(f"{key} must be a number of kilograms or null")
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= WEIGHT_MAX_KG:
        raise LotError(f"{key} must be between 0 and {WEIGHT_MAX_KG:.0f} kg")
    return number


def parse_receipt(doc: Mapping[str, object]) -> ReceiptChange:
    """Validate a receipt change (a command's payload, the CLI's options).

    ``by`` is ignored here (the boundary checked it); any key not in ``RECEIPT_KEYS``
    is refused. An empty text clears its field, as ``null`` does.

    Raises:
        LotError: What is wrong, for the sender; nothing is written.
    """
    unknown = sorted(k for k in doc if k not in RECEIPT_KEYS and k != "by")
    if unknown:
        raise LotError(f"unknown key {unknown[0][:40]!r} ({', '.join(RECEIPT_KEYS)})")
    values: dict[str, str | int | float | None] = {}
    if "member" in doc:
        values["member"] = _coded(doc, "member", _MEMBER, MEMBER_MAX_LEN)
    if "invoice" in doc:
        values["invoice"] = _coded(doc, "invoice", _INVOICE, INVOICE_MAX_LEN)
    if "stack" in doc:
        values["stack"] = _coded(doc, "stack", _STACK, STACK_MAX_LEN)
    if "sacks" in doc:
        sacks = doc["sacks"]
        if sacks is not None and (
            isinstance(sacks, bool) or not isinstance(sacks, int) or not 0 <= sacks <= SACKS_MAX
        ):
            raise LotError(f"sacks must be a whole number from 0 to {SACKS_MAX}, or null")
        values["sacks"] = sacks
    for key in ("gross_kg", "net_kg"):
        if key in doc:
            values[key] = _weight(doc, key)
    gross, net = values.get("gross_kg"), values.get("net_kg")
    if isinstance(gross, float) and isinstance(net, float) and net > gross:
        raise LotError("net_kg may not be above gross_kg")
    if not values:
        raise LotError(f"nothing to change ({', '.join(RECEIPT_KEYS)})")
    return ReceiptChange(values)


# -- in the lot record store ------------------------------------------------------------


def set_receipt(
    records: LotRecords, code: str, change: ReceiptChange, *, by: str, source: str, at_ns: int
) -> LotReceipt:
    """Change a lot's receipt (creating the lot's record if it was never seen); one event.

    Raises:
        LotError: A bad lot code, or a net weight above the gross one once the change
            is applied to what is stored; nothing is written.
    """
    code = validate_lot(code)
    values = dict(change.values)

    def write(conn: sqlite3.Connection) -> LotReceipt:
        lot_id = records._lot_id(conn, {}, code, at_ns)
        conn.execute("INSERT OR IGNORE INTO lot_receipts (lot_id) VALUES (?)", (lot_id,))
        old = conn.execute(
            "SELECT gross_kg, net_kg FROM lot_receipts WHERE lot_id = ?", (lot_id,)
        ).fetchone()
        gross = values.get("gross_kg", old[0])
        net = values.get("net_kg", old[1])
        if isinstance(gross, float) and isinstance(net, float) and net > gross:
            raise LotError("net_kg may not be above gross_kg")
        sets = ", ".join(f"{key} = ?" for key in values)
        conn.execute(
            f"UPDATE lot_receipts SET {sets}, updated_by = ?, updated_ns = ? WHERE lot_id = ?",
            (*values.values(), by, at_ns, lot_id),
        )
        shown = ", ".join(f"{k}={'' if v is None else v}" for k, v in values.items())
        records._event(
            conn,
            lot_id,
            None,
            at_ns,
            "receipt",
            f"receipt changed by {by}: {shown}"[:700],
            by=by,
            source=source,
            data={k: ("" if v is None else v) for k, v in values.items()},
        )
        weighments = [
            LotWeighment(*row)
            for row in conn.execute(
                "SELECT ts_ns, seq, device, station, gross_kg, tare_kg, net_kg, trigger"
                " FROM weighments WHERE lot_id = ?",
                (lot_id,),
            )
        ]
        receipt = load_receipt(conn, lot_id, weighments)
        assert receipt is not None  # just written
        return receipt

    return records.write_with(write)


def receipt_doc(receipt: LotReceipt | None) -> dict[str, object] | None:
    """A receipt as a JSON document (``None`` stays ``null``)."""
    if receipt is None:
        return None
    return {
        "member": receipt.member,
        "invoice": receipt.invoice,
        "sacks": receipt.sacks,
        "gross_kg": receipt.gross_kg,
        "net_kg": receipt.net_kg,
        "weight_source": receipt.weight_source,
        "stack": receipt.stack,
        "updated_by": receipt.updated_by,
        "updated_ns": receipt.updated_ns,
    }


async def handle_receipt_command(records: AsyncLotRecords, cmd: Command) -> dict[str, object]:
    """``cmd/lotreceipt/<code>``: change a lot's receipt; the reply document.

    Raises:
        CommandRefused: Not ``lotreceipt/<code>``, a bad code or a bad receipt;
            nothing is written.
    """
    if len(cmd.path) != 2 or cmd.path[0] != RECEIPT_COMMAND:
        raise CommandRefused(f"expected cmd/{RECEIPT_COMMAND}/<lot>")
    try:
        code = validate_lot(cmd.path[1])
        change = parse_receipt(cmd.doc)
        receipt = await records.call(
            set_receipt,
            records.sync,
            code,
            change,
            by=cmd.by,
            source=cmd.source,
            at_ns=records.now_ns(),
        )
    except LotError as exc:
        raise CommandRefused(str(exc)) from None
    return {"lot": code, "receipt": receipt_doc(receipt)}


def receipt_command(records: AsyncLotRecords) -> CommandHandler:
    """``handle_receipt_command`` on ``records``, as the command boundary calls it."""

    async def handle(cmd: Command) -> dict[str, object]:
        return await handle_receipt_command(records, cmd)

    return handle


# -- in the exports ----------------------------------------------------------------------

#: The CSV's receipt, drying and hulling columns (after the others, on every row).
RECEIPT_CSV_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "pt-BR": (
        "membro", "nota_fiscal", "sacas_recebidas", "bruto_recebido_kg", "liquido_recebido_kg",
        "origem_peso", "pilha", "fim_secagem_utc", "secador", "sacas_beneficiadas",
    ),
    "en": (
        "member", "invoice", "sacks_received", "received_gross_kg", "received_net_kg",
        "weight_source", "stack", "dried_utc", "dryer", "bags_hulled",
    ),
}  # fmt: skip

_WORDS: Mapping[str, Mapping[str, str]] = {
    "pt-BR": {
        "receipt": "Recibo de entrada",
        "member": "Membro (produtor)",
        "invoice": "Nota fiscal",
        "sacks": "Sacas recebidas",
        "gross": "Peso bruto recebido",
        "net": "Peso líquido recebido",
        "stack": "Pilha",
        "scale": "da balança",
        "entered": "informado",
        "updated": "Recibo alterado por",
        "hulling": "Secagem e beneficiamento",
        "dried": "Saiu do secador",
        "patio": "terreiro",
        "mechanical": "secador mecânico",
        "hulled": "Sacas beneficiadas",
    },
    "en": {
        "receipt": "Intake receipt",
        "member": "Member (producer)",
        "invoice": "Invoice (nota fiscal)",
        "sacks": "Sacks received",
        "gross": "Gross weight received",
        "net": "Net weight received",
        "stack": "Stack",
        "scale": "from the scale",
        "entered": "entered",
        "updated": "Receipt changed by",
        "hulling": "Drying and hulling",
        "dried": "Left the dryer",
        "patio": "patio",
        "mechanical": "mechanical dryer",
        "hulled": "Bags hulled",
    },
}


def receipt_csv_cells(
    record: LotRecord, *, number: Callable[[float | None], str], text: Callable[[str | None], str]
) -> list[str]:
    """The lot's cells of ``RECEIPT_CSV_COLUMNS`` (empty where it has none)."""
    r, d = record.receipt, record.drying
    cells = ["", "", "", "", "", "", ""]
    if r is not None:
        cells = [
            text(r.member),
            text(r.invoice),
            "" if r.sacks is None else str(r.sacks),
            number(r.gross_kg),
            number(r.net_kg),
            text(r.weight_source),
            text(r.stack),
        ]
    dried = ["", ""]
    if d is not None:
        at = datetime.fromtimestamp(d.dried_ns / 1e9, UTC)
        dried = [at.isoformat(timespec="seconds").replace("+00:00", "Z"), text(d.dryer)]
    return [*cells, *dried, number(record.hulled_bags)]


def receipt_pdf(
    record: LotRecord,
    *,
    heading: Callable[[str], None],
    line: Callable[[str], None],
    when: Callable[[int], str],
    number: Callable[[float, int], str],
    lang: str,
) -> None:
    """Draw the lot's receipt, and when it left the dryer and the bags hulled, if any."""
    words = _WORDS["en" if lang == "en" else "pt-BR"]
    r = record.receipt
    if r is not None:
        heading(words["receipt"])
        line(f"{words['member']}: {r.member or '-'}")
        line(f"{words['invoice']}: {r.invoice or '-'}")
        line(f"{words['sacks']}: {'-' if r.sacks is None else number(r.sacks, 0)}")
        source = f" ({words[r.weight_source]})" if r.weight_source in ("scale", "entered") else ""
        for key, value in (("gross", r.gross_kg), ("net", r.net_kg)):
            shown = "-" if value is None else f"{number(value, 1)} kg{source}"
            line(f"{words[key]}: {shown}")
        line(f"{words['stack']}: {r.stack or '-'}")
        if r.updated_by and r.updated_ns > 0:
            line(f"{words['updated']} {r.updated_by} ({when(r.updated_ns)})")
    d = record.drying
    if d is not None or record.hulled_bags is not None:
        heading(words["hulling"])
        if d is not None:
            dryer = words.get(d.dryer, d.dryer)
            line(f"{words['dried']}: {when(d.dried_ns)} ({dryer}; {d.by})")
        if record.hulled_bags is not None:
            line(f"{words['hulled']}: {number(record.hulled_bags, 1)}")
