"""The outbox's tables, and what a record weighs against the disk quota.

``records`` holds what at least one sink has not delivered, each with its canonical JSON
payload and, when rendered, its InfluxDB line; ``cursors`` one row per sink (what it
delivered, dropped and refused); ``sequences`` the last ``seq`` committed per device;
``dead_letters`` what a sink refused for good; ``provisional`` the records stamped
before the agent had a trusted time, with the boot they belong to (held back from the
sinks until re-stamped, ``agent.timekeeping``); ``meta`` counters that outlive the
records they counted (``dropped_total``) and the store's ``epoch``: a random id drawn
when the store is created (or first opened by a version that had none), so a new SD
card or a wiped store numbers its ``(device, seq)`` in a new epoch. The quota counts a
record's payload and line plus ``RECORD_OVERHEAD``, in SQL (``SIZE_SQL``) and in Python
(``record_size``) alike, as stored.

A record is stored as it is (``payload`` a JSON object, ``line`` its InfluxDB line or
NULL), or packed (``pack``; the ``sd-card`` storage profile's ``outbox.compress``): the
payload, a NUL byte and the line, deflated into ``payload`` behind a NUL byte, and
``line`` NULL. A JSON payload never starts with a NUL byte, so ``unpack`` tells them
apart and every reader of ``records`` (and ``dead_letters``, copied from it) goes
through it; delivery gets the same bytes either way. A packed record is about half the
size, and an SD card wears by the pages a commit writes.
"""

from __future__ import annotations

import secrets
import sqlite3
import zlib

from coffee_telemetry.agent.sqlite import MigrationStep, migrate, script

#: Bytes counted against the quota per record on top of its payload and line
#: (row header, index entry): an estimate that keeps the quota honest.
RECORD_OVERHEAD = 48

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL DEFAULT 'reading',
    payload BLOB NOT NULL,
    line TEXT
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    delivered_id INTEGER NOT NULL,
    delivered_total INTEGER NOT NULL DEFAULT 0,
    delivered_at_ns INTEGER,
    dropped_total INTEGER NOT NULL DEFAULT 0,
    dead_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sequences (
    device TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL,
    at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS provisional (
    id INTEGER PRIMARY KEY,
    boot TEXT NOT NULL
);
"""

#: Bits of the store's random ``epoch`` (positive in SQLite's signed 64-bit integers).
EPOCH_BITS = 62

#: Records a device's last ``seq`` (never lowering it).
SEQUENCES_UPSERT = (
    "INSERT INTO sequences (device, seq) VALUES (?, ?)"
    " ON CONFLICT (device) DO UPDATE SET seq = MAX(seq, excluded.seq)"
)

#: Brings the sequences table up to the records held (their own ``seq``: the table is
#: written with cursor moves, not with every commit; ``agent.outbox.store``).
SEQUENCES_FROM_RECORDS = (
    "INSERT INTO sequences (device, seq) SELECT device, MAX(seq) FROM records WHERE true"
    " GROUP BY device ON CONFLICT (device) DO UPDATE SET seq = MAX(seq, excluded.seq)"
)


#: A record's bytes in SQL, without ``RECORD_OVERHEAD``.
SIZE_SQL = "LENGTH(payload) + COALESCE(LENGTH(line), 0)"


def record_size(payload: bytes, line: str | None) -> int:
    """What one record counts against the quota, overhead included."""
    return len(payload) + (len(line) if line is not None else 0) + RECORD_OVERHEAD


#: The first byte of a packed payload (a JSON payload starts with ``{``).
PACKED = b"\x00"


def pack(payload: bytes, line: str | None) -> tuple[bytes, None]:
    """``payload`` and ``line`` as one deflated value for ``records.payload``."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = payload if line is None else payload + b"\x00" + line.encode()
    return PACKED + deflate.compress(raw) + deflate.flush(), None


def unpack(payload: bytes, line: str | None) -> tuple[bytes, str | None]:
    """The payload and line of a stored record, packed (``pack``) or not.

    Raises:
        ValueError: A packed value that does not inflate (a damaged store).
    """
    if not payload.startswith(PACKED):
        return payload, line
    try:
        raw = zlib.decompress(payload[1:], -15)
    except zlib.error as exc:
        raise ValueError(f"packed outbox record does not inflate: {exc}") from exc
    body, sep, rest = raw.partition(b"\x00")
    return body, (rest.decode() if sep else None)


def _add_record_columns(conn: sqlite3.Connection) -> None:
    # Outboxes written before ``kind`` and ``line`` existed (no version then).
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(records)")}
    if "kind" not in columns:
        conn.execute("ALTER TABLE records ADD COLUMN kind TEXT NOT NULL DEFAULT 'reading'")
    if "line" not in columns:
        conn.execute("ALTER TABLE records ADD COLUMN line TEXT")


def _add_epoch(conn: sqlite3.Connection) -> None:
    # New stores and stores written before epochs existed get one; an existing one stays.
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)",
        (secrets.randbits(EPOCH_BITS) or 1,),
    )


def _packed_records(conn: sqlite3.Connection) -> None:
    # No table changes: from this version on ``records.payload`` may be packed (``pack``),
    # which a version that does not know it must refuse rather than misread.
    conn.execute("SELECT 1 FROM records LIMIT 0").fetchall()


#: ``STEPS[i]`` takes an outbox from schema version ``i`` to ``i + 1`` (``agent.sqlite``).
#: Append a step for every change; never edit one a release has shipped.
STEPS: tuple[MigrationStep, ...] = (
    script(SCHEMA),
    _add_record_columns,
    _add_epoch,
    _packed_records,
)


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, or migrate an outbox written by an older version up to them.

    Raises:
        ConfigError: A newer version wrote it.
    """
    migrate(conn, STEPS, name="outbox")
