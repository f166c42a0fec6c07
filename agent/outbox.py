"""The outbox: a durable log of accepted readings, one cursor per sink.

Theory of operation
-------------------
A reading is *accepted* when the transaction that inserts it has committed to
SQLite (WAL journal; ``synchronous=FULL`` by default so a power cut after the
commit loses nothing, ``NORMAL`` trades the last commits on power loss for
fewer fsyncs on SD cards). Until then the producer is still waiting in
``accept`` and has promised nothing to anyone.

Commits are batched without adding latency (group commit): producers append to
a pending list and a single writer task commits everything pending in one
transaction; while it is inside a commit, the next producers queue up behind it.
The database is touched only from one worker thread, so a slow fsync never
blocks the event loop.

Every sink has a cursor: the highest record id it has delivered. Sinks read
``id > cursor`` in id order and move their cursor only after their server
acknowledged (MQTT PUBACK, InfluxDB 204). A sink that is down simply stops
moving its cursor; the others are not affected. Records every configured sink
has delivered are deleted. Records a sink refuses for good (InfluxDB 4xx) are
copied to ``dead_letters`` with the reason and the cursor moves past them.

The disk quota bounds the bytes held in ``records``. When an accept would
exceed it, the oldest records are dropped first; the drop is counted per sink
(persistently), logged as a warning, and shown by ``coffee-telemetry outbox``
and in the agent's own ``agent`` measurement. Memory stays bounded however long
an outage lasts: only a small cache of recent records lives in RAM.

Per-device sequence numbers are persisted in the same transaction as the
records they number, so ``(device, seq)`` stays unique across restarts.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from agent.errors import OutboxError
from agent.readings import Reading, decode_reading, encode_reading
from agent.sinks.base import Record, Rejection

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes counted against the quota per record on top of its payload
#: (row header, index entry): an estimate that keeps the quota honest.
RECORD_OVERHEAD = 48

#: Recent records kept in RAM so a sink that keeps up never reads the disk.
RECENT_CACHE = 4096

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL
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


@dataclass(slots=True)
class _Pending:
    rows: list[tuple[str, int, bytes]]
    readings: Sequence[Reading]
    future: asyncio.Future[list[int]]


class Outbox:
    """The durable log. Open it with ``open_outbox``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        *,
        path: Path,
        sinks: Sequence[str],
        max_bytes: int,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._conn = conn
        self._executor = executor
        self._path = path
        self._sinks = tuple(sinks)
        self._max_bytes = max_bytes
        self._clock_ns = clock_ns
        self._pending: list[_Pending] = []
        self._kick = asyncio.Event()
        self._closing = False
        self._changed = asyncio.Event()
        self._acked = asyncio.Event()
        self._recent: collections.deque[Record] = collections.deque(maxlen=RECENT_CACHE)
        self._cursors: dict[str, int] = {}
        self._first_id = 0
        self._last_id = 0
        self._bytes = 0
        self._dropped_total = 0

    # -- thread-side helpers -------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: {exc}") from exc

    def _load(self) -> None:
        conn = self._conn
        row = conn.execute(
            "SELECT COALESCE(MIN(id), 0), COALESCE(MAX(id), 0),"
            " COALESCE(SUM(LENGTH(payload)), 0), COUNT(*) FROM records"
        ).fetchone()
        first, last, payload_bytes, count = (int(x) for x in row)
        seq_row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        self._last_id = max(last, int(seq_row[0]) if seq_row else 0)
        self._first_id = first if count else self._last_id + 1
        self._bytes = payload_bytes + count * RECORD_OVERHEAD
        with conn:
            for sink in self._sinks:
                # A sink configured for the first time starts with what is
                # still held: nothing accepted after now is ever skipped.
                conn.execute(
                    "INSERT OR IGNORE INTO cursors (sink, delivered_id) VALUES (?, ?)",
                    (sink, self._first_id - 1),
                )
        for sink, cursor in conn.execute("SELECT sink, delivered_id FROM cursors"):
            if sink in self._sinks:
                self._cursors[str(sink)] = int(cursor)
        dropped = conn.execute("SELECT value FROM meta WHERE key = 'dropped_total'").fetchone()
        self._dropped_total = int(dropped[0]) if dropped else 0

    def _insert(self, batch: list[_Pending]) -> tuple[list[list[int]], int, list[str]]:
        conn = self._conn
        ids: list[list[int]] = []
        warnings: list[str] = []
        dropped = 0
        with conn:
            for item in batch:
                got: list[int] = []
                for device, seq, payload in item.rows:
                    cur = conn.execute(
                        "INSERT INTO records (device, seq, payload) VALUES (?, ?, ?)",
                        (device, seq, payload),
                    )
                    assert cur.lastrowid is not None
                    got.append(cur.lastrowid)
                    self._bytes += len(payload) + RECORD_OVERHEAD
                    conn.execute(
                        "INSERT INTO sequences (device, seq) VALUES (?, ?)"
                        " ON CONFLICT (device) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                        (device, seq),
                    )
                ids.append(got)
            if self._bytes > self._max_bytes:
                dropped, warning = self._enforce_quota()
                warnings.append(warning)
        return ids, dropped, warnings

    def _enforce_quota(self) -> tuple[int, str]:
        """Drop the oldest records until the quota holds (inside a transaction)."""
        conn = self._conn
        target = int(self._max_bytes * 0.9)  # free a margin, not one record per accept
        freed = 0
        upto = self._first_id - 1
        count = 0
        newest = self._last_id_in_db()
        for rid, size in conn.execute("SELECT id, LENGTH(payload) FROM records ORDER BY id"):
            # Never drop the newest record: it is the one being accepted.
            if self._bytes - freed <= target or rid >= newest:
                break
            freed += int(size) + RECORD_OVERHEAD
            upto = int(rid)
            count += 1
        if count == 0:
            return 0, "Outbox quota reached but nothing could be dropped"
        conn.execute("DELETE FROM records WHERE id <= ?", (upto,))
        per_sink: dict[str, int] = {}
        for sink, cursor in self._cursors.items():
            lost = max(0, upto - max(cursor, self._first_id - 1))
            per_sink[sink] = lost
            if lost:
                conn.execute(
                    "UPDATE cursors SET dropped_total = dropped_total + ?, delivered_id = ?"
                    " WHERE sink = ?",
                    (lost, upto, sink),
                )
                self._cursors[sink] = upto
        self._dropped_total += count
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('dropped_total', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (self._dropped_total,),
        )
        self._bytes -= freed
        first = self._first_id
        self._first_id = upto + 1
        detail = ", ".join(f"{s}={n}" for s, n in sorted(per_sink.items()))
        return count, (
            f"Outbox over its quota of {self._max_bytes} bytes: dropped {count} oldest"
            f" records (ids {first}..{upto}); undelivered per sink: {detail}"
        )

    def _last_id_in_db(self) -> int:
        row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()
        return int(row[0])

    # -- producers -----------------------------------------------------------

    async def accept(self, readings: Sequence[Reading]) -> list[int]:
        """Commit readings durably; return their record ids once committed.

        Raises:
            OutboxError: The database could not be written; nothing was accepted.
        """
        if self._closing:
            raise OutboxError("outbox is closing")
        rows = [(r.device, r.seq, encode_reading(r)) for r in readings]
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(rows=rows, readings=readings, future=future))
        self._kick.set()
        return await asyncio.shield(future)

    async def writer_loop(self) -> None:
        """Commit whatever is pending, batch after batch, until closed."""
        while True:
            await self._kick.wait()
            self._kick.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    ids, dropped, warnings = await self._run(functools.partial(self._insert, batch))
                except OutboxError as exc:
                    log.error("Outbox write failed, %d producers told: %s", len(batch), exc)
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                for warning in warnings:
                    log.warning("%s", warning)
                if dropped:
                    self._recent.clear()
                for item, got in zip(batch, ids, strict=True):
                    for rid, (row, reading) in zip(
                        got, zip(item.rows, item.readings, strict=True), strict=True
                    ):
                        self._recent.append(Record(id=rid, payload=row[2], reading=reading))
                    if got:
                        self._last_id = max(self._last_id, got[-1])
                    if not item.future.done():
                        item.future.set_result(got)
                self._notify()
            if self._closing and not self._pending:
                return

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- sinks ---------------------------------------------------------------

    def clock_ns(self) -> int:
        """The outbox's wall clock (for delivery times)."""
        return self._clock_ns()

    @property
    def sinks(self) -> tuple[str, ...]:
        """The sink names this outbox keeps cursors for."""
        return self._sinks

    @property
    def last_id(self) -> int:
        """Highest committed record id."""
        return self._last_id

    def cursor(self, sink: str) -> int:
        """The highest record id ``sink`` has delivered."""
        return self._cursors[sink]

    def backlog(self, sink: str) -> int:
        """Records accepted but not yet delivered by ``sink``."""
        return max(0, self._last_id - max(self._cursors[sink], self._first_id - 1))

    async def wait_beyond(self, record_id: int, timeout_s: float | None = None) -> bool:
        """Wait until a record with an id above ``record_id`` is committed.

        Returns:
            Whether such a record exists (False on timeout or close).
        """
        try:
            async with asyncio.timeout(timeout_s):
                while self._last_id <= record_id and not self._closing:
                    await self._changed.wait()
        except TimeoutError:
            pass
        return self._last_id > record_id

    async def read_batch(self, sink: str, limit: int) -> list[Record]:
        """Return up to ``limit`` records after ``sink``'s cursor, in id order."""
        after = max(self._cursors[sink], self._first_id - 1)
        recent = self._recent
        if recent and recent[0].id <= after + 1 and recent[-1].id > after:
            start = after + 1 - recent[0].id
            if start >= 0 and recent[start].id == after + 1:
                return list(_islice(recent, start, start + limit))

        def read() -> list[tuple[int, bytes]]:
            return [
                (int(rid), bytes(payload))
                for rid, payload in self._conn.execute(
                    "SELECT id, payload FROM records WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit),
                )
            ]

        rows = await self._run(read)
        return [Record(id=rid, payload=p, reading=decode_reading(p)) for rid, p in rows]

    async def ack(self, sink: str, upto_id: int, *, rejected: Sequence[Rejection] = ()) -> None:
        """Move ``sink``'s cursor to ``upto_id``; dead-letter ``rejected`` records.

        Records every sink has delivered are deleted in the same transaction.
        """
        previous = self._cursors[sink]
        if upto_id <= previous and not rejected:
            return
        now = self._clock_ns()
        delivered = max(0, upto_id - max(previous, self._first_id - 1)) - len(rejected)
        new_floor = min([upto_id] + [c for s, c in self._cursors.items() if s != sink])

        def write() -> None:
            conn = self._conn
            freed = 0
            with conn:
                for rej in rejected:
                    conn.execute(
                        "INSERT INTO dead_letters (sink, record_id, status, reason, payload, at_ns)"
                        " SELECT ?, id, ?, ?, payload, ? FROM records WHERE id = ?",
                        (sink, rej.status, rej.reason[:500], now, rej.record_id),
                    )
                conn.execute(
                    "UPDATE cursors SET delivered_id = MAX(delivered_id, ?),"
                    " delivered_total = delivered_total + ?, delivered_at_ns = ?,"
                    " dead_total = dead_total + ? WHERE sink = ?",
                    (upto_id, max(0, delivered), now, len(rejected), sink),
                )
                if new_floor >= self._first_id:
                    row = conn.execute(
                        "SELECT COALESCE(SUM(LENGTH(payload)), 0), COUNT(*) FROM records"
                        " WHERE id <= ?",
                        (new_floor,),
                    ).fetchone()
                    freed = int(row[0]) + int(row[1]) * RECORD_OVERHEAD
                    conn.execute("DELETE FROM records WHERE id <= ?", (new_floor,))
            # Bookkeeping shared with _insert changes only on the worker thread.
            self._cursors[sink] = max(self._cursors[sink], upto_id)
            if new_floor >= self._first_id:
                self._bytes -= freed
                self._first_id = new_floor + 1

        await self._run(write)
        while self._recent and self._recent[0].id < self._first_id:
            self._recent.popleft()
        acked, self._acked = self._acked, asyncio.Event()
        acked.set()

    async def acked(self) -> None:
        """Wait until some sink acknowledges records."""
        await self._acked.wait()

    # -- inspection ----------------------------------------------------------

    async def sequences(self) -> dict[str, int]:
        """The last sequence number committed per device."""

        def read() -> dict[str, int]:
            return {
                str(d): int(s) for d, s in self._conn.execute("SELECT device, seq FROM sequences")
            }

        return await self._run(read)

    async def stats(self) -> OutboxStats:
        """A consistent snapshot of backlog, quota use and drops."""
        return await self._run(lambda: _stats(self._conn, self._path, self._max_bytes, self._sinks))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        return await self._run(lambda: _dead_letters(self._conn, limit))

    async def close(self) -> None:
        """Finish pending commits; later ``accept`` calls fail."""
        self._closing = True
        self._kick.set()
        self._notify()


def _islice(items: collections.deque[Record], start: int, stop: int) -> Iterable[Record]:
    stop = min(stop, len(items))
    for i in range(start, stop):
        yield items[i]


def _stats(
    conn: sqlite3.Connection, path: Path, max_bytes: int, sinks: Sequence[str] | None
) -> OutboxStats:
    last_held, payload_bytes, count = conn.execute(
        "SELECT COALESCE(MAX(id), 0), COALESCE(SUM(LENGTH(payload)), 0), COUNT(*) FROM records"
    ).fetchone()
    seq_row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    last_id = max(int(last_held), int(seq_row[0]) if seq_row else 0)
    dropped = conn.execute("SELECT value FROM meta WHERE key = 'dropped_total'").fetchone()
    backlogs = []
    for sink, cursor, delivered_total, delivered_at, dropped_total, dead_total in conn.execute(
        "SELECT sink, delivered_id, delivered_total, delivered_at_ns, dropped_total, dead_total"
        " FROM cursors ORDER BY sink"
    ):
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
            oldest_ns = decode_reading(bytes(payload)).ts_ns
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
        bytes_held=int(payload_bytes) + int(count) * RECORD_OVERHEAD,
        max_bytes=max_bytes,
        last_id=last_id,
        dropped_total=int(dropped[0]) if dropped else 0,
        sinks=tuple(backlogs),
    )


def _dead_letters(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    return [
        DeadLetter(
            id=int(i),
            sink=str(s),
            record_id=int(r),
            status=None if st is None else int(st),
            reason=str(reason),
            payload=bytes(p),
            at_ns=int(at),
        )
        for i, s, r, st, reason, p, at in conn.execute(
            "SELECT id, sink, record_id, status, reason, payload, at_ns FROM dead_letters"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
    ]


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    # isolation_level=None is autocommit; "with conn" below needs implicit BEGIN.
    conn.isolation_level = "DEFERRED"
    return conn


@asynccontextmanager
async def open_outbox(
    path: Path,
    *,
    sinks: Sequence[str],
    max_bytes: int = 512 * 1024 * 1024,
    synchronous: Literal["full", "normal"] = "full",
    clock_ns: Callable[[], int] = time.time_ns,
) -> AsyncIterator[Outbox]:
    """Open (creating if needed) the outbox at ``path`` and run its writer.

    Raises:
        OutboxError: The database cannot be opened.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
    loop = asyncio.get_running_loop()
    try:
        conn = await loop.run_in_executor(executor, _connect, path, synchronous)
    except (sqlite3.Error, OSError) as exc:
        executor.shutdown(wait=True)
        raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
    outbox = Outbox(conn, executor, path=path, sinks=sinks, max_bytes=max_bytes, clock_ns=clock_ns)
    try:
        await outbox._run(outbox._load)
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(outbox.writer_loop(), name="outbox-writer")
            try:
                yield outbox
            finally:
                await outbox.close()
                await writer
    finally:
        await loop.run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)


def read_stats(path: Path, *, max_bytes: int = 0) -> OutboxStats:
    """Read an outbox's stats from another process (``coffee-telemetry outbox``).

    Raises:
        OutboxError: No outbox at ``path`` or it cannot be read.
    """
    if not path.exists():
        raise OutboxError(f"no outbox at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return _stats(conn, path, max_bytes, None)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot read outbox {path}: {exc}") from exc


def read_dead_letters(path: Path, *, limit: int = 100) -> list[DeadLetter]:
    """Read the newest dead letters from another process."""
    if not path.exists():
        raise OutboxError(f"no outbox at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return _dead_letters(conn, limit)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot read outbox {path}: {exc}") from exc
