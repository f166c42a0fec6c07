"""The history in the agent: ``open_history`` and its event-loop side, ``AsyncHistory``.

``open_history`` opens the store (``History``) on its own thread (``agent.sqlite``) and
runs ``history_loop`` while it is in use: every ``flush_interval_s`` what ``add``
buffered is written there, and every ``prune_interval_s`` retention and the disk bound
are applied, starting with one prune at start (the box may have been off for weeks). A
failed write is logged and tried again on the next flush: the points stay pending.

Writes and prunes run one at a time on the store's thread. Queries run on the default
thread pool instead: they read through the store's read connection (WAL readers never
wait for the writer), so a long prune never holds up a dashboard panel.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date, tzinfo
from pathlib import Path

from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.history.lots import LotSummary
from coffee_telemetry.agent.history.queries import Latest
from coffee_telemetry.agent.history.schema import NS
from coffee_telemetry.agent.history.store import History, HistoryStats
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.sqlite import ThreadedStore, open_on_thread

__all__ = ["AsyncHistory", "open_configured_history", "open_history"]

log = logging.getLogger(__name__)


class AsyncHistory(ThreadedStore[History]):
    """``History`` for the event loop: writes on the store's thread, queries on others.

    ``add`` stays synchronous (it only buffers). ``sync`` is the underlying
    ``History`` for code that already runs in a thread.
    """

    def add(self, reading: Reading) -> None:
        """Buffer a reading (a ``ReadingListener``); see ``History.add``."""
        self.sync.add(reading)

    async def flush(self) -> int:
        """Write what is pending; see ``History.write``."""
        return await self._run(self.sync.write, self.sync.take_pending())

    async def prune(self, now_ns: int) -> int:
        """Apply retention and the disk bound; see ``History.prune``."""
        return await self._run(self.sync.prune, now_ns)

    async def series(
        self,
        measurement: str,
        device: str,
        field: str,
        start_ns: int,
        end_ns: int,
        *,
        max_points: int = 1000,
    ) -> list[tuple[int, float]]:
        """See ``History.series``."""
        return await asyncio.to_thread(
            self.sync.series, measurement, device, field, start_ns, end_ns, max_points=max_points
        )

    async def latest(self, measurement: str) -> dict[str, Latest]:
        """See ``History.latest``."""
        return await asyncio.to_thread(self.sync.latest, measurement)

    async def lots_today(self, since_ns: int) -> dict[str, LotSummary]:
        """See ``History.lots_today``."""
        return await asyncio.to_thread(self.sync.lots_today, since_ns)

    async def daily_hours(
        self, huller: str, days: int, *, tz: tzinfo, now_ns: int | None = None
    ) -> list[tuple[date, float]]:
        """See ``History.daily_hours``."""
        return await asyncio.to_thread(self.sync.daily_hours, huller, days, tz=tz, now_ns=now_ns)

    async def stats(self) -> HistoryStats:
        """See ``History.stats``."""
        return await asyncio.to_thread(self.sync.stats)

    async def history_loop(
        self,
        *,
        flush_interval_s: float = 1.0,
        prune_interval_s: float = 3600.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Flush every ``flush_interval_s`` and prune every ``prune_interval_s``, forever."""
        next_prune = clock_ns()  # prune once at start: the box may have been off for weeks
        while True:
            try:
                await self.flush()
                now = clock_ns()
                if now >= next_prune:
                    await self.prune(now)
                    next_prune = now + int(prune_interval_s * NS)
            except sqlite3.Error as exc:
                log.warning("History write failed, retrying: %s", exc)
            await asyncio.sleep(flush_interval_s)


def open_configured_history(cfg: Config) -> AbstractAsyncContextManager[AsyncHistory]:
    """``open_history`` with the site's ``[history]`` settings."""
    day = 86_400.0
    return open_history(
        cfg.history_path,
        max_mb=cfg.history.max_mb,
        raw_retention_s=cfg.history.raw_retention_days * day,
        rollup_1m_retention_s=cfg.history.rollup_retention_days * day,
        rollup_1h_retention_s=cfg.history.rollup_retention_days * day,
        flush_interval_s=cfg.history.flush_interval_s,
        page_size=cfg.history.page_size,
    )


@asynccontextmanager
async def open_history(
    path: Path,
    *,
    max_mb: float = 2048.0,
    max_pending: int = 100_000,
    raw_retention_s: float = 30 * 86_400,
    rollup_1m_retention_s: float = 2 * 365 * 86_400,
    rollup_1h_retention_s: float = 2 * 365 * 86_400,
    lot_retention_s: float = 2 * 365 * 86_400,
    flush_interval_s: float = 1.0,
    prune_interval_s: float = 3600.0,
    clock_ns: Callable[[], int] = time.time_ns,
    page_size: int | None = None,
) -> AsyncIterator[AsyncHistory]:
    """Open the history at ``path`` and run its flush/prune loop while in use.

    On exit the loop stops, what is pending is written and the database closed.

    Raises:
        HistoryError: The database cannot be opened.
    """
    opener = functools.partial(
        History.open,
        path,
        max_mb=max_mb,
        max_pending=max_pending,
        raw_retention_s=raw_retention_s,
        rollup_1m_retention_s=rollup_1m_retention_s,
        rollup_1h_retention_s=rollup_1h_retention_s,
        lot_retention_s=lot_retention_s,
        page_size=page_size,
    )
    async with open_on_thread("history", opener, History.close) as (history, thread):
        wrapper = AsyncHistory(history, thread)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(
                wrapper.history_loop(
                    flush_interval_s=flush_interval_s,
                    prune_interval_s=prune_interval_s,
                    clock_ns=clock_ns,
                ),
                name="history",
            )
            try:
                yield wrapper
            finally:
                task.cancel()
