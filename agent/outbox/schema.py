"""The outbox's tables, and what a record weighs against the disk quota.

``records`` holds what at least one sink has not delivered, each with its canonical JSON
payload and, when rendered, its InfluxDB line; ``cursors`` one row per sink (what it
delivered, dropped and refused); ``sequences`` the last ``seq`` committed per device;
``dead_letters`` what a sink refused for good; ``meta`` counters that outlive the
records they counted (``dropped_total``). The quota counts a record's payload and line
plus ``RECORD_OVERHEAD``, in SQL (``SIZE_SQL``) and in Python (``record_size``) alike.
"""

from __future__ import annotations

import sqlite3

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
"""

#: A record's bytes in SQL, without ``RECORD_OVERHEAD``.
SIZE_SQL = "LENGTH(payload) + COALESCE(LENGTH(line), 0)"


def record_size(payload: bytes, line: str | None) -> int:
    """What one record counts against the quota, overhead included."""
    return len(payload) + (len(line) if line is not None else 0) + RECORD_OVERHEAD


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, and bring an outbox written by an older version up to them."""
    conn.executescript(SCHEMA)
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(records)")}
    if "kind" not in columns:
        conn.execute("ALTER TABLE records ADD COLUMN kind TEXT NOT NULL DEFAULT 'reading'")
    if "line" not in columns:
        conn.execute("ALTER TABLE records ADD COLUMN line TEXT")
