"""The lot record store's tables of the readiness and receipt services, and their reads.

The store (``agent.lots.records``) creates these tables in its schema steps and reads
them into each lot's record; the services above it (``agent.lots.readiness``,
``agent.lots.receipt``) write them. Keeping the shared part here lets the store know
the tables without importing the services that take it as a parameter.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence

from coffee_telemetry.agent.lots.model import LotDrying, LotReceipt, LotWeighment
from coffee_telemetry.agent.readings import Reading

#: Tables of the readiness service (a step of the lot record store's schema, ``records.STEPS``).
READINESS_SCHEMA = """
CREATE TABLE IF NOT EXISTS lot_drying (
    lot_id INTEGER PRIMARY KEY,
    dried_ns INTEGER NOT NULL,
    dryer TEXT NOT NULL,
    by TEXT NOT NULL,
    source TEXT NOT NULL,
    set_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS lot_drying_dried ON lot_drying (dried_ns);
CREATE TABLE IF NOT EXISTS lot_ready (
    lot_id INTEGER PRIMARY KEY,
    ready_ns INTEGER NOT NULL,
    announced_ns INTEGER
);
CREATE TABLE IF NOT EXISTS lot_hulled (
    lot_id INTEGER NOT NULL,
    huller TEXT NOT NULL,
    bags REAL NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    PRIMARY KEY (lot_id, huller)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS huller_totals (
    huller TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    bags_total REAL NOT NULL
);
CREATE TRIGGER IF NOT EXISTS lot_readiness_gone AFTER DELETE ON lots BEGIN
    DELETE FROM lot_drying WHERE lot_id = old.id;
    DELETE FROM lot_ready WHERE lot_id = old.id;
    DELETE FROM lot_hulled WHERE lot_id = old.id;
END;
"""


def load_drying(conn: sqlite3.Connection, lot_id: int) -> LotDrying | None:
    """The lot's ``lot_drying`` row, if it has one."""
    row = conn.execute(
        "SELECT dried_ns, dryer, by, source, set_ns FROM lot_drying WHERE lot_id = ?", (lot_id,)
    ).fetchone()
    return None if row is None else LotDrying(*row)


def load_hulled_bags(conn: sqlite3.Connection, lot_id: int) -> float | None:
    """Bags hulled for the lot, over every huller (``None``: none counted)."""
    row = conn.execute("SELECT SUM(bags) FROM lot_hulled WHERE lot_id = ?", (lot_id,)).fetchone()
    return None if row[0] is None else round(float(row[0]), 6)


def take_huller(conn: sqlite3.Connection, r: Reading) -> int:
    """Credit a ``huller`` reading's new bags to the lot active at its station (see above).

    Runs inside the lot record store's write transaction. Returns rows changed in
    ``lot_hulled`` (0 or 1).
    """
    total = r.fields.get("bags_total")
    if isinstance(total, bool) or not isinstance(total, int | float) or not math.isfinite(total):
        return 0
    row = conn.execute(
        "SELECT seq, bags_total FROM huller_totals WHERE huller = ?", (r.device,)
    ).fetchone()
    if row is not None and r.seq <= int(row[0]):
        return 0  # delivered again
    if row is not None and float(total) <= float(row[1]):
        return 0  # nothing counted: no write (a total never drops; a later one is higher)
    conn.execute(
        "INSERT INTO huller_totals (huller, seq, bags_total) VALUES (?, ?, ?)"
        " ON CONFLICT (huller) DO UPDATE SET seq = excluded.seq, bags_total = excluded.bags_total",
        (r.device, r.seq, float(total)),
    )
    if row is None:
        return 0  # the first total is a baseline
    added = float(total) - float(row[1])
    station = r.tags.get("station", "")
    if added <= 0 or not station:
        return 0
    active = conn.execute(
        "SELECT lot_id FROM station_lots WHERE station = ?", (station,)
    ).fetchone()
    if active is None:
        return 0
    lot_id = int(active[0])
    conn.execute(
        "INSERT INTO lot_hulled (lot_id, huller, bags, first_ns, last_ns) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (lot_id, huller) DO UPDATE SET bags = bags + excluded.bags,"
        " last_ns = MAX(last_ns, excluded.last_ns)",
        (lot_id, r.device, added, r.ts_ns, r.ts_ns),
    )
    conn.execute("UPDATE lots SET last_ns = MAX(last_ns, ?) WHERE id = ?", (r.ts_ns, lot_id))
    conn.execute(
        "INSERT OR IGNORE INTO lot_devices (lot_id, device, station) VALUES (?, ?, ?)",
        (lot_id, r.device, station),
    )
    return 1


#: The receipt table (a step of the lot record store's schema, ``records.STEPS``).
RECEIPT_SCHEMA = """
CREATE TABLE IF NOT EXISTS lot_receipts (
    lot_id INTEGER PRIMARY KEY,
    member TEXT,
    invoice TEXT,
    sacks INTEGER,
    gross_kg REAL,
    net_kg REAL,
    stack TEXT,
    updated_by TEXT NOT NULL DEFAULT '',
    updated_ns INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS lot_receipts_gone AFTER DELETE ON lots BEGIN
    DELETE FROM lot_receipts WHERE lot_id = old.id;
END;
"""


def row_receipt(row: Sequence[object], weighments: Sequence[LotWeighment]) -> LotReceipt:
    member, invoice, sacks, gross, net, stack, by, at = row
    source: str | None = None
    if gross is not None or net is not None:
        source = "entered"
    elif weighments:
        gross = round(sum(w.gross_kg for w in weighments), 3)
        net = round(sum(w.net_kg for w in weighments), 3)
        source = "scale"
    return LotReceipt(
        member=None if member is None else str(member),
        invoice=None if invoice is None else str(invoice),
        sacks=None if sacks is None else int(sacks),  # type: ignore[call-overload]
        gross_kg=None if gross is None else float(gross),  # type: ignore[arg-type]
        net_kg=None if net is None else float(net),  # type: ignore[arg-type]
        weight_source=source,
        stack=None if stack is None else str(stack),
        updated_by=str(by),
        updated_ns=int(at),  # type: ignore[call-overload]
    )


RECEIPT_COLUMNS = "member, invoice, sacks, gross_kg, net_kg, stack, updated_by, updated_ns"


def load_receipt(
    conn: sqlite3.Connection, lot_id: int, weighments: Sequence[LotWeighment]
) -> LotReceipt | None:
    """The lot's receipt (``None``: never written); no entered weight: ``weighments``'."""
    row = conn.execute(
        f"SELECT {RECEIPT_COLUMNS} FROM lot_receipts WHERE lot_id = ?", (lot_id,)
    ).fetchone()
    return None if row is None else row_receipt(row, weighments)
