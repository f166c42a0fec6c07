"""What the outbox holds and owes: backlog per sink, quota use, drops and dead letters.

The same queries serve the running agent (``Outbox.stats``, ``Outbox.dead_letters``, on
its read connection) and another process (``read_stats``, ``read_dead_letters``: the
``coffee-telemetry outbox`` command, on a read-only connection of its own while the
agent writes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from coffee_telemetry.agent.errors import OutboxError
from coffee_telemetry.agent.outbox.schema import RECORD_OVERHEAD, SIZE_SQL, unpack
from coffee_telemetry.agent.readings import decode_reading
from coffee_telemetry.agent.sqlite import connect_read_only

__all__ = [
    "DeadLetter",
    "OutboxStats",
    "SinkBacklog",
    "dead_letters_from",
    "read_dead_letters",
    "read_stats",
    "stats_from",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    """What one sink still owes.

    Attributes:
        sink: Sink name.
        cursor: Highest record id delivered.
        backlog: Records accepted but not yet delivered by this sink.
        oldest_ns: Acquisition time of the oldest undelivered record.
        delivered_total: Records delivered since the outbox was created.
        delivered_at_ns: Wall time of the last delivery, if any.
        dropped_total: Records dropped by the quota before this sink had them.
        dead_total: Records this sink refused for good (see ``dead_letters``).
    """

    sink: str
    cursor: int
    backlog: int
    oldest_ns: int | None
    delivered_total: int
    delivered_at_ns: int | None
    dropped_total: int
    dead_total: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot of the outbox.

    Attributes:
        path: Database file.
        records: Records held (undelivered by at least one sink).
        bytes_held: Bytes counted against the quota.
        max_bytes: The quota.
        last_id: Highest record id ever accepted.
        dropped_total: Records dropped by the quota, all sinks together.
        sinks: Per-sink backlog.
    """

    path: str
    records: int
    bytes_held: int
    max_bytes: int
    last_id: int
    dropped_total: int
    sinks: tuple[SinkBacklog, ...]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a sink refused for good."""

    id: int
    sink: str
    record_id: int
    status: int | None
    reason: str
    payload: bytes
    at_ns: int


def stats_from(
    conn: sqlite3.Connection, path: Path, max_bytes: int, sinks: Sequence[str] | None
) -> OutboxStats:
    """The stats as ``conn`` sees them (``sinks``: only these, or every cursor)."""
    last_held, held, count = conn.execute(
        f"SELECT COALESCE(MAX(id), 0), COALESCE(SUM({SIZE_SQL}), 0), COUNT(*) FROM records"
    ).fetchone()
    seq_row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    last_id = max(int(last_held), int(seq_row[0]) if seq_row else 0)
    dropped = conn.execute("SELECT value FROM meta WHERE key = 'dropped_total'").fetchone()
    backlogs = []
    for sink, cursor, delivered_total, delivered_at, dropped_total, dead_total in conn.execute(
        "SELECT sink, delivered_id, delivered_total, delivered_at_ns, dropped_total, dead_total"
        " FROM cursors ORDER BY sink"
    ).fetchall():
        if sinks is not None and sink not in sinks:
            continue
        backlog_row = conn.execute(
            "SELECT COUNT(*), MIN(id) FROM records WHERE id > ?", (cursor,)
        ).fetchone()
        oldest_ns: int | None = None
        if backlog_row[1] is not None:
            payload = conn.execute(
                "SELECT payload FROM records WHERE id = ?", (backlog_row[1],)
            ).fetchone()[0]
            oldest_ns = decode_reading(unpack(bytes(payload), None)[0]).ts_ns
        backlogs.append(
            SinkBacklog(
                sink=str(sink),
                cursor=int(cursor),
                backlog=int(backlog_row[0]),
                oldest_ns=oldest_ns,
                delivered_total=int(delivered_total),
                delivered_at_ns=None if delivered_at is None else int(delivered_at),
                dropped_total=int(dropped_total),
                dead_total=int(dead_total),
            )
        )
    return OutboxStats(
        path=str(path),
        records=int(count),
        bytes_held=int(held) + int(count) * RECORD_OVERHEAD,
        max_bytes=max_bytes,
        last_id=last_id,
        dropped_total=int(dropped[0]) if dropped else 0,
        sinks=tuple(backlogs),
    )


def dead_letters_from(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    """The newest ``limit`` dead letters as ``conn`` sees them, newest first."""
    return [
        DeadLetter(
            id=int(i),
            sink=str(s),
            record_id=int(r),
            status=None if st is None else int(st),
            reason=str(reason),
            payload=unpack(bytes(p), None)[0],
            at_ns=int(at),
        )
        for i, s, r, st, reason, p, at in conn.execute(
            "SELECT id, sink, record_id, status, reason, payload, at_ns FROM dead_letters"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
    ]


def _read(path: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    # One query on a read-only connection of this process's own.
    if not path.exists():
        raise OutboxError(f"no outbox at {path}")
    try:
        conn = connect_read_only(path)
        try:
            return query(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot read outbox {path}: {exc}") from exc


def read_stats(path: Path, *, max_bytes: int = 0) -> OutboxStats:
    """Read an outbox's stats from another process (``coffee-telemetry outbox``).

    Raises:
        OutboxError: No outbox at ``path`` or it cannot be read.
    """
    return _read(path, lambda conn: stats_from(conn, path, max_bytes, None))


def read_dead_letters(path: Path, *, limit: int = 100) -> list[DeadLetter]:
    """Read the newest dead letters from another process."""
    return _read(path, lambda conn: dead_letters_from(conn, limit))
