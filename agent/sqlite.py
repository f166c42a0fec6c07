"""SQLite for the agent's stores: one way to connect, one worker thread per store.

Theory of operation
-------------------
Each store the agent keeps on disk (the outbox, the history, huller maintenance, lots) is
one SQLite database, written by the agent and, for maintenance and lots, at the same time
by a ``coffee-telemetry`` command in another process. ``connect`` opens such a database
the one way they all do, in autocommit mode (``isolation_level=None``), and sets:

1. ``busy_timeout``: how long a statement waits for another connection's lock before it
   fails with "database is locked". Set first, so the steps below wait too.
2. ``page_size`` and ``auto_vacuum``, when asked, in that order: they only take effect
   before the first table is created (an existing database keeps its own), so they
   precede ``prepare`` and the switch to WAL. A smaller page writes fewer bytes per
   changed page: every commit writes each page it changes to the WAL in full, and a
   checkpoint writes it again into the database.
3. ``secure_delete=FAST``: the SQLite this runs on may be built to zero every freed page
   and write it (``secure_delete`` on), which makes deleting delivered or expired rows
   write each page they were on once more; ``FAST`` zeroes deleted content only in the
   pages a transaction writes anyway.
4. ``journal_mode=WAL``: readers never wait for the writer, and one writer commits at a
   time. The mode belongs to the file: every later connection inherits it.
5. ``synchronous``, per connection, when asked: ``FULL`` fsyncs the WAL at every commit
   (a commit survives a power cut); ``NORMAL`` only at checkpoints (a power cut may lose
   the last commits, never the database). Unset, SQLite's default holds (``FULL``).
6. ``wal_autocheckpoint``, when asked (0 turns automatic checkpoints off: the outbox
   checkpoints itself, off the event loop).

Then ``prepare(conn)`` creates or migrates the schema, still in autocommit, and the
connection's ``isolation_level`` is set for the store's own transactions: ``with conn:``
begins ``DEFERRED`` (the write lock is taken at the first write) or ``IMMEDIATE`` (at
``BEGIN``, so the busy timeout covers waiting for another process's commit). A connection
that fails anywhere on the way is closed before the error goes up.

What each store asks for (its module says why):

============  =================  =======================================  ==========
store         synchronous        checkpoints                              BEGIN
============  =================  =======================================  ==========
outbox        FULL or NORMAL     NORMAL: automatic off, ``sync_loop``     DEFERRED
history       NORMAL             automatic; ``auto_vacuum=INCREMENTAL``   DEFERRED
maintenance   FULL (default)     automatic                                IMMEDIATE
lots          SQLite's default   automatic                                DEFERRED
============  =================  =======================================  ==========

Schema versions
---------------
Every store's ``prepare`` is ``migrate(conn, steps, name=..., path=...)``: the store's
schema version is SQLite's ``PRAGMA user_version`` (0 for a new file, and for stores
written before versions were kept), and ``steps[i]`` takes a store from version ``i`` to
``i + 1``. The steps still to run, and the new ``user_version``, are one ``BEGIN
IMMEDIATE`` transaction: a crash or ``SIGKILL`` midway leaves the file at its old
version, as it was (WAL rolls back what was not committed), and the next start runs the
steps again. The version is read again under the write lock, so two processes opening
the same store at once migrate it once. A store whose version is higher than the steps
this code knows was written by a newer release: it is refused with ``ConfigError``
(file, its version, the supported one) and nothing is written. A step runs statements
one at a time (``script`` splits a schema text): ``executescript`` would commit the
transaction first. Steps for version 0 must accept a store of any earlier release
(``CREATE TABLE IF NOT EXISTS``, a column added only if missing); a later step runs only
on a store at exactly its version.

Threads
-------
Every ``sqlite3`` call blocks, and nothing may block the event loop. A store the agent
uses from the loop is a synchronous class run on a ``StoreThread``: one worker thread
that runs the store's calls one at a time, in the order they were made. ``open_on_thread``
opens a store on its thread and closes it there on exit; ``ThreadedStore`` is the base of
a store's event-loop side (``AsyncHistory``, ``AsyncMaintenanceStore``), whose methods
hand the synchronous store's methods to the thread. Connections are made with
``check_same_thread=False``: the thread that opens a store need not be the one that
closes it (the CLI opens and closes on its main thread, the agent on the store's).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Generic, Literal, ParamSpec, TypeAlias, TypeVar

from coffee_telemetry.agent.errors import ConfigError

__all__ = [
    "MigrationStep",
    "StoreThread",
    "Synchronous",
    "ThreadedStore",
    "connect",
    "connect_read_only",
    "migrate",
    "open_on_thread",
    "script",
    "store_thread",
    "user_version",
]

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")

#: ``PRAGMA synchronous`` of a store that chooses it: fsync at every commit, or at checkpoints.
Synchronous = Literal["full", "normal"]


def connect(
    path: Path,
    *,
    busy_timeout_ms: int = 5000,
    wal: bool = True,
    synchronous: Synchronous | None = None,
    auto_vacuum: Literal["incremental"] | None = None,
    page_size: int | None = None,
    wal_autocheckpoint: int | None = None,
    prepare: Callable[[sqlite3.Connection], None] | None = None,
    isolation_level: Literal["DEFERRED", "IMMEDIATE"] | None = "DEFERRED",
) -> sqlite3.Connection:
    """Open (creating it and its folder if needed) the database at ``path``.

    Args:
        path: Database file.
        busy_timeout_ms: How long a statement waits for another connection's lock.
        wal: Switch the database to WAL mode (off only for extra connections to a database
            already in WAL mode).
        synchronous: ``PRAGMA synchronous`` of this connection; ``None`` keeps SQLite's.
        auto_vacuum: ``PRAGMA auto_vacuum`` of a database created now.
        page_size: ``PRAGMA page_size`` (bytes, a power of two from 512 to 65536) of a
            database created now; an existing one keeps its page size.
        wal_autocheckpoint: ``PRAGMA wal_autocheckpoint`` in pages (0: never).
        prepare: Creates or migrates the schema, in autocommit mode.
        isolation_level: How ``with conn:`` begins its transactions afterwards; ``None``
            stays in autocommit mode.

    Raises:
        sqlite3.Error: The database cannot be opened, set up or prepared (the connection
            is closed).
        OSError: The folder cannot be created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if page_size is not None:  # before auto_vacuum, which would fix the size first
            conn.execute(f"PRAGMA page_size={int(page_size)}")
        if auto_vacuum is not None:
            conn.execute(f"PRAGMA auto_vacuum={auto_vacuum.upper()}")
        conn.execute("PRAGMA secure_delete=FAST")
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        if synchronous is not None:
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if wal_autocheckpoint is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
        if prepare is not None:
            prepare(conn)
    except BaseException:
        conn.close()
        raise
    conn.isolation_level = isolation_level
    return conn


def connect_read_only(path: Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """Open an existing database at ``path`` read-only (a second, reading connection).

    Raises:
        sqlite3.Error: It does not exist or cannot be opened.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    except BaseException:
        conn.close()
        raise
    return conn


#: Takes a store from one schema version to the next, inside ``migrate``'s transaction.
MigrationStep: TypeAlias = Callable[[sqlite3.Connection], None]


def user_version(conn: sqlite3.Connection) -> int:
    """The store's schema version (``PRAGMA user_version``; 0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def script(sql: str) -> MigrationStep:
    """A step that runs the statements of ``sql`` one by one (no ``executescript``)."""
    statements: list[str] = []
    pending = ""
    for part in sql.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                statements.append(pending.strip())
            pending = ""

    def run(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return run


def migrate(
    conn: sqlite3.Connection,
    steps: Sequence[MigrationStep],
    *,
    name: str,
    path: Path | None = None,
) -> int:
    """Bring the store on ``conn`` (autocommit) to version ``len(steps)``, in one transaction.

    Args:
        conn: A connection in autocommit mode (``connect`` calls ``prepare`` so).
        steps: ``steps[i]`` takes version ``i`` to ``i + 1``.
        name: The store's name in messages (``outbox``, ``lots``...).
        path: The file, for messages (default: the connection's main database).

    Returns:
        The version the store had before (``len(steps)`` if it was current).

    Raises:
        ConfigError: A newer release wrote the store (nothing is written).
        sqlite3.Error: A step failed (the store is left at its old version).
    """
    target = len(steps)
    found = user_version(conn)
    if found == target:
        return found
    _refuse_newer(conn, found, target, name=name, path=path)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = user_version(conn)  # another process may have migrated meanwhile
        _refuse_newer(conn, found, target, name=name, path=path)
        for step in steps[found:]:
            step(conn)
        conn.execute(f"PRAGMA user_version={target}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def _refuse_newer(
    conn: sqlite3.Connection, found: int, target: int, *, name: str, path: Path | None
) -> None:
    if found <= target:
        return
    if path is None:
        path = Path(conn.execute("PRAGMA database_list").fetchone()[2])
    raise ConfigError(
        [
            (
                "",
                f"{name} store written by a newer version of coffee-telemetry (schema"
                f" version {found}; this version supports up to {target}); nothing was"
                " changed: upgrade coffee-telemetry, or restore a backup made by this version",
            )
        ],
        source=str(path),
    )


class StoreThread:
    """One worker thread that runs a store's blocking calls, one at a time, in order.

    Use ``store_thread`` (or ``open_on_thread``), which stops it on exit.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the thread and wait for its result."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        """Wait for the calls already handed over, then stop the thread."""
        self._executor.shutdown(wait=True)


@asynccontextmanager
async def store_thread(name: str) -> AsyncIterator[StoreThread]:
    """A ``StoreThread`` named ``name``, stopped on exit."""
    thread = StoreThread(name)
    try:
        yield thread
    finally:
        thread.shutdown()


@asynccontextmanager
async def open_on_thread(
    name: str, open_store: Callable[[], S], close_store: Callable[[S], None]
) -> AsyncIterator[tuple[S, StoreThread]]:
    """Open a store on a new ``StoreThread``; close it there and stop the thread on exit.

    Args:
        name: The thread's name.
        open_store: Opens the store (on the thread); what it raises goes up.
        close_store: Closes it (on the thread), however the block ends.
    """
    async with store_thread(name) as thread:
        store = await thread.run(open_store)
        try:
            yield store, thread
        finally:
            await thread.run(close_store, store)


class ThreadedStore(Generic[S]):
    """The event-loop side of a synchronous store: its calls run on the store's thread.

    Subclasses add one ``async`` method per store method they offer, each handing the
    call to ``_run``.

    Attributes:
        sync: The synchronous store, for code that already runs off the event loop.
    """

    def __init__(self, store: S, thread: StoreThread) -> None:
        self.sync = store
        self._thread = thread

    async def _run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._thread.run(fn, *args, **kwargs)
