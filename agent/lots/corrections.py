"""Corrections: a reading recorded under the wrong lot, moved to the right one.

Theory of operation
-------------------
A moisture reading belongs to the lot its ``lot`` tag named when it was accepted; that
row of the lot record (``readings``, keyed by the lot and the reading's ``(device,
seq)``) is never rewritten. A correction is an event: ``reading_moves`` gets one
append-only row (which reading, from which lot to which, who, when, why, by which
source), and both lots' timelines get an entry (``moved_out`` in the lot it leaves,
``moved_in`` in the lot it joins). A reading may be moved again; its lot is the one its
latest move names, or the one it was recorded under if it never moved.

Every reader of a lot's readings goes through the ``lot_readings`` view, which gives each
reading row its current lot (``cur_lot``): the rows never moved, by the lot they were
recorded under (the primary key), plus the moved ones, by their latest move. A record
the outbox hands over again after a crash is ignored as before (its original row is
still there, ``INSERT OR IGNORE``), so it never comes back under the wrong lot.

A move recomputes both lots' moisture summary (count, mean, minimum, maximum, latest)
from the view, so the Lotes page, the verdicts and the reports count the reading under
its new lot. The reading's device and station join the new lot's; the lot it left keeps
its own (they were involved).

Who may move a reading: a person logged in to the dashboard (``cmd/lotmove/<lot>``
through the command boundary, source ``web:<user>``) or someone at the box's terminal
(``coffee-telemetry lot move``, source ``cli``). Over MQTT or with an API token the
command is refused: a correction names a person. Every refusal says why and writes
nothing.

Retention: a lot is deleted with its readings once past ``retention_years``
(``LotRecords.prune``), but never while a lot linked to it by a move is kept: the
moved reading's row lives under the lot it was recorded in (``prune_keep``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from coffee_telemetry.agent.commands import Command, CommandRefused
from coffee_telemetry.agent.errors import LotError
from coffee_telemetry.agent.lots.store import check_by, validate_lot
from coffee_telemetry.agent.sqlite import MigrationStep, script

__all__ = [
    "CORRECTIONS_STEP",
    "MOVE_COMMAND",
    "REASON_MAX_LEN",
    "Move",
    "MoveCommands",
    "MoveRequest",
    "Writer",
    "check_reason",
    "forget_lots",
    "move_reading",
    "parse_move",
    "parse_reading_id",
    "prune_keep",
    "reading_id",
    "recompute_summary",
]

#: The command that moves a reading: ``cmd/lotmove/<lot the reading is in>``.
MOVE_COMMAND = "lotmove"
#: Longest reason (characters).
REASON_MAX_LEN = 300
#: Sources allowed to move a reading: a dashboard session (``web:<user>``) or the CLI.
_PERSON_SOURCES = ("web:", "cli")

_READING_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63}):([0-9]{1,18})")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reading_moves (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    orig_lot INTEGER NOT NULL,
    from_lot INTEGER NOT NULL,
    to_lot INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    by TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reading_moves_reading ON reading_moves (device, seq, id);
CREATE INDEX IF NOT EXISTS reading_moves_to ON reading_moves (to_lot);
CREATE INDEX IF NOT EXISTS reading_moves_orig ON reading_moves (orig_lot);
CREATE VIEW IF NOT EXISTS moved_readings AS
    SELECT device, seq, orig_lot, to_lot FROM reading_moves m
    WHERE id = (SELECT MAX(id) FROM reading_moves n WHERE n.device = m.device AND n.seq = m.seq);
CREATE VIEW IF NOT EXISTS lot_readings AS
    SELECT r.lot_id AS cur_lot, r.* FROM readings r
    WHERE NOT EXISTS (
        SELECT 1 FROM reading_moves m
        WHERE m.device = r.device AND m.seq = r.seq AND m.orig_lot = r.lot_id
    )
    UNION ALL
    SELECT v.to_lot AS cur_lot, r.* FROM moved_readings v
    JOIN readings r ON r.lot_id = v.orig_lot AND r.device = v.device AND r.seq = v.seq;
CREATE TABLE IF NOT EXISTS lot_event_cursor (
    name TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lot_blends (
    blend_lot INTEGER NOT NULL,
    position INTEGER NOT NULL,
    source TEXT NOT NULL,
    readings INTEGER NOT NULL,
    sum_pct REAL NOT NULL,
    min_pct REAL,
    max_pct REAL,
    last_pct REAL,
    weighments INTEGER NOT NULL,
    net_kg REAL NOT NULL,
    verdict TEXT NOT NULL,
    geolocated INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    by TEXT NOT NULL,
    PRIMARY KEY (blend_lot, source)
) WITHOUT ROWID;
"""

#: The lot record store's schema step for corrections, blends (``lots.blends``) and the
#: cursor of the events sent on (``lots.outflow``), appended to ``records.STEPS``.
CORRECTIONS_STEP: MigrationStep = script(_SCHEMA)


def reading_id(device: str, seq: int) -> str:
    """A reading's id as people type it: ``<device>:<seq>``."""
    return f"{device}:{seq}"


def parse_reading_id(text: object) -> tuple[str, int]:
    """``(device, seq)`` from ``<device>:<seq>``.

    Raises:
        LotError: Not such an id.
    """
    if not isinstance(text, str):
        raise LotError("reading must be text: <device>:<seq>")
    match = _READING_ID.fullmatch(text.strip())
    if match is None:
        raise LotError(f"reading {text[:40]!r} is not <device>:<seq> (e.g. umid-1:57)")
    return match.group(1), int(match.group(2))


def _bad_text(text: str) -> bool:
    return any(
        ch < " "
        or "\x7f" <= ch <= "\x9f"
        or ch in "\u2028\u2029\ufeff"
        or "\ud800" <= ch <= "\udfff"
        for ch in text
    )


def check_reason(reason: object) -> str:
    """The reason for a correction, stripped: required, bounded, no control characters.

    Raises:
        LotError: What is wrong with it.
    """
    if not isinstance(reason, str):
        raise LotError("reason must be text")
    reason = reason.strip()
    if not reason:
        raise LotError("a reason is required (why the reading is in the wrong lot)")
    if len(reason) > REASON_MAX_LEN:
        raise LotError(f"reason is longer than {REASON_MAX_LEN} characters")
    if _bad_text(reason):
        raise LotError("reason has a control character")
    return reason


@dataclass(frozen=True, slots=True)
class MoveRequest:
    """A validated request to move a reading.

    Attributes:
        device: The reading's device.
        seq: Its sequence number on the device.
        to: The lot it belongs to.
        reason: Why.
    """

    device: str
    seq: int
    to: str
    reason: str


def parse_move(doc: Mapping[str, object]) -> MoveRequest:
    """A move from a command's payload (``by`` is the boundary's).

    ``{"reading": "umid-1:57", "to": "L-0043", "reason": "..."}``

    Raises:
        LotError: What is wrong; nothing is written.
    """
    unknown = sorted(k for k in doc if k not in ("reading", "to", "reason", "by"))
    if unknown:
        raise LotError(f"unknown key {unknown[0][:40]!r} (reading, to, reason)")
    for key in ("reading", "to", "reason"):
        if key not in doc:
            raise LotError(f"{key} is required (reading, to, reason)")
    device, seq = parse_reading_id(doc["reading"])
    to = doc["to"]
    if not isinstance(to, str):
        raise LotError("to must be a lot code")
    return MoveRequest(device, seq, validate_lot(to), check_reason(doc["reason"]))


@dataclass(frozen=True, slots=True)
class Move:
    """A move as recorded.

    Attributes:
        id: Its row in ``reading_moves``.
        device: The reading's device.
        seq: Its sequence number.
        from_lot: The lot it was in.
        to_lot: The lot it is in now.
        moisture_pct: The reading's value.
        reading_ts_ns: When it was measured.
        at_ns: When it was moved.
        by: Who moved it.
        source: ``cli`` or ``web:<user>``.
        reason: Why.
    """

    id: int
    device: str
    seq: int
    from_lot: str
    to_lot: str
    moisture_pct: float
    reading_ts_ns: int
    at_ns: int
    by: str
    source: str
    reason: str


def _lot_id(conn: sqlite3.Connection, code: str, at_ns: int) -> int:
    conn.execute(
        "INSERT OR IGNORE INTO lots (code, first_ns, last_ns) VALUES (?, ?, ?)",
        (code, at_ns, at_ns),
    )
    return int(conn.execute("SELECT id FROM lots WHERE code = ?", (code,)).fetchone()[0])


def _find(
    conn: sqlite3.Connection, device: str, seq: int, in_lot: str | None = None
) -> tuple[int, int, int, str, float] | None:
    """``(orig_lot, cur_lot, ts_ns, station, moisture_pct)`` of reading ``device:seq``."""
    moved = conn.execute(
        "SELECT orig_lot, to_lot FROM reading_moves WHERE device = ? AND seq = ?"
        " ORDER BY id DESC LIMIT 1",
        (device, seq),
    ).fetchone()
    if moved is not None:
        row = conn.execute(
            "SELECT ts_ns, station, moisture_pct FROM readings"
            " WHERE lot_id = ? AND device = ? AND seq = ?",
            (moved[0], device, seq),
        ).fetchone()
        if row is None:
            return None
        return int(moved[0]), int(moved[1]), int(row[0]), str(row[1]), float(row[2])
    if in_lot is not None:  # the lot it should be in: a primary-key lookup
        row = conn.execute(
            "SELECT r.lot_id, r.ts_ns, r.station, r.moisture_pct FROM readings r"
            " JOIN lots l ON l.id = r.lot_id WHERE l.code = ? AND r.device = ? AND r.seq = ?",
            (in_lot, device, seq),
        ).fetchone()
        if row is not None:
            return int(row[0]), int(row[0]), int(row[1]), str(row[2]), float(row[3])
    # Otherwise found by its identity alone: a scan of the readings (the primary key
    # starts with the lot), for the CLI without --from and for the refusal's message.
    rows = conn.execute(
        "SELECT lot_id, ts_ns, station, moisture_pct FROM readings WHERE device = ? AND seq = ?",
        (device, seq),
    ).fetchall()
    if len(rows) != 1:
        return None
    lot, ts, station, value = rows[0]
    return int(lot), int(lot), int(ts), str(station), float(value)


def recompute_summary(conn: sqlite3.Connection, lot_id: int) -> None:
    """Set the lot's moisture summary from its current readings (``lot_readings``)."""
    n, total, lo, hi = conn.execute(
        "SELECT COUNT(*), TOTAL(moisture_pct), MIN(moisture_pct), MAX(moisture_pct)"
        " FROM lot_readings WHERE cur_lot = ?",
        (lot_id,),
    ).fetchone()
    last = conn.execute(
        "SELECT moisture_pct, ts_ns FROM lot_readings WHERE cur_lot = ?"
        " ORDER BY ts_ns DESC LIMIT 1",
        (lot_id,),
    ).fetchone()
    conn.execute(
        "UPDATE lots SET readings = ?, sum_pct = ?, min_pct = ?, max_pct = ?, last_pct = ?,"
        " last_pct_ns = ? WHERE id = ?",
        (
            int(n),
            float(total),
            lo,
            hi,
            None if last is None else last[0],
            None if last is None else last[1],
            lot_id,
        ),
    )


def _event(
    conn: sqlite3.Connection,
    lot_id: int,
    ident: str,
    at_ns: int,
    kind: str,
    text: str,
    *,
    by: str,
    source: str,
    data: Mapping[str, str | float | int | bool],
) -> None:
    conn.execute(
        "INSERT INTO events (lot_id, ident, ts_ns, kind, text, by, source, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            lot_id,
            ident,
            at_ns,
            kind,
            text[:700],
            by,
            source,
            json.dumps(dict(data), ensure_ascii=False, sort_keys=True),
        ),
    )


def move_reading(
    conn: sqlite3.Connection,
    request: MoveRequest,
    *,
    from_lot: str | None,
    by: str,
    source: str,
    at_ns: int,
) -> Move:
    """Move a reading to ``request.to``, inside the caller's write transaction.

    Args:
        conn: The lot record store's write connection, in a transaction.
        request: Which reading, where to, why.
        from_lot: The lot the caller believes the reading is in (the page's lot): the
            move is refused if it is elsewhere now. ``None``: wherever it is.
        by: Who (checked here).
        source: ``cli`` or ``web:<user>``.
        at_ns: Now.

    Raises:
        LotError: Unknown reading, not in ``from_lot``, already in ``to``, bad ``by``;
            nothing is written.
    """
    by = check_by(by)
    rid = reading_id(request.device, request.seq)
    found = _find(conn, request.device, request.seq, from_lot)
    if found is None:
        raise LotError(f"no moisture reading {rid} in any lot's record")
    orig, cur, reading_ts, station, value = found
    cur_code = str(conn.execute("SELECT code FROM lots WHERE id = ?", (cur,)).fetchone()[0])
    if from_lot is not None and cur_code != from_lot:
        raise LotError(f"reading {rid} is in lot {cur_code}, not {from_lot}")
    if cur_code == request.to:
        raise LotError(f"reading {rid} is already in lot {request.to}")
    to_id = _lot_id(conn, request.to, at_ns)
    move_id = int(
        conn.execute(
            "INSERT INTO reading_moves (device, seq, orig_lot, from_lot, to_lot, ts_ns, by,"
            " source, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (request.device, request.seq, orig, cur, to_id, at_ns, by, source, request.reason),
        ).lastrowid
        or 0
    )
    data: dict[str, str | float | int | bool] = {
        "reading": rid,
        "device": request.device,
        "seq": request.seq,
        "from": cur_code,
        "to": request.to,
        "reason": request.reason,
        "moisture_pct": value,
        "reading_ts_ns": reading_ts,
    }
    what = f"reading {rid} ({value:g} %)"
    _event(
        conn,
        cur,
        f"lotrec:move:{move_id}:out",
        at_ns,
        "moved_out",
        f"{what} moved to lot {request.to} by {by}: {request.reason}",
        by=by,
        source=source,
        data=data,
    )
    _event(
        conn,
        to_id,
        f"lotrec:move:{move_id}:in",
        at_ns,
        "moved_in",
        f"{what} moved here from lot {cur_code} by {by}: {request.reason}",
        by=by,
        source=source,
        data=data,
    )
    conn.execute(
        "UPDATE lots SET first_ns = MIN(first_ns, ?), last_ns = MAX(last_ns, ?) WHERE id = ?",
        (reading_ts, reading_ts, to_id),
    )
    conn.execute(
        "INSERT OR IGNORE INTO lot_devices (lot_id, device, station) VALUES (?, ?, ?)",
        (to_id, request.device, station),
    )
    recompute_summary(conn, cur)
    recompute_summary(conn, to_id)
    return Move(
        id=move_id,
        device=request.device,
        seq=request.seq,
        from_lot=cur_code,
        to_lot=request.to,
        moisture_pct=value,
        reading_ts_ns=reading_ts,
        at_ns=at_ns,
        by=by,
        source=source,
        reason=request.reason,
    )


def moves_of(conn: sqlite3.Connection, lot_id: int) -> list[Move]:
    """Every move into or out of the lot, oldest first."""
    rows = conn.execute(
        "SELECT m.id, m.device, m.seq, f.code, t.code, r.moisture_pct, r.ts_ns, m.ts_ns, m.by,"
        " m.source, m.reason FROM reading_moves m JOIN lots f ON f.id = m.from_lot"
        " JOIN lots t ON t.id = m.to_lot LEFT JOIN readings r ON r.lot_id = m.orig_lot"
        " AND r.device = m.device AND r.seq = m.seq WHERE m.from_lot = ? OR m.to_lot = ?"
        " ORDER BY m.id",
        (lot_id, lot_id),
    ).fetchall()
    return [
        Move(
            id=int(row[0]),
            device=str(row[1]),
            seq=int(row[2]),
            from_lot=str(row[3]),
            to_lot=str(row[4]),
            moisture_pct=float(row[5]) if row[5] is not None else float("nan"),
            reading_ts_ns=int(row[6]) if row[6] is not None else 0,
            at_ns=int(row[7]),
            by=str(row[8]),
            source=str(row[9]),
            reason=str(row[10]),
        )
        for row in rows
    ]


# -- retention ----------------------------------------------------------------------------


def prune_keep(conn: sqlite3.Connection, old: Sequence[int]) -> list[int]:
    """Of the lots ``old`` (past retention), those that may go.

    None linked by a move to a lot that stays may: the moved reading's row lives under
    the lot it was recorded in.
    """
    gone = set(old)
    if not gone:
        return []
    links: dict[int, set[int]] = {}
    for a, b, c in conn.execute("SELECT orig_lot, from_lot, to_lot FROM reading_moves"):
        group = {int(a), int(b), int(c)}
        for lot in group:
            links.setdefault(lot, set()).update(group)
    changed = True
    while changed:
        changed = False
        for lot in list(gone):
            if any(other not in gone for other in links.get(lot, ())):
                gone.discard(lot)
                changed = True
    return sorted(gone)


def forget_lots(conn: sqlite3.Connection, lots: Sequence[int]) -> None:
    """Delete the moves and blend sources of lots being deleted whole."""
    conn.executemany(
        "DELETE FROM reading_moves WHERE orig_lot = ? OR from_lot = ? OR to_lot = ?",
        [(i, i, i) for i in lots],
    )
    conn.executemany("DELETE FROM lot_blends WHERE blend_lot = ?", [(i,) for i in lots])


# -- in the agent -------------------------------------------------------------------------


#: Runs a function in one write transaction of the lot record store, on its thread.
Writer = Callable[[Callable[[sqlite3.Connection], Move]], Awaitable[Move]]


class MoveCommands:
    """``cmd/lotmove/<lot>``: move a reading of ``<lot>`` to another lot (a dashboard user).

    Args:
        write: Runs a function in one write transaction of the lot record store
            (``records.AsyncLotRecords.call`` of ``LotRecords.write_with``).
        clock_ns: Wall clock.
    """

    def __init__(self, write: Writer, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._write = write
        self._clock_ns = clock_ns

    async def handle_command(self, cmd: Command) -> dict[str, object]:
        """The reply document of a move.

        Raises:
            CommandRefused: Not from a logged-in person, a bad lot, reading, target or
                reason, or a reading not in that lot; nothing is written.
        """
        if len(cmd.path) != 2 or cmd.path[0] != MOVE_COMMAND:
            raise CommandRefused(f"expected cmd/{MOVE_COMMAND}/<lot>")
        if not cmd.source.startswith(_PERSON_SOURCES):
            raise CommandRefused(
                "moving a reading needs a person logged in to the dashboard (or the CLI)"
            )
        try:
            from_lot = validate_lot(cmd.path[1])
            request = parse_move(cmd.doc)
            at_ns = self._clock_ns()
            move = await self._write(
                lambda conn: move_reading(
                    conn, request, from_lot=from_lot, by=cmd.by, source=cmd.source, at_ns=at_ns
                )
            )
        except LotError as exc:
            raise CommandRefused(str(exc)) from None
        return {
            "reading": reading_id(move.device, move.seq),
            "from": move.from_lot,
            "to": move.to_lot,
            "by": move.by,
            "reason": move.reason,
            "at_ns": move.at_ns,
        }
