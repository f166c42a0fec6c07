"""SQLite for the agent's stores: one way to connect, one worker thread per store.

Theory of operation
-------------------
Each store the agent keeps on disk (the outbox, the history, huller maintenance, lots) is
one SQLite database, written by the agent and, for maintenance and lots, at the same time
by a ``coffee-telemetry`` command in another process. ``connect`` opens such a database
the one way they all do, in autocommit mode (``isolation_level=None``), and sets:

1. ``busy_timeout``: how long a statement waits for another connection's lock before it
   fails with "database is locked". Set first, so the steps below wait too.
2. ``auto_vacuum``, when asked: it only takes effect before the first table is created
   (an existing database keeps its own), so it precedes ``prepare``.
3. ``journal_mode=WAL``: readers never wait for the writer, and one writer commits at a
   time. The mode belongs to the file: every later connection inherits it.
4. ``synchronous``, per connection, when asked: ``FULL`` fsyncs the WAL at every commit
   (a commit survives a power cut); ``NORMAL`` only at checkpoints (a power cut may lose
   the last commits, never the database). Unset, SQLite's default holds (``FULL``).
5. ``wal_autocheckpoint``, when asked (0 turns automatic checkpoints off: the outbox
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
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Generic, Literal, ParamSpec, TypeVar

__all__ = [
    "StoreThread",
    "Synchronous",
    "ThreadedStore",
    "connect",
    "connect_read_only",
    "open_on_thread",
    "store_thread",
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
        if auto_vacuum is not None:
            conn.execute(f"PRAGMA auto_vacuum={auto_vacuum.upper()}")
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
