"""Lot records: everything the agent saw of each lot, kept for years.

Theory of operation
-------------------
A lot's record is written from the outbox, as a sink is: ``LotRecordSink`` is one
more destination with its own cursor (``agent.outbox.delivery``), so it gets every
record the accept stage committed, in id order, after the outbox has it on disk.
That is what makes the record complete:

* a record is deleted from the outbox only once every sink, this one too, has it;
  a crash (``kill -9``) between a commit and the lot store's write only means the
  records after the last saved cursor come again at the next start;
* they are written at most once: a reading's identity is ``(device, seq)``, and
  every row of a lot's readings, weighments and outbox-made events is keyed by it
  (``INSERT OR IGNORE``), so a record delivered twice is one row; the summary
  counters move only with rows actually inserted;
* provisional readings (no trusted time yet) are held back from every sink until
  they are re-stamped (``agent.timekeeping``), so the record only ever holds their
  final time.

What a record takes from the outbox, by ``measurement``:

==================  =====================================================
``moisture``        with a ``lot`` tag: a ``LotReading``
``weighment``       with a ``lot`` tag: a ``LotWeighment``
``lot_assignment``  a station's lot set (``assigned``) or cleared (``cleared``:
                    the lot is the station's last assigned one)
``alert``           of a wet-lot rule (subject = the lot code): ``alert``,
                    ``ack`` or ``resolved``; the lot's open alerts follow
==================  =====================================================

Everything else is acknowledged and skipped. Lot details (producer, bags, product
type, note) are written here directly, by the ``lotinfo`` command (MQTT, web) and
``coffee-telemetry lot info`` (another process: SQLite WAL, ``busy_timeout``), each
change a ``details`` event of the lot's timeline.

The database (``data_dir/lots-records.sqlite3``) fsyncs every commit
(``synchronous=FULL``): the outbox may delete what it handed over once the cursor
moves, so what was handed over must be on disk first. Writes come in batches (up to
``BATCH`` records or one second, the sink's ``flush_interval_s``), one transaction
each. Retention is by the lot's last activity: a lot not seen for
``retention_years`` (5) is deleted whole, once a day; raw history's retention and
disk bound never touch it.

Size: a reading row costs about 85 bytes plus its ticket text (measured in
``bench/lots.py``; the README's "Lotes" section has the sizing rule).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from coffee_telemetry.agent.commands import Command, CommandHandler, CommandRefused
from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.errors import LotError, SinkUnavailable
from coffee_telemetry.agent.evidence.meters import STEP as METER_STEP
from coffee_telemetry.agent.evidence.meters import (
    configured_records,
    forget_oven,
    load_meter_evidence,
    record_calibrations,
)
from coffee_telemetry.agent.lots import corrections
from coffee_telemetry.agent.lots.model import (
    PRODUCT_TYPES,
    EventKind,
    LotDetails,
    LotEvent,
    LotReading,
    LotRecord,
    LotSummary,
    LotWeighment,
    Verdict,
)
from coffee_telemetry.agent.lots.store import validate_lot
from coffee_telemetry.agent.lots.tables import (
    READINESS_SCHEMA,
    RECEIPT_SCHEMA,
    load_drying,
    load_hulled_bags,
    load_receipt,
    take_huller,
)
from coffee_telemetry.agent.outbox.sink import Record, Rejection
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.sqlite import (
    StoreThread,
    ThreadedStore,
    connect,
    connect_read_only,
    migrate,
    open_on_thread,
    script,
)

__all__ = [
    "DETAILS_COMMAND",
    "NOTE_MAX_LEN",
    "PRODUCER_MAX_LEN",
    "SINK_NAME",
    "AsyncLotRecords",
    "DetailsChange",
    "LotQuery",
    "LotRecordSink",
    "LotRecords",
    "Thresholds",
    "configured_thresholds",
    "details_doc",
    "open_configured_lot_records",
    "open_lot_records",
    "parse_details",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

NS = 1_000_000_000
YEAR_NS = 365 * 86_400 * NS

#: The sink's name: its outbox cursor, its health entry.
SINK_NAME = "lot_records"
#: The command that sets a lot's details: ``cmd/lotinfo/<lot code, escaped>``.
DETAILS_COMMAND = "lotinfo"
#: Records handed over in one batch (one transaction).
BATCH = 1000
#: Longest producer name or code, and longest note (characters).
PRODUCER_MAX_LEN = 200
NOTE_MAX_LEN = 500
#: Most declared bags a lot may have.
BAGS_MAX = 1_000_000
#: Longest search string, and most lots per page.
QUERY_MAX_LEN = 64
PER_PAGE_MAX = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lots (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    product TEXT NOT NULL DEFAULT '',
    readings INTEGER NOT NULL DEFAULT 0,
    sum_pct REAL NOT NULL DEFAULT 0,
    min_pct REAL,
    max_pct REAL,
    last_pct REAL,
    last_pct_ns INTEGER,
    weighments INTEGER NOT NULL DEFAULT 0,
    net_kg REAL NOT NULL DEFAULT 0,
    open_alerts INTEGER NOT NULL DEFAULT 0,
    producer TEXT,
    bags INTEGER,
    product_type TEXT,
    note TEXT,
    details_by TEXT NOT NULL DEFAULT '',
    details_ns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS lots_last ON lots (last_ns);
CREATE TABLE IF NOT EXISTS lot_devices (
    lot_id INTEGER NOT NULL,
    device TEXT NOT NULL,
    station TEXT NOT NULL,
    PRIMARY KEY (lot_id, device, station)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS readings (
    lot_id INTEGER NOT NULL,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    station TEXT NOT NULL,
    moisture_pct REAL NOT NULL,
    temperature_c REAL,
    sample_id TEXT,
    audit TEXT,
    time_quality TEXT NOT NULL,
    PRIMARY KEY (lot_id, device, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS weighments (
    lot_id INTEGER NOT NULL,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    station TEXT NOT NULL,
    gross_kg REAL NOT NULL,
    tare_kg REAL NOT NULL,
    net_kg REAL NOT NULL,
    trigger TEXT NOT NULL,
    PRIMARY KEY (lot_id, device, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    lot_id INTEGER NOT NULL,
    ident TEXT UNIQUE,
    ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    by TEXT NOT NULL,
    source TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_lot ON events (lot_id, ts_ns);
CREATE TABLE IF NOT EXISTS station_lots (
    station TEXT PRIMARY KEY,
    lot_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lot_alerts (
    lot_id INTEGER NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (lot_id, rule)
) WITHOUT ROWID;
"""

_OPEN_STATES = frozenset({"pending", "firing", "acknowledged"})
_ALERT_KINDS: Mapping[str, EventKind] = {
    "pending": "alert",
    "firing": "alert",
    "acknowledged": "ack",
    "resolved": "resolved",
}


# -- the wet-lot threshold ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The wet-lot threshold per product (``[alerts.wet_lot]``), for verdicts.

    Attributes:
        default_pct: For a product not named.
        by_product: Per product (case-insensitive).
        rules: Alert rules whose subjects are lot codes.
    """

    default_pct: float = 13.0
    by_product: Mapping[str, float] | None = None
    rules: frozenset[str] = frozenset({"wet_lot"})

    def for_product(self, product: str) -> float:
        """The threshold (%) for ``product``."""
        table = {k.casefold(): v for k, v in (self.by_product or {}).items()}
        return table.get(product.casefold(), self.default_pct)

    def sql(self) -> tuple[str, list[object]]:
        """A SQL expression of a ``lots`` row's threshold, and its parameters."""
        if not self.by_product:
            return "?", [self.default_pct]
        parts, params = ["CASE lower(product)"], list[object]()
        for product, pct in self.by_product.items():
            parts.append("WHEN ? THEN ?")
            params += [product.casefold(), pct]
        parts.append("ELSE ? END")
        params.append(self.default_pct)
        return " ".join(parts), params


def _verdict(readings: int, max_pct: float | None, threshold: float) -> Verdict:
    if readings == 0 or max_pct is None:
        return "none"
    return "wet" if max_pct >= threshold else "ok"


# -- details ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetailsChange:
    """A validated change of a lot's details: only the keys given change (``None`` clears).

    Attributes:
        values: ``producer``, ``bags``, ``product_type``, ``note``: what to set.
    """

    values: Mapping[str, str | int | None]


def _bad_text(text: str) -> bool:
    # Control characters (C0, DEL, C1), line/paragraph separators, BOM, lone surrogates.
    return any(
        ch < " "
        or "\x7f" <= ch <= "\x9f"
        or ch in "\u2028\u2029\ufeff"
        or "\ud800" <= ch <= "\udfff"
        for ch in text
    )


def _text(doc: Mapping[str, object], key: str, max_len: int) -> str | None:
    value = doc[key]
    if value is None:
        return None
    if not isinstance(value, str):
        raise LotError(f"{key} must be text or null")
    value = value.strip()
    if _bad_text(value):
        raise LotError(f"{key} has a control character")
    if len(value) > max_len:
        raise LotError(f"{key} is longer than {max_len} characters")
    return value or None


def parse_details(doc: Mapping[str, object]) -> DetailsChange:
    """Validate a details change (a command's payload, the CLI's options).

    Keys: ``producer`` (up to ``PRODUCER_MAX_LEN`` characters), ``bags`` (a whole
    number from 0 to ``BAGS_MAX``), ``product_type`` (one of ``PRODUCT_TYPES``),
    ``note`` (up to ``NOTE_MAX_LEN``); each may be ``null`` to clear it. ``by`` is
    ignored here (the boundary checked it); any other key is refused.

    Raises:
        LotError: What is wrong, for the sender; nothing is written.
    """
    unknown = sorted(k for k in doc if k not in ("producer", "bags", "product_type", "note", "by"))
    if unknown:
        raise LotError(f"unknown key {unknown[0][:40]!r} (producer, bags, product_type, note)")
    values: dict[str, str | int | None] = {}
    if "producer" in doc:
        values["producer"] = _text(doc, "producer", PRODUCER_MAX_LEN)
    if "note" in doc:
        values["note"] = _text(doc, "note", NOTE_MAX_LEN)
    if "bags" in doc:
        bags = doc["bags"]
        if bags is not None and (
            isinstance(bags, bool) or not isinstance(bags, int) or not 0 <= bags <= BAGS_MAX
        ):
            raise LotError(f"bags must be a whole number from 0 to {BAGS_MAX}, or null")
        values["bags"] = bags
    if "product_type" in doc:
        kind = doc["product_type"]
        if kind is not None and (not isinstance(kind, str) or kind.strip() not in PRODUCT_TYPES):
            raise LotError(f"product_type must be one of {', '.join(PRODUCT_TYPES)}, or null")
        values["product_type"] = None if kind is None else kind.strip()
    if not values:
        raise LotError("nothing to change (producer, bags, product_type, note)")
    return DetailsChange(values)


# -- queries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LotQuery:
    """A search of the lots (the Lotes page).

    Attributes:
        q: Part of the lot code (case-insensitive).
        producer: Part of the producer (case-insensitive).
        from_ns: Lots seen at or after this time.
        to_ns: Lots seen at or before this time.
        verdict: Only lots with this verdict.
        page: 1-based page.
        per_page: Lots per page.
    """

    q: str = ""
    producer: str = ""
    from_ns: int | None = None
    to_ns: int | None = None
    verdict: Verdict | None = None
    page: int = 1
    per_page: int = 50


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_SUMMARY_COLS = (
    "id, code, first_ns, last_ns, product, readings, sum_pct, min_pct, max_pct, last_pct,"
    " weighments, net_kg, open_alerts, producer"
)


# -- the store ----------------------------------------------------------------------------


class LotRecords:
    """The lot record store (see the module docstring).

    Writes (``write``, ``set_details``, ``prune``) take one lock; queries use a
    separate read connection behind another, so they can be called from any thread.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        reader: sqlite3.Connection,
        *,
        path: Path,
        thresholds: Thresholds,
        retention_years: float,
    ) -> None:
        self._conn = conn
        self._reader = reader
        self.path = path
        self.thresholds = thresholds
        self._retention_ns = int(retention_years * YEAR_NS)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        thresholds: Thresholds | None = None,
        retention_years: float = 5.0,
    ) -> LotRecords:
        """Open (creating if needed) the store at ``path``.

        Raises:
            LotError: The database cannot be opened.
        """
        try:
            conn = connect(path, synchronous="full", prepare=_prepare, isolation_level="IMMEDIATE")
            try:
                reader = connect_read_only(path)
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            raise LotError(f"cannot open the lot records {path}: {exc}") from exc
        return cls(
            conn,
            reader,
            path=path,
            thresholds=thresholds or Thresholds(),
            retention_years=retention_years,
        )

    def close(self) -> None:
        """Close the database (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with self._read_lock:
            self._reader.close()
        with self._write_lock:
            self._conn.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The write connection (bulk loads in ``bench/lots.py``; not for the agent)."""
        return self._conn

    def write_with(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction (modules with tables of their own here)."""
        with self._write_lock, self._conn as conn:
            return fn(conn)

    def read_with(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the read connection, in one read transaction."""
        with self._snapshot() as conn:
            return fn(conn)

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """The read connection, in one read transaction (a consistent view)."""
        with self._read_lock:
            conn = self._reader
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    # -- writing from the outbox --------------------------------------------------------

    def write(self, readings: Iterable[Reading]) -> int:
        """Take a batch of outbox records into the lots' records, in one transaction.

        Returns:
            Rows inserted (readings, weighments and events; repeats are not).
        """
        inserted = 0
        with self._write_lock, self._conn as conn:
            ids: dict[str, int] = {}
            for reading in readings:
                inserted += self._take(conn, ids, reading)
        return inserted

    def _lot_id(self, conn: sqlite3.Connection, ids: dict[str, int], code: str, ts: int) -> int:
        lot_id = ids.get(code)
        if lot_id is None:
            conn.execute(
                "INSERT OR IGNORE INTO lots (code, first_ns, last_ns) VALUES (?, ?, ?)",
                (code, ts, ts),
            )
            lot_id = int(conn.execute("SELECT id FROM lots WHERE code = ?", (code,)).fetchone()[0])
            ids[code] = lot_id
        return lot_id

    def _seen(
        self, conn: sqlite3.Connection, lot_id: int, ts: int, device: str, station: str
    ) -> None:
        conn.execute(
            "UPDATE lots SET first_ns = MIN(first_ns, ?), last_ns = MAX(last_ns, ?) WHERE id = ?",
            (ts, ts, lot_id),
        )
        conn.execute(
            "INSERT OR IGNORE INTO lot_devices (lot_id, device, station) VALUES (?, ?, ?)",
            (lot_id, device, station),
        )

    def _take(self, conn: sqlite3.Connection, ids: dict[str, int], r: Reading) -> int:
        meas = r.measurement
        if meas == "moisture":
            return self._take_moisture(conn, ids, r)
        if meas == "weighment":
            return self._take_weighment(conn, ids, r)
        if meas == "lot_assignment":
            return self._take_assignment(conn, ids, r)
        if meas == "alert" and r.tags.get("rule") in self.thresholds.rules:
            return self._take_alert(conn, ids, r)
        if meas == "huller":  # bags credited to the lot active at the huller's station
            return take_huller(conn, r)
        return 0

    def _code(self, r: Reading) -> str | None:
        code = r.tags.get("lot")
        if not code:
            return None
        try:
            return validate_lot(code)
        except LotError:
            return None  # a lot tag the agent wrote is valid; never stop on one that is not

    def _take_moisture(self, conn: sqlite3.Connection, ids: dict[str, int], r: Reading) -> int:
        code = self._code(r)
        value = _number(r.fields.get("moisture_pct"))
        if code is None or value is None:
            return 0
        lot_id = self._lot_id(conn, ids, code, r.ts_ns)
        station = r.tags.get("station", "")
        sample = r.fields.get("sample_id")
        cur = conn.execute(
            "INSERT OR IGNORE INTO readings (lot_id, device, seq, ts_ns, station, moisture_pct,"
            " temperature_c, sample_id, audit, time_quality, calibration)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                lot_id,
                r.device,
                r.seq,
                r.ts_ns,
                station,
                value,
                _number(r.fields.get("temperature_c")),
                None if sample is None else str(sample),
                r.audit,
                r.time_quality,
                _calibration(r),
            ),
        )
        if cur.rowcount != 1:
            return 0
        self._seen(conn, lot_id, r.ts_ns, r.device, station)
        conn.execute(
            "UPDATE lots SET readings = readings + 1, sum_pct = sum_pct + ?,"
            " min_pct = MIN(COALESCE(min_pct, ?), ?), max_pct = MAX(COALESCE(max_pct, ?), ?),"
            " last_pct = CASE WHEN last_pct_ns IS NULL OR ? >= last_pct_ns THEN ?"
            " ELSE last_pct END,"
            " last_pct_ns = MAX(COALESCE(last_pct_ns, ?), ?),"
            " product = CASE WHEN ? != '' THEN ? ELSE product END WHERE id = ?",
            (
                value,
                value,
                value,
                value,
                value,
                r.ts_ns,
                value,
                r.ts_ns,
                r.ts_ns,
                r.tags.get("product", ""),
                r.tags.get("product", ""),
                lot_id,
            ),
        )
        return 1

    def _take_weighment(self, conn: sqlite3.Connection, ids: dict[str, int], r: Reading) -> int:
        code = self._code(r)
        weight = _number(r.fields.get("weight_kg"))
        if code is None or weight is None:
            return 0
        tare = _number(r.fields.get("tare_kg")) or 0.0
        if r.fields.get("net") is True:
            net, gross = weight, weight + tare
        else:
            net, gross = weight - tare, weight
        lot_id = self._lot_id(conn, ids, code, r.ts_ns)
        station = r.tags.get("station", "")
        cur = conn.execute(
            "INSERT OR IGNORE INTO weighments (lot_id, device, seq, ts_ns, station, gross_kg,"
            " tare_kg, net_kg, trigger) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                lot_id,
                r.device,
                r.seq,
                r.ts_ns,
                station,
                gross,
                tare,
                net,
                str(r.tags.get("trigger", r.fields.get("trigger", ""))),
            ),
        )
        if cur.rowcount != 1:
            return 0
        self._seen(conn, lot_id, r.ts_ns, r.device, station)
        conn.execute(
            "UPDATE lots SET weighments = weighments + 1, net_kg = net_kg + ?,"
            " product = CASE WHEN ? != '' THEN ? ELSE product END WHERE id = ?",
            (net, r.tags.get("product", ""), r.tags.get("product", ""), lot_id),
        )
        return 1

    def _event(
        self,
        conn: sqlite3.Connection,
        lot_id: int,
        ident: str | None,
        ts_ns: int,
        kind: EventKind,
        text: str,
        *,
        by: str = "",
        source: str = "",
        data: Mapping[str, str | float | int | bool] | None = None,
    ) -> int:
        cur = conn.execute(
            "INSERT OR IGNORE INTO events (lot_id, ident, ts_ns, kind, text, by, source, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                lot_id,
                ident,
                ts_ns,
                kind,
                text,
                by,
                source,
                json.dumps(dict(data or {}), ensure_ascii=False, sort_keys=True),
            ),
        )
        if cur.rowcount == 1 and kind != "details":  # an edit is not a sighting
            conn.execute(
                "UPDATE lots SET first_ns = MIN(first_ns, ?), last_ns = MAX(last_ns, ?)"
                " WHERE id = ?",
                (ts_ns, ts_ns, lot_id),
            )
        return max(cur.rowcount, 0)

    def _take_assignment(self, conn: sqlite3.Connection, ids: dict[str, int], r: Reading) -> int:
        station = r.tags.get("station", "")
        by, source = str(r.fields.get("by", "")), str(r.fields.get("source", ""))
        ident = f"{r.device}:{r.seq}"
        if r.fields.get("action") == "clear":
            row = conn.execute(
                "SELECT lot_id FROM station_lots WHERE station = ?", (station,)
            ).fetchone()
            if row is None:
                return 0
            conn.execute("DELETE FROM station_lots WHERE station = ?", (station,))
            return self._event(
                conn,
                int(row[0]),
                ident,
                r.ts_ns,
                "cleared",
                f"lot cleared from station {station} by {by}",
                by=by,
                source=source,
                data={"station": station},
            )
        code = self._code(r)
        if code is None:
            return 0
        lot_id = self._lot_id(conn, ids, code, r.ts_ns)
        conn.execute(
            "INSERT INTO station_lots (station, lot_id) VALUES (?, ?)"
            " ON CONFLICT (station) DO UPDATE SET lot_id = excluded.lot_id",
            (station, lot_id),
        )
        return self._event(
            conn,
            lot_id,
            ident,
            r.ts_ns,
            "assigned",
            f"lot set on station {station} by {by}",
            by=by,
            source=source,
            data={"station": station},
        )

    def _take_alert(self, conn: sqlite3.Connection, ids: dict[str, int], r: Reading) -> int:
        subject, rule, state = r.tags.get("subject", ""), r.tags["rule"], r.tags.get("state", "")
        kind = _ALERT_KINDS.get(state)
        try:
            code = validate_lot(subject)
        except LotError:
            return 0
        if kind is None:
            return 0
        lot_id = self._lot_id(conn, ids, code, r.ts_ns)
        data: dict[str, str | float | int | bool] = {"rule": rule, "state": state}
        for key, value in r.fields.items():
            if key in ("message", "severity", "value", "threshold", "mean", "readings"):
                data[key] = value
        by = str(r.fields.get("acked_by", "")) if kind == "ack" else "agent"
        added = self._event(
            conn,
            lot_id,
            f"{r.device}:{r.seq}",
            r.ts_ns,
            kind,
            str(r.fields.get("message", f"{rule} {state}"))[:500],
            by=by,
            source="rules",
            data=data,
        )
        if added:
            if state in _OPEN_STATES:
                conn.execute(
                    "INSERT INTO lot_alerts (lot_id, rule, state) VALUES (?, ?, ?)"
                    " ON CONFLICT (lot_id, rule) DO UPDATE SET state = excluded.state",
                    (lot_id, rule, state),
                )
            else:
                conn.execute("DELETE FROM lot_alerts WHERE lot_id = ? AND rule = ?", (lot_id, rule))
            conn.execute(
                "UPDATE lots SET open_alerts = (SELECT COUNT(*) FROM lot_alerts WHERE lot_id = ?)"
                " WHERE id = ?",
                (lot_id, lot_id),
            )
        return added

    # -- details ------------------------------------------------------------------------

    def set_details(
        self, code: str, change: DetailsChange, *, by: str, source: str, at_ns: int
    ) -> LotDetails:
        """Change a lot's details (creating its record if it was never seen); one event.

        Raises:
            LotError: A bad lot code; nothing is written.
        """
        code = validate_lot(code)
        values = change.values
        with self._write_lock, self._conn as conn:
            lot_id = self._lot_id(conn, {}, code, at_ns)
            sets = ", ".join(f"{key} = ?" for key in values)
            conn.execute(
                f"UPDATE lots SET {sets}, details_by = ?, details_ns = ? WHERE id = ?",
                (*values.values(), by, at_ns, lot_id),
            )
            shown = ", ".join(f"{k}={'' if v is None else v}" for k, v in values.items())
            data = {k: ("" if v is None else v) for k, v in values.items()}
            self._event(
                conn,
                lot_id,
                None,
                at_ns,
                "details",
                f"details changed by {by}: {shown}"[:700],
                by=by,
                source=source,
                data=data,
            )
            row = conn.execute(
                "SELECT producer, bags, product_type, note, details_by, details_ns FROM lots"
                " WHERE id = ?",
                (lot_id,),
            ).fetchone()
        return _details(row)

    # -- retention ----------------------------------------------------------------------

    def prune(self, now_ns: int) -> int:
        """Delete lots not seen for ``retention_years``; returns how many."""
        cutoff = now_ns - self._retention_ns
        with self._write_lock, self._conn as conn:
            old = [
                int(r[0]) for r in conn.execute("SELECT id FROM lots WHERE last_ns < ?", (cutoff,))
            ]
            old = corrections.prune_keep(conn, old)  # lots linked by a move go together
            corrections.forget_lots(conn, old)
            forget_oven(conn, old)
            for table in ("readings", "weighments", "events", "lot_devices", "lot_alerts"):
                conn.executemany(f"DELETE FROM {table} WHERE lot_id = ?", [(i,) for i in old])
            conn.executemany("DELETE FROM station_lots WHERE lot_id = ?", [(i,) for i in old])
            conn.executemany("DELETE FROM lots WHERE id = ?", [(i,) for i in old])
        return len(old)

    # -- reading ------------------------------------------------------------------------

    def search(self, query: LotQuery) -> tuple[list[LotSummary], int]:
        """The lots matching ``query``, most recently seen first, and how many match."""
        where, params = ["1"], list[object]()
        if query.q:
            where.append("code LIKE ? ESCAPE '\\'")
            params.append(_like(query.q))
        if query.producer:
            where.append("producer LIKE ? ESCAPE '\\'")
            params.append(_like(query.producer))
        if query.from_ns is not None:
            where.append("last_ns >= ?")
            params.append(query.from_ns)
        if query.to_ns is not None:
            where.append("first_ns <= ?")
            params.append(query.to_ns)
        if query.verdict is not None:
            threshold, tparams = self.thresholds.sql()
            if query.verdict == "none":
                where.append("readings = 0")
            else:
                op = ">=" if query.verdict == "wet" else "<"
                where.append(f"readings > 0 AND max_pct {op} {threshold}")
                params += tparams
        sql_where = " AND ".join(where)
        offset = (query.page - 1) * query.per_page
        with self._snapshot():
            total = int(
                self._reader.execute(
                    f"SELECT COUNT(*) FROM lots WHERE {sql_where}", params
                ).fetchone()[0]
            )
            rows = self._reader.execute(
                f"SELECT {_SUMMARY_COLS} FROM lots WHERE {sql_where}"
                " ORDER BY last_ns DESC, id DESC LIMIT ? OFFSET ?",
                [*params, query.per_page, offset],
            ).fetchall()
            summaries = [self._summary(self._reader, row) for row in rows]
        return summaries, total

    def _summary(self, conn: sqlite3.Connection, row: Sequence[object]) -> LotSummary:
        (lot_id, code, first, last, product, n, total, lo, hi, last_pct, nw, net, open_, prod) = row
        stations: set[str] = set()
        devices: set[str] = set()
        for dev, st in conn.execute(
            "SELECT device, station FROM lot_devices WHERE lot_id = ?", (lot_id,)
        ):
            devices.add(str(dev))
            if st:
                stations.add(str(st))
        readings = int(n)  # type: ignore[call-overload]
        max_pct = None if hi is None else float(hi)  # type: ignore[arg-type]
        return LotSummary(
            code=str(code),
            first_ns=int(first),  # type: ignore[call-overload]
            last_ns=int(last),  # type: ignore[call-overload]
            stations=tuple(sorted(stations)),
            devices=tuple(sorted(devices)),
            product=str(product),
            readings=readings,
            mean_moisture_pct=float(total) / readings if readings else None,  # type: ignore[arg-type]
            min_moisture_pct=None if lo is None else float(lo),  # type: ignore[arg-type]
            max_moisture_pct=max_pct,
            last_moisture_pct=None if last_pct is None else float(last_pct),  # type: ignore[arg-type]
            weighments=int(nw),  # type: ignore[call-overload]
            net_kg=float(net),  # type: ignore[arg-type]
            verdict=_verdict(readings, max_pct, self.thresholds.for_product(str(product))),
            open_alerts=int(open_),  # type: ignore[call-overload]
            producer=None if prod is None else str(prod),
        )

    def record(self, code: str) -> LotRecord | None:
        """Everything about the lot ``code``, or ``None`` if it was never seen."""
        with self._snapshot() as conn:
            row = conn.execute(
                f"SELECT {_SUMMARY_COLS}, bags, product_type, note, details_by, details_ns"
                " FROM lots WHERE code = ?",
                (code,),
            ).fetchone()
            if row is None:
                return None
            summary = self._summary(conn, row[:14])
            lot_id = int(row[0])
            # Columns in the dataclasses' field order: SQLite gives them their types.
            readings = tuple(
                LotReading(*row)
                for row in conn.execute(
                    "SELECT ts_ns, seq, device, station, moisture_pct, temperature_c, sample_id,"
                    " audit, time_quality FROM lot_readings WHERE cur_lot = ?"
                    " ORDER BY ts_ns, device",
                    (lot_id,),
                )
            )
            weighments = tuple(
                LotWeighment(*row)
                for row in conn.execute(
                    "SELECT ts_ns, seq, device, station, gross_kg, tare_kg, net_kg, trigger"
                    " FROM weighments WHERE lot_id = ? ORDER BY ts_ns, device",
                    (lot_id,),
                )
            )
            events = tuple(
                LotEvent(
                    ts_ns=int(ts),
                    kind=kind,
                    text=str(text),
                    by=str(by),
                    source=str(source),
                    data=json.loads(data),
                )
                for ts, kind, text, by, source, data in conn.execute(
                    "SELECT ts_ns, kind, text, by, source, data FROM events WHERE lot_id = ?"
                    " ORDER BY ts_ns, id",
                    (lot_id,),
                )
            )
            drying = load_drying(conn, lot_id)
            receipt = load_receipt(conn, lot_id, weighments)
            hulled = load_hulled_bags(conn, lot_id)
            meters = load_meter_evidence(conn, lot_id, code)
        details = _details((summary.producer, *row[14:]))
        return LotRecord(
            summary=summary,
            details=details,
            readings=readings,
            weighments=weighments,
            events=events,
            threshold_pct=self.thresholds.for_product(summary.product),
            drying=drying,
            receipt=receipt,
            hulled_bags=hulled,
            meters=meters,
        )

    def identities(self, code: str) -> list[tuple[str, str, int]]:
        """Every ``(table, device, seq)`` of the lot's readings and weighments (tests, audits)."""
        with self._snapshot() as conn:
            return [
                (str(t), str(d), int(s))
                for t, d, s in conn.execute(
                    "SELECT 'readings', device, seq FROM readings JOIN lots ON lots.id = lot_id"
                    " WHERE code = ? UNION ALL SELECT 'weighments', device, seq FROM weighments"
                    " JOIN lots ON lots.id = lot_id WHERE code = ?",
                    (code, code),
                )
            ]

    def used_bytes(self) -> int:
        """Bytes of database pages in use."""
        with self._read_lock:
            c = self._reader
            pages = int(c.execute("PRAGMA page_count").fetchone()[0])
            free = int(c.execute("PRAGMA freelist_count").fetchone()[0])
            return (pages - free) * int(c.execute("PRAGMA page_size").fetchone()[0])


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _calibration(r: Reading) -> str | None:
    """The reading's calibration id (``agent.evidence.meters``), if it carries one."""
    ref = r.fields.get("calibration")
    return ref[:64] if isinstance(ref, str) and ref else None


def _details(row: Sequence[object]) -> LotDetails:
    producer, bags, kind, note, by, at = row
    return LotDetails(
        producer=None if producer is None else str(producer),
        bags=None if bags is None else int(bags),  # type: ignore[call-overload]
        product_type=None if kind is None else str(kind),
        note=None if note is None else str(note),
        updated_by=str(by),
        updated_ns=int(at),  # type: ignore[call-overload]
    )


def details_doc(details: LotDetails) -> dict[str, object]:
    """A lot's details as a JSON document."""
    return {
        "producer": details.producer,
        "bags": details.bags,
        "product_type": details.product_type,
        "note": details.note,
        "updated_by": details.updated_by,
        "updated_ns": details.updated_ns,
    }


#: Schema versions: ``STEPS[i]`` takes the store from version ``i`` to ``i + 1``
#: (``agent.sqlite.migrate``; stores made before versions existed are version 0).
STEPS = (
    script(_SCHEMA),
    script(READINESS_SCHEMA + RECEIPT_SCHEMA),
    METER_STEP,
    corrections.CORRECTIONS_STEP,
)


def _prepare(conn: sqlite3.Connection) -> None:
    migrate(conn, STEPS, name="lot records")


# -- in the agent ----------------------------------------------------------------------


class AsyncLotRecords(ThreadedStore[LotRecords]):
    """``LotRecords`` for the event loop: writes on the store's thread, queries on others.

    Args:
        store: The store.
        thread: Its worker thread.
        prune_every_s: How often retention is applied (daily; the first write applies it).
        clock_ns: Wall clock.
    """

    def __init__(
        self,
        store: LotRecords,
        thread: StoreThread,
        *,
        prune_every_s: float = 86_400.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(store, thread)
        self._prune_every_ns = int(prune_every_s * NS)
        self._clock_ns = clock_ns
        self._next_prune = 0

    async def write(self, readings: Sequence[Reading]) -> int:
        """Write a batch (and apply retention when due); see ``LotRecords.write``."""
        return await self._run(self._write, readings)

    def _write(self, readings: Sequence[Reading]) -> int:
        count = self.sync.write(readings)
        now = self._clock_ns()
        if now >= self._next_prune:
            pruned = self.sync.prune(now)
            if pruned:
                log.info("Lot records: %d lots past retention deleted", pruned)
            self._next_prune = now + self._prune_every_ns
        return count

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the store's thread (modules with tables of their own here)."""
        return await self._run(fn, *args, **kwargs)

    def now_ns(self) -> int:
        """The store's wall clock (UTC ns)."""
        return self._clock_ns()

    async def search(self, query: LotQuery) -> tuple[list[LotSummary], int]:
        """See ``LotRecords.search``."""
        return await asyncio.to_thread(self.sync.search, query)

    async def record(self, code: str) -> LotRecord | None:
        """See ``LotRecords.record``."""
        return await asyncio.to_thread(self.sync.record, code)

    async def handle_command(self, cmd: Command) -> dict[str, object]:
        """``cmd/lotinfo/<code>``: change a lot's details; the reply document.

        Raises:
            CommandRefused: Not ``lotinfo/<code>``, a bad code or bad details;
                nothing is written.
        """
        if len(cmd.path) != 2 or cmd.path[0] != DETAILS_COMMAND:
            raise CommandRefused(f"expected cmd/{DETAILS_COMMAND}/<lot>")
        try:
            code = validate_lot(cmd.path[1])
            change = parse_details(cmd.doc)
        except LotError as exc:
            raise CommandRefused(str(exc)) from None
        details = await self._run(
            self.sync.set_details,
            code,
            change,
            by=cmd.by,
            source=cmd.source,
            at_ns=self._clock_ns(),
        )
        return {"lot": code, "details": details_doc(details)}


class LotRecordSink:
    """The lot record store as an outbox sink (see the module docstring).

    ``deliver`` decodes the batch and writes it on the store's thread, returning only
    once it is committed; a database error makes the batch wait on disk in the
    outbox (``SinkUnavailable``) and come again.
    """

    name = SINK_NAME
    batch_size = BATCH
    flush_interval_s = 1.0

    def __init__(self, records: AsyncLotRecords) -> None:
        self.records = records
        #: Rows written since start.
        self.written = 0

    async def deliver(self, records: Sequence[Record]) -> list[Rejection]:
        """Write the lot-related records of the batch (the rest are skipped)."""
        readings: list[Reading] = []
        for rec in records:
            try:
                readings.append(rec.reading)
            except ValueError:
                continue  # written by the outbox itself: cannot happen; never block the rest
        try:
            self.written += await self.records.write(readings)
        except sqlite3.Error as exc:
            raise SinkUnavailable(f"lot records: {exc}", sink=self.name) from exc
        return []

    async def wait_available(self, timeout_s: float) -> None:
        """A database cannot tell when it is back: wait."""
        await asyncio.sleep(timeout_s)


def move_command(records: AsyncLotRecords) -> CommandHandler:
    """The ``cmd/lotmove/<lot>`` handler (``lots.corrections``) on ``records``."""
    mover = corrections.MoveCommands(
        lambda fn: records.call(records.sync.write_with, fn), clock_ns=records.now_ns
    )
    return mover.handle_command


def configured_thresholds(cfg: Config) -> Thresholds:
    """The verdict thresholds of the site's ``[alerts.wet_lot]``."""
    wet = cfg.alerts.wet_lot
    return Thresholds(
        default_pct=wet.default_threshold_pct,
        by_product=dict(wet.thresholds_pct),
        rules=frozenset({str(getattr(wet, "name", "wet_lot"))}),
    )


def configured_lot_records(cfg: Config) -> LotRecords:
    """The site's lot record store, opened on this thread (the CLI's verbs).

    The configured meters' calibration records are kept on opening, so what the CLI
    reports resolves every calibration id the site file names (``agent.evidence.meters``).

    Raises:
        LotError: The database cannot be opened.
    """
    records = LotRecords.open(
        cfg.lot_records_path,
        thresholds=configured_thresholds(cfg),
        retention_years=cfg.lots.retention_years,
    )
    meters = configured_records(cfg.devices)
    if meters:
        now = time.time_ns()
        records.write_with(lambda conn: record_calibrations(conn, meters, at_ns=now))
    return records


def open_configured_lot_records(cfg: Config) -> AbstractAsyncContextManager[AsyncLotRecords]:
    """``open_lot_records`` with the site's ``[lots]`` and ``[alerts.wet_lot]`` settings."""
    return open_lot_records(
        cfg.lot_records_path,
        thresholds=configured_thresholds(cfg),
        retention_years=cfg.lots.retention_years,
    )


@asynccontextmanager
async def open_lot_records(
    path: Path,
    *,
    thresholds: Thresholds | None = None,
    retention_years: float = 5.0,
    clock_ns: Callable[[], int] = time.time_ns,
) -> AsyncIterator[AsyncLotRecords]:
    """Open the store at ``path`` on its own thread; closed there on exit.

    Raises:
        LotError: The database cannot be opened.
    """
    opener = functools.partial(
        LotRecords.open, path, thresholds=thresholds, retention_years=retention_years
    )
    async with open_on_thread("lot-records", opener, LotRecords.close) as (store, thread):
        yield AsyncLotRecords(store, thread, clock_ns=clock_ns)
