"""The outbox: a durable log of accepted readings, one cursor per sink.

Theory of operation
-------------------
A reading is *accepted* when the transaction that inserts it has committed to
SQLite in WAL mode. Until then the producer is still waiting in ``accept`` and
has promised nothing to anyone. From then on it survives the agent's crash
(``kill -9``): the commit is in the WAL file, which the next start reads.

Power loss is a question of fsync, and two modes trade it against the CPU and
the wear of an SD card:

* ``synchronous = "normal"`` (default): commits do not wait for fsync; a
  background task fsyncs the WAL every ``sync_interval_s`` (1 s) when
  something was committed, so a power cut loses at most that last second.
  Commits are ~60 µs and run on the event loop thread itself: handing each one
  to a worker thread costs more CPU than the commit.
* ``synchronous = "full"``: every commit fsyncs before ``accept`` returns;
  commits run on a worker thread so a slow fsync never blocks the event loop.

Either way commits are batched without adding latency (group commit):
producers append to a pending list and one writer task commits everything
pending in one transaction; while it is inside a commit, the next producers
queue up behind it. Large reads (a backlog drain) use a second, read-only
connection on the worker thread.

``commit_delay_s`` (0 by default) trades latency for disk writes: the writer waits
that long after the first pending record before it commits, so the readings of that
moment share one transaction. Every page a commit changes is written to the WAL in
full, so one commit of five readings writes about a fifth of five commits (an SD
card wears by the bytes written). ``accept`` still returns only after the commit:
what is accepted is on disk as before, it is only accepted later.

Every sink has a cursor: the highest record id it has delivered. Sinks read
``id > cursor`` in id order and move their cursor only after their server
acknowledged (MQTT PUBACK, InfluxDB 204). A cursor moves in memory at once and
is written to disk once per ``cursor_flush_s``: with the first commit of records
after that much time since the last cursor write, or alone. Not with every commit:
the cursors' page (and the pages of the deleted records) would otherwise go into
every commit. A crash in between only makes the sink send up to ``cursor_flush_s``
of records again, which delivery is designed for (at least once, byte-identical).
Records every sink has delivered are deleted with a cursor write, at most once per
``prune_interval_s`` (0: with every one): a larger batch deletes with fewer page
writes per record, and records delivered but not yet deleted are never read again.
Records a sink refuses for good (InfluxDB 4xx) are copied to ``dead_letters`` with
the reason, durably before the cursor moves past them.

``compress`` stores records packed (``schema.pack``: about half the bytes) and
``page_size`` (of a new store) makes each page a commit changes smaller; both are
for an SD card, which wears by the bytes written (``agent.config.STORAGE_PROFILES``).

The disk quota bounds the bytes held in ``records``. When an accept would
exceed it, the oldest records are dropped first; the drop is counted per sink
(persistently), logged as a warning, and shown by ``coffee-telemetry outbox``
and in the agent's own ``agent`` measurement. Memory stays bounded however long
an outage lasts: only a small cache of recent records lives in RAM.

Each record also stores its InfluxDB line, rendered once at acceptance by the
``line_encoder`` given to ``open_outbox``: a backlog drain then reads lines
and sends them, without decoding JSON or re-rendering anything.

Per-device sequence numbers are persisted in the same transaction as the
records they number (each record carries its ``seq``), so ``(device, seq)`` stays
unique across restarts. The ``sequences`` table, which outlives the records, gets
them with every cursor write, before any record is deleted, and on close; opening
the store brings it up to the records held (after a crash).

The tables are in ``schema``, the read-only views (``coffee-telemetry outbox``) in
``stats``. This module stays one piece, longer than most: the group commit, the cursors
and the quota share one set of counters (first id held, bytes held, cursors, unsaved
cursor moves) that the event loop and the write transaction hand back and forth, and
they read best next to each other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from coffee_telemetry.agent.errors import OutboxError
from coffee_telemetry.agent.outbox.schema import (
    RECORD_OVERHEAD,
    SEQUENCES_FROM_RECORDS,
    SEQUENCES_UPSERT,
    SIZE_SQL,
    create_schema,
    pack,
    record_size,
    unpack,
)
from coffee_telemetry.agent.outbox.sink import Record, Rejection
from coffee_telemetry.agent.outbox.stats import (
    DeadLetter,
    OutboxStats,
    dead_letters_from,
    stats_from,
)
from coffee_telemetry.agent.readings import Reading, decode_reading, encode_reading
from coffee_telemetry.agent.sqlite import (
    StoreThread,
    Synchronous,
    connect,
    connect_read_only,
    open_on_thread,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Recent records kept in RAM so a sink that keeps up never reads the disk
#: (a sink more than this far behind reads from disk, in batches).
RECENT_CACHE = 1024

#: Renders a reading as an InfluxDB line (``agent.sinks.lineprotocol.encode_line``).
LineEncoder = Callable[[Reading], str]


@dataclass(slots=True)
class _Row:
    device: str
    seq: int
    kind: str
    payload: bytes
    line: str | None
    reading: Reading


@dataclass(slots=True)
class _Pending:
    rows: list[_Row]
    future: asyncio.Future[list[int]]


@dataclass(slots=True)
class _Committed:
    """What one write transaction did, reported back to the event loop."""

    ids: list[list[int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped_upto: int | None = None
    #: The lowest provisional record id after the transaction, when it may have changed.
    hold_from: int | Literal[False] | None = False


@dataclass(slots=True)
class _CursorDelta:
    """Cursor moves not yet on disk, per sink."""

    upto: int
    delivered: int = 0
    at_ns: int = 0


class Outbox:
    """The durable log. Open it with ``open_outbox``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        reader: sqlite3.Connection,
        thread: StoreThread,
        *,
        path: Path,
        sinks: Sequence[str],
        max_bytes: int,
        inline: bool,
        line_encoder: LineEncoder | None,
        cursor_flush_s: float,
        clock_ns: Callable[[], int] = time.time_ns,
        commit_delay_s: float = 0.0,
        prune_interval_s: float = 0.0,
        compress: bool = False,
    ) -> None:
        self._conn = conn
        self._reader = reader
        self._thread = thread
        self._path = path
        self._sinks = tuple(sinks)
        self._max_bytes = max_bytes
        self._inline = inline
        self._line_encoder = line_encoder
        self._cursor_flush_s = cursor_flush_s
        self._commit_delay_s = commit_delay_s
        self._prune_interval_s = prune_interval_s
        self._compress = compress
        self._clock_ns = clock_ns
        self._pending: list[_Pending] = []
        self._kick = asyncio.Event()
        self._closing = False
        self._changed = asyncio.Event()
        self._acked = asyncio.Event()
        self._recent: collections.deque[Record] = collections.deque(maxlen=RECENT_CACHE)
        self._cursors: dict[str, int] = {}
        self._unsaved: dict[str, _CursorDelta] = {}
        #: When (event loop time) cursor moves were last written, and delivered records
        #: last deleted: both wait for their interval, not for the next commit.
        self._cursors_saved_at = 0.0
        self._pruned_at = 0.0
        self._first_id = 0
        self._last_id = 0
        self._bytes = 0
        self._dropped_total = 0
        self._epoch = ""
        self._commits = 0
        self._boot = ""
        #: The last ``seq`` per device of records committed since the sequences table was
        #: last written (the write transaction's own: commits run one at a time).
        self._seqs_unsaved: dict[str, int] = {}
        #: The lowest provisional record id (held back from every sink), if any.
        self._hold_from: int | None = None

    # -- running database work ----------------------------------------------

    async def _write(self, fn: Callable[[], T]) -> T:
        """Run a write on the write connection (inline or on the worker)."""
        try:
            if self._inline:
                return fn()
            return await self._thread.run(fn)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: {exc}") from exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the read-only connection, on the worker thread."""
        try:
            return await self._thread.run(fn, self._reader)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: {exc}") from exc

    def _load(self) -> None:
        conn = self._conn
        row = conn.execute(
            f"SELECT COALESCE(MIN(id), 0), COALESCE(MAX(id), 0), COALESCE(SUM({SIZE_SQL}), 0),"
            " COUNT(*) FROM records"
        ).fetchone()
        first, last, held, count = (int(x) for x in row)
        seq_row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        self._last_id = max(last, int(seq_row[0]) if seq_row else 0)
        self._first_id = first if count else self._last_id + 1
        self._bytes = held + count * RECORD_OVERHEAD
        with conn:
            # Sequences of records committed after the table's last write (a crash).
            conn.execute(SEQUENCES_FROM_RECORDS)
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
        epoch = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        self._epoch = f"{int(epoch[0]):x}"
        self._hold_from = _lowest_provisional(conn)

    # -- the write transaction -------------------------------------------------

    def _commit(
        self,
        batch: list[_Pending],
        rejected: list[tuple[str, Rejection]],
        unsaved: dict[str, _CursorDelta],
        floor: int,
        prune: bool,
    ) -> _Committed:
        """One transaction: new records, dead letters, cursor moves, pruning.

        Runs on the write connection's thread; it only reads the bookkeeping
        the event loop owns and reports changes back in ``_Committed``.
        """
        conn = self._conn
        done = _Committed()
        now = self._clock_ns()
        held = False
        seqs = dict(self._seqs_unsaved)
        with conn:
            for item in batch:
                got: list[int] = []
                for row in item.rows:
                    payload, line = self._stored(row)
                    cur = conn.execute(
                        "INSERT INTO records (device, seq, kind, payload, line)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (row.device, row.seq, row.kind, payload, line),
                    )
                    assert cur.lastrowid is not None
                    got.append(cur.lastrowid)
                    if row.reading.time_quality == "provisional":
                        conn.execute(
                            "INSERT INTO provisional (id, boot) VALUES (?, ?)",
                            (cur.lastrowid, self._boot),
                        )
                        held = True
                    self._bytes += record_size(payload, line)
                    seqs[row.device] = max(seqs.get(row.device, 0), row.seq)
                done.ids.append(got)
            for sink, rej in rejected:
                conn.execute(
                    "INSERT INTO dead_letters (sink, record_id, status, reason, payload, at_ns)"
                    " SELECT ?, id, ?, ?, payload, ? FROM records WHERE id = ?",
                    (sink, rej.status, rej.reason[:500], now, rej.record_id),
                )
                conn.execute(
                    "UPDATE cursors SET dead_total = dead_total + 1 WHERE sink = ?", (sink,)
                )
            for sink, delta in unsaved.items():
                conn.execute(
                    "UPDATE cursors SET delivered_id = MAX(delivered_id, ?),"
                    " delivered_total = delivered_total + ?,"
                    " delivered_at_ns = MAX(COALESCE(delivered_at_ns, 0), ?) WHERE sink = ?",
                    (delta.upto, delta.delivered, delta.at_ns, sink),
                )
            if prune and floor >= self._first_id:
                # Every sink has delivered up to floor: those records can go.
                freed, count = conn.execute(
                    f"SELECT COALESCE(SUM({SIZE_SQL}), 0), COUNT(*) FROM records WHERE id <= ?",
                    (floor,),
                ).fetchone()
                conn.execute("DELETE FROM records WHERE id <= ?", (floor,))
                self._bytes -= int(freed) + int(count) * RECORD_OVERHEAD
                self._first_id = floor + 1
            if self._bytes > self._max_bytes:
                self._enforce_quota(done)
            if done.dropped_upto is not None and self._hold_from is not None:
                conn.execute("DELETE FROM provisional WHERE id <= ?", (done.dropped_upto,))
                held = True
            if held:
                done.hold_from = _lowest_provisional(conn)
            # A record's seq is on disk in the record itself; the sequences table gets it
            # before any record can be deleted, and with every cursor write and the last
            # commit (one page then, instead of one in every commit).
            save_seqs = bool(seqs) and (
                bool(unsaved) or prune or done.dropped_upto is not None or self._closing
            )
            if save_seqs:
                conn.executemany(SEQUENCES_UPSERT, seqs.items())
        self._seqs_unsaved = {} if save_seqs else seqs
        self._commits += 1
        return done

    def _stored(self, row: _Row) -> tuple[bytes, str | None]:
        """A record's payload and line as they go into ``records`` (packed or not)."""
        return pack(row.payload, row.line) if self._compress else (row.payload, row.line)

    def _enforce_quota(self, done: _Committed) -> None:
        """Drop the oldest records until the quota holds (inside a transaction)."""
        conn = self._conn
        target = int(self._max_bytes * 0.9)  # free a margin, not one record per accept
        freed = 0
        upto = self._first_id - 1
        count = 0
        newest = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0])
        for rid, size in conn.execute(f"SELECT id, {SIZE_SQL} FROM records ORDER BY id"):
            # Never drop the newest record: it is the one being accepted.
            if self._bytes - freed <= target or rid >= newest:
                break
            freed += int(size) + RECORD_OVERHEAD
            upto = int(rid)
            count += 1
        if count == 0:
            done.warnings.append("Outbox quota reached but nothing could be dropped")
            return
        conn.execute("DELETE FROM records WHERE id <= ?", (upto,))
        per_sink: dict[str, int] = {}
        for sink, cursor in self._cursors.items():
            lost = max(0, upto - max(cursor, self._first_id - 1))
            per_sink[sink] = lost
            if lost:
                conn.execute(
                    "UPDATE cursors SET dropped_total = dropped_total + ?,"
                    " delivered_id = MAX(delivered_id, ?) WHERE sink = ?",
                    (lost, upto, sink),
                )
        self._dropped_total += count
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('dropped_total', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (self._dropped_total,),
        )
        self._bytes -= freed
        first = self._first_id
        self._first_id = upto + 1
        done.dropped_upto = upto
        detail = ", ".join(f"{s}={n}" for s, n in sorted(per_sink.items()))
        done.warnings.append(
            f"Outbox over its quota of {self._max_bytes} bytes: dropped {count} oldest"
            f" records (ids {first}..{upto}); undelivered per sink: {detail}"
        )

    async def _commit_now(
        self, batch: list[_Pending], rejected: list[tuple[str, Rejection]], *, cursors: bool = True
    ) -> _Committed:
        """Commit ``batch``, with every pending cursor move when ``cursors`` (event loop side).

        Delivered records are deleted with a cursor write, when ``prune_interval_s`` has
        passed since they last were (or the outbox is closing).
        """
        now = asyncio.get_running_loop().time()
        unsaved: dict[str, _CursorDelta] = {}
        prune = False
        if cursors:
            unsaved, self._unsaved = self._unsaved, {}
            prune = bool(unsaved) and (
                self._closing or now - self._pruned_at >= self._prune_interval_s
            )
        floor = min(self._cursors.values()) if self._cursors else 0
        try:
            done = await self._write(
                functools.partial(self._commit, batch, rejected, unsaved, floor, prune)
            )
        except OutboxError:
            for sink, delta in unsaved.items():  # try these again with the next commit
                again = self._unsaved.setdefault(sink, _CursorDelta(upto=delta.upto))
                again.upto = max(again.upto, delta.upto)
                again.delivered += delta.delivered
                again.at_ns = max(again.at_ns, delta.at_ns)
            raise
        if cursors:
            self._cursors_saved_at = now
        if prune:
            self._pruned_at = now
        if done.dropped_upto is not None:
            for sink in self._cursors:
                self._cursors[sink] = max(self._cursors[sink], done.dropped_upto)
            self._recent.clear()
        for warning in done.warnings:
            log.warning("%s", warning)
        return done

    # -- producers -----------------------------------------------------------

    def _row(self, reading: Reading) -> _Row:
        line: str | None = None
        if self._line_encoder is not None:
            try:
                line = self._line_encoder(reading)
            except ValueError:
                line = None  # the InfluxDB sink renders it again and rejects it, counted
        return _Row(
            device=reading.device,
            seq=reading.seq,
            kind=reading.kind,
            payload=encode_reading(reading),
            line=line,
            reading=reading,
        )

    async def accept(self, readings: Sequence[Reading]) -> list[int]:
        """Commit readings durably; return their record ids once committed.

        Raises:
            OutboxError: The database could not be written; nothing was accepted.
        """
        if self._closing:
            raise OutboxError("outbox is closing")
        rows = [self._row(r) for r in readings]
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(rows=rows, future=future))
        self._kick.set()
        return await asyncio.shield(future)

    async def writer_loop(self) -> None:
        """Commit what is pending (records and cursor moves) until closed."""
        loop = asyncio.get_running_loop()
        self._cursors_saved_at = self._pruned_at = loop.time()
        while True:
            if not self._pending and not self._closing:
                # Idle: wake for new records, or when cursor moves are due (a sink's
                # ack does not wake this loop: look again within cursor_flush_s).
                wait = self._cursor_flush_s
                if self._unsaved:
                    wait = max(0.0, self._cursors_saved_at + wait - loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._kick.wait()
            self._kick.clear()
            # Cursor moves ride a commit of records, or are written alone, once
            # cursor_flush_s has passed since they last were: not with every commit.
            flush_cursors = bool(self._unsaved) and (
                loop.time() - self._cursors_saved_at >= self._cursor_flush_s or self._closing
            )
            if not self._pending and not flush_cursors:
                if self._closing:
                    if self._seqs_unsaved:
                        await self._commit_now([], [])  # the last sequences, then done
                    return
                continue
            if self._pending and self._commit_delay_s > 0:
                await self._linger()
            batch, self._pending = self._pending, []
            try:
                done = await self._commit_now(batch, [], cursors=flush_cursors)
            except OutboxError as exc:
                log.error("Outbox write failed, %d producers told: %s", len(batch), exc)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if done.hold_from is not False:
                self._hold_from = done.hold_from
            for item, got in zip(batch, done.ids, strict=True):
                for rid, row in zip(got, item.rows, strict=True):
                    self._recent.append(
                        Record(
                            id=rid,
                            payload=row.payload,
                            reading=row.reading,
                            line=row.line,
                            device=row.device,
                            kind=row.kind,
                        )
                    )
                if got:
                    self._last_id = max(self._last_id, got[-1])
                if not item.future.done():
                    item.future.set_result(got)
            while self._recent and self._recent[0].id < self._first_id:
                self._recent.popleft()
            if batch:
                self._notify()

    async def _linger(self) -> None:
        """Let the records of the next ``commit_delay_s`` join the commit (not when closing)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._commit_delay_s):
                while not self._closing:
                    self._kick.clear()
                    await self._kick.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def sync_loop(
        self, interval_s: float, checkpoint_interval_s: float | None = None
    ) -> None:
        """Every ``interval_s``, when something was committed: fsync the WAL, and checkpoint.

        Checkpoints wait for ``checkpoint_interval_s`` (default: ``interval_s``) since the
        last one, and for something to copy.
        In ``normal`` mode the write connection never checkpoints by itself
        (a checkpoint fsyncs twice and would stall the event loop); this loop
        does it on the worker thread, through a connection of its own. A checkpoint
        copies every page the WAL changed into the database file: rarer checkpoints
        write a page changed by many commits there once (the WAL grows meanwhile, and is
        reused from its start after each checkpoint).
        """
        wal = Path(f"{self._path}-wal")
        synced = checkpointed = 0  # commits made before this task first ran count too
        every = max(interval_s, checkpoint_interval_s or interval_s)
        loop = asyncio.get_running_loop()
        checkpointed_at = loop.time()
        checkpointer: sqlite3.Connection | None = None
        try:
            while True:
                await asyncio.sleep(interval_s)
                commits = self._commits
                sync = commits != synced
                # A little early rather than a whole interval late.
                checkpoint = commits != checkpointed and (
                    loop.time() - checkpointed_at >= every - interval_s / 2
                )
                if not sync and not checkpoint:
                    continue
                synced = commits
                if checkpoint:
                    checkpointed, checkpointed_at = commits, loop.time()
                try:
                    if checkpointer is None:
                        checkpointer = await self._thread.run(_checkpoint_connection, self._path)
                    await self._thread.run(
                        _sync, wal if sync else None, checkpointer if checkpoint else None
                    )
                except (OSError, sqlite3.Error) as exc:
                    log.warning("Could not sync the outbox %s: %s", self._path, exc)
        finally:
            if checkpointer is not None:
                checkpointer.close()

    # -- sinks ---------------------------------------------------------------

    def clock_ns(self) -> int:
        """The outbox's wall clock (for delivery times)."""
        return self._clock_ns()

    @property
    def sinks(self) -> tuple[str, ...]:
        """The sink names this outbox keeps cursors for."""
        return self._sinks

    @property
    def epoch(self) -> str:
        """This store's life (hex): a new store, or a wiped one, has a new epoch."""
        return self._epoch

    @property
    def last_id(self) -> int:
        """Highest committed record id."""
        return self._last_id

    @property
    def ready_id(self) -> int:
        """Highest record id the sinks may have: below the first provisional one."""
        hold = self._hold_from
        return self._last_id if hold is None else min(self._last_id, hold - 1)

    @property
    def held(self) -> bool:
        """Whether provisional records wait for a trusted (or estimated) time."""
        return self._hold_from is not None

    def set_boot(self, boot: str) -> None:
        """The boot that provisional records accepted from now on belong to."""
        self._boot = boot

    async def resolve(self, *, delta_ns: int, quality: str, boot: str | None) -> list[Reading]:
        """Re-stamp the provisional records of ``boot`` (``None``: every boot), once.

        Each gets ``delta_ns`` added to its time and ``quality`` as its time quality;
        its payload and InfluxDB line are rendered again, in one transaction, and the
        sinks may then have it: they never saw it before.

        Returns:
            The re-stamped readings, in id order.
        """

        def run() -> tuple[list[tuple[int, _Row]], int | None]:
            conn = self._conn
            changed: list[tuple[int, _Row]] = []
            with conn:
                rows = conn.execute(
                    "SELECT records.id, records.payload, records.line FROM provisional"
                    " JOIN records ON records.id = provisional.id"
                    + ("" if boot is None else " WHERE provisional.boot = ?")
                    + " ORDER BY records.id",
                    () if boot is None else (boot,),
                ).fetchall()
                for rid, stored, stored_line in rows:
                    try:
                        old = decode_reading(unpack(bytes(stored), stored_line)[0])
                    except ValueError:
                        continue  # written by this store: cannot happen; never block the rest
                    reading = dataclasses.replace(
                        old, ts_ns=old.ts_ns + delta_ns, time_quality=quality
                    )
                    row = self._row(reading)
                    payload, line = self._stored(row)
                    conn.execute(
                        "UPDATE records SET payload = ?, line = ? WHERE id = ?",
                        (payload, line, rid),
                    )
                    self._bytes += record_size(payload, line) - record_size(
                        bytes(stored), stored_line
                    )
                    changed.append((int(rid), row))
                if boot is None:
                    conn.execute("DELETE FROM provisional")
                else:
                    conn.execute("DELETE FROM provisional WHERE boot = ?", (boot,))
                hold = _lowest_provisional(conn)
            return changed, hold

        changed, hold = await self._write(run)
        self._hold_from = hold
        recent = self._recent
        for rid, row in changed:
            if recent and recent[0].id <= rid <= recent[-1].id:
                recent[rid - recent[0].id] = Record(
                    id=rid,
                    payload=row.payload,
                    reading=row.reading,
                    line=row.line,
                    device=row.device,
                    kind=row.kind,
                )
        self._notify()
        return [row.reading for _, row in changed]

    def cursor(self, sink: str) -> int:
        """The highest record id ``sink`` has delivered."""
        return self._cursors[sink]

    async def add_sink(self, sink: str) -> None:
        """Keep a cursor for ``sink`` from now on (a sink a reload adds).

        A sink this store knew before resumes from its kept cursor; a new one starts
        with the oldest record held, as a sink configured for the first time at start.
        """
        if sink in self._cursors:
            return

        def run() -> int:
            with self._conn:
                self._conn.execute(
                    "INSERT OR IGNORE INTO cursors (sink, delivered_id) VALUES (?, ?)",
                    (sink, self._first_id - 1),
                )
            row = self._conn.execute(
                "SELECT delivered_id FROM cursors WHERE sink = ?", (sink,)
            ).fetchone()
            return int(row[0])

        self._cursors[sink] = await self._write(run)
        self._sinks = (*self._sinks, sink)

    async def remove_sink(self, sink: str) -> None:
        """Hold no records for ``sink`` any more; its cursor stays on disk (``add_sink``)."""
        if sink not in self._cursors:
            return
        await self.flush()
        del self._cursors[sink]
        self._unsaved.pop(sink, None)
        self._sinks = tuple(s for s in self._sinks if s != sink)

    def backlog(self, sink: str) -> int:
        """Records accepted but not yet delivered by ``sink``."""
        return max(0, self._last_id - max(self._cursors[sink], self._first_id - 1))

    async def wait_beyond(self, record_id: int, timeout_s: float | None = None) -> bool:
        """Wait until a record with an id above ``record_id`` is committed and ready.

        Returns:
            Whether such a record exists (False on timeout or close).
        """
        try:
            async with asyncio.timeout(timeout_s):
                while self.ready_id <= record_id and not self._closing:
                    await self._changed.wait()
        except TimeoutError:
            pass
        return self.ready_id > record_id

    async def read_batch(self, sink: str, limit: int, *, after: int | None = None) -> list[Record]:
        """Return up to ``limit`` ready records after ``sink``'s cursor, in id order.

        ``after``: read after this id instead (beyond the cursor: records sent, not yet
        confirmed).
        """
        after = max(self._cursors[sink] if after is None else after, self._first_id - 1)
        limit = min(limit, self.ready_id - after)
        if limit <= 0:
            return []
        recent = self._recent
        if recent and recent[0].id <= after + 1 <= recent[-1].id:
            start = after + 1 - recent[0].id
            stop = min(len(recent), start + limit)
            return [recent[i] for i in range(start, stop)]

        def read(conn: sqlite3.Connection) -> list[Record]:
            out: list[Record] = []
            for rid, stored, stored_line, dev, kind in conn.execute(
                "SELECT id, payload, line, device, kind FROM records WHERE id > ?"
                " ORDER BY id LIMIT ?",
                (after, limit),
            ):
                try:
                    payload, line = unpack(bytes(stored), stored_line)
                except ValueError as exc:
                    raise OutboxError(f"outbox {self._path}: record {rid}: {exc}") from exc
                out.append(Record(id=int(rid), payload=payload, line=line, device=dev, kind=kind))
            return out

        return await self._read(read)

    async def ack(self, sink: str, upto_id: int, *, rejected: Sequence[Rejection] = ()) -> None:
        """Move ``sink``'s cursor to ``upto_id``; dead-letter ``rejected`` records.

        The cursor moves at once in memory and reaches the disk with the next
        commit (dead letters are written before this returns).
        """
        previous = self._cursors[sink]
        if upto_id <= previous and not rejected:
            return
        delivered = max(0, upto_id - max(previous, self._first_id - 1)) - len(rejected)
        delta = self._unsaved.setdefault(sink, _CursorDelta(upto=upto_id))
        delta.upto = max(delta.upto, upto_id)
        delta.delivered += max(0, delivered)
        delta.at_ns = self._clock_ns()
        self._cursors[sink] = max(previous, upto_id)
        if rejected:
            # Dead letters are written now, with the cursor move after them.
            await self._commit_now([], [(sink, rej) for rej in rejected])
        acked, self._acked = self._acked, asyncio.Event()
        acked.set()

    async def acked(self) -> None:
        """Wait until some sink acknowledges records."""
        await self._acked.wait()

    # -- inspection ----------------------------------------------------------

    async def sequences(self) -> dict[str, int]:
        """The last sequence number committed per device."""

        def read(conn: sqlite3.Connection) -> dict[str, int]:
            return {str(d): int(s) for d, s in conn.execute("SELECT device, seq FROM sequences")}

        stored = await self._read(read)
        for device, seq in self._seqs_unsaved.items():
            stored[device] = max(stored.get(device, 0), seq)
        return stored

    async def flush(self) -> None:
        """Write pending cursor moves now."""
        if self._unsaved:
            await self._commit_now([], [])

    async def stats(self) -> OutboxStats:
        """A consistent snapshot of backlog, quota use and drops (cursors flushed first)."""
        await self.flush()
        return await self._read(
            lambda conn: stats_from(conn, self._path, self._max_bytes, self._sinks)
        )

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        return await self._read(lambda conn: dead_letters_from(conn, limit))

    async def close(self) -> None:
        """Finish pending commits and cursor moves; later ``accept`` calls fail."""
        self._closing = True
        self._kick.set()
        self._notify()


def _checkpoint_connection(path: Path) -> sqlite3.Connection:
    # The database is in WAL mode already; this connection only checkpoints.
    return connect(path, busy_timeout_ms=1000, wal=False, isolation_level=None)


def _sync(wal: Path | None, checkpointer: sqlite3.Connection | None) -> None:
    if wal is not None:
        _fsync(wal)  # what is committed is now on disk
    if checkpointer is not None:
        # Copy it into the database file so the WAL does not grow without bound.
        checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open(
    path: Path, synchronous: Synchronous, page_size: int | None
) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    # The write connection, then a read-only one for large reads.
    try:
        conn = connect(
            path,
            synchronous=synchronous,
            page_size=page_size,
            # In normal mode sync_loop checkpoints, off the event loop; commits must not.
            wal_autocheckpoint=0 if synchronous == "normal" else None,
            prepare=create_schema,
        )
        try:
            return conn, connect_read_only(path)
        except BaseException:
            conn.close()
            raise
    except (sqlite3.Error, OSError) as exc:
        raise OutboxError(f"cannot open outbox {path}: {exc}") from exc


def _close(conns: tuple[sqlite3.Connection, sqlite3.Connection], wal: Path) -> None:
    conn, reader = conns
    reader.close()
    conn.close()  # the last connection checkpoints and removes the WAL
    _fsync(wal)


@asynccontextmanager
async def open_outbox(
    path: Path,
    *,
    sinks: Sequence[str],
    max_bytes: int = 512 * 1024 * 1024,
    synchronous: Synchronous = "normal",
    sync_interval_s: float = 1.0,
    cursor_flush_s: float = 0.25,
    line_encoder: LineEncoder | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    commit_delay_s: float = 0.0,
    prune_interval_s: float = 0.0,
    checkpoint_interval_s: float | None = None,
    page_size: int | None = None,
    compress: bool = False,
) -> AsyncIterator[Outbox]:
    """Open (creating if needed) the outbox at ``path`` and run its writer.

    ``page_size`` applies to a store created now (an existing one keeps its own);
    ``compress`` packs the records accepted from now on (``schema.pack``);
    ``prune_interval_s`` and ``checkpoint_interval_s`` are explained in the module
    docstring and ``Outbox.sync_loop``.

    Raises:
        OutboxError: The database cannot be opened.
    """
    wal = Path(f"{path}-wal")
    async with open_on_thread(
        "outbox",
        functools.partial(_open, path, synchronous, page_size),
        functools.partial(_close, wal=wal),
    ) as ((conn, reader), thread):
        outbox = Outbox(
            conn,
            reader,
            thread,
            path=path,
            sinks=sinks,
            max_bytes=max_bytes,
            inline=synchronous == "normal",
            line_encoder=line_encoder,
            cursor_flush_s=cursor_flush_s,
            clock_ns=clock_ns,
            commit_delay_s=commit_delay_s,
            prune_interval_s=prune_interval_s,
            compress=compress,
        )
        await outbox._write(outbox._load)
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(outbox.writer_loop(), name="outbox-writer")
            syncer = (
                tg.create_task(
                    outbox.sync_loop(sync_interval_s, checkpoint_interval_s), name="outbox-fsync"
                )
                if synchronous == "normal"
                else None
            )
            try:
                yield outbox
            finally:
                await outbox.close()
                await writer
                if syncer is not None:
                    syncer.cancel()


def _lowest_provisional(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT MIN(id) FROM provisional").fetchone()
    return None if row is None or row[0] is None else int(row[0])
