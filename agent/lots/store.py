"""Lot codes: what a valid one looks like.

Lot codes reach us from printed tickets, from operators (MQTT commands, the
CLI, the dashboard) and end up in MQTT payloads, InfluxDB tags and web pages.
One rule for all of them: 1 to 32 characters, letters and digits, and ``-``,
``_``, ``.``, ``/`` inside. No spaces, no quotes, no control characters, so a
lot code can never break out of a tag, a topic or a page.

A station works on one lot at a time: warehouse staff set it (MQTT command
``<prefix>/<site>/cmd/lot/<station>``, ``coffee-telemetry lot set``), and
moisture readings and weighments of the station's devices carry it unless the
device printed a lot of its own. ``LotStore`` keeps the active lots and their
history on disk, so a restart keeps them.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coffee_telemetry.agent.commands import check_by as check_claimed_by
from coffee_telemetry.agent.errors import CommandRefused
from coffee_telemetry.agent.errors import LotError as LotError
from coffee_telemetry.agent.sqlite import MigrationStep, connect, migrate, script

LOT_MAX_LEN = 32
_LOT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,30}[A-Za-z0-9])?")


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


# -- active lots per station ------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS active_lots (
    station TEXT PRIMARY KEY,
    lot TEXT NOT NULL,
    set_at_ns INTEGER NOT NULL,
    set_by TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lot_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    station TEXT NOT NULL,
    lot TEXT,
    at_ns INTEGER NOT NULL,
    by TEXT NOT NULL,
    source TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
"""


#: ``STEPS[i]`` takes the store from schema version ``i`` to ``i + 1`` (``agent.sqlite``).
#: Append a step for every change; never edit one a release has shipped.
STEPS: tuple[MigrationStep, ...] = (script(_SCHEMA),)


def _create_schema(conn: sqlite3.Connection) -> None:
    migrate(conn, STEPS, name="lots")


@dataclass(frozen=True, slots=True)
class ActiveLot:
    """The lot a station works on now.

    Attributes:
        station: Station id (as in the config).
        lot: Validated lot code.
        set_at_ns: When it was set.
        set_by: Who set it (operator name, or the MQTT client's claim).
        source: ``cli``, ``mqtt``, ``web:<user>`` or ``token`` (see ``agent.commands``).
    """

    station: str
    lot: str
    set_at_ns: int
    set_by: str
    source: str


@dataclass(frozen=True, slots=True)
class LotChange:
    """One set or clear, as recorded in the history (``lot`` is None on a clear)."""

    id: int
    station: str
    lot: str | None
    at_ns: int
    by: str
    source: str


def check_by(by: str) -> str:
    """Who set a lot, checked by the one rule for ``by`` (``agent.commands.check_by``).

    Raises:
        LotError: Empty after stripping, too long, or with control characters.
    """
    try:
        return check_claimed_by(by)
    except CommandRefused as exc:
        raise LotError(f"who set the lot: {exc.reason}") from None


class LotStore:
    """Active lot per station, and the history of changes, in SQLite (WAL, ``agent.sqlite``).

    Used by the agent and, concurrently, by ``coffee-telemetry lot`` in another
    process. Every change is one transaction: the active row and a history row
    (marked unpublished until the agent has sent it as a ``lot_assignment``
    event).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> LotStore:
        """Open or create the store.

        Raises:
            LotError: The database cannot be opened.
        """
        try:
            conn = connect(path, prepare=_create_schema)
        except (sqlite3.Error, OSError) as exc:
            raise LotError(f"cannot open the lot store {path}: {exc}") from exc
        return cls(conn, path)

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def set(self, station: str, lot: str, *, by: str, source: str, at_ns: int) -> ActiveLot:
        """Make ``lot`` the station's active lot (validated first; nothing written if bad).

        Raises:
            LotError: The lot code or ``by`` is invalid.
        """
        code = validate_lot(lot)
        who = check_by(by)
        with self._conn:
            self._conn.execute(
                "INSERT INTO active_lots (station, lot, set_at_ns, set_by, source)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (station) DO UPDATE SET lot = excluded.lot,"
                " set_at_ns = excluded.set_at_ns, set_by = excluded.set_by,"
                " source = excluded.source",
                (station, code, at_ns, who, source),
            )
            self._conn.execute(
                "INSERT INTO lot_history (station, lot, at_ns, by, source) VALUES (?, ?, ?, ?, ?)",
                (station, code, at_ns, who, source),
            )
        return ActiveLot(station=station, lot=code, set_at_ns=at_ns, set_by=who, source=source)

    def clear(self, station: str, *, by: str, source: str, at_ns: int) -> bool:
        """End the station's active lot; returns whether there was one.

        Raises:
            LotError: ``by`` is invalid.
        """
        who = check_by(by)
        with self._conn:
            gone = self._conn.execute("DELETE FROM active_lots WHERE station = ?", (station,))
            if gone.rowcount:
                self._conn.execute(
                    "INSERT INTO lot_history (station, lot, at_ns, by, source)"
                    " VALUES (?, NULL, ?, ?, ?)",
                    (station, at_ns, who, source),
                )
        return bool(gone.rowcount)

    def active(self) -> dict[str, ActiveLot]:
        """Every station's active lot."""
        return {
            str(st): ActiveLot(
                station=str(st), lot=str(lot), set_at_ns=int(at), set_by=str(by), source=str(src)
            )
            for st, lot, at, by, src in self._conn.execute(
                "SELECT station, lot, set_at_ns, set_by, source FROM active_lots"
            )
        }

    def unpublished(self, limit: int = 100) -> list[LotChange]:
        """History rows not yet sent as events, oldest first."""
        return [
            LotChange(
                id=int(i),
                station=str(st),
                lot=None if lot is None else str(lot),
                at_ns=int(at),
                by=str(by),
                source=str(src),
            )
            for i, st, lot, at, by, src in self._conn.execute(
                "SELECT id, station, lot, at_ns, by, source FROM lot_history"
                " WHERE published = 0 ORDER BY id LIMIT ?",
                (limit,),
            )
        ]

    def mark_published(self, ids: Sequence[int]) -> None:
        """Note that these history rows reached the outbox."""
        with self._conn:
            self._conn.executemany(
                "UPDATE lot_history SET published = 1 WHERE id = ?", [(i,) for i in ids]
            )

    def data_version(self) -> int:
        """Changes when another connection commits (cheap change detection)."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
