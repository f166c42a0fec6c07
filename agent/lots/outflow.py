"""Lot record events written by people, sent on through the outbox (MQTT, InfluxDB, NATS).

Theory of operation
-------------------
Most of a lot's record comes from the outbox (readings, weighments, lot assignments,
alerts), so every sink, the central recorder's NATS stream included, already has it.
What people write straight into the lot record store does not pass the outbox: details,
corrections (``moved_out``, ``moved_in``), blends (``blend``, ``blended``) and the other
events with no outbox identity (``ident`` NULL, or ``lotrec:...``). ``LotRecordEvents``
sends those on: it reads them in id order past its cursor, hands them to the accept
stage as ``lot_record`` events (device ``lot-records``, tag ``lot``, the event's own time, kept
exactly so a resend is the same InfluxDB point), and moves the cursor
(``lot_event_cursor`` in the lot store) only once the outbox has them: at least once,
through crashes.

Fields of a ``lot_record`` event: ``event_id`` (the lot store's), ``event`` (its kind),
``text``, ``by``, ``source`` and ``data`` (the event's details, JSON text).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence

from coffee_telemetry.agent.lots.records import AsyncLotRecords
from coffee_telemetry.agent.readings import Draft

__all__ = ["CURSOR", "DEVICE", "MEASUREMENT", "LotRecordEvents", "pending_events"]

log = logging.getLogger(__name__)

#: The cursor's name in ``lot_event_cursor``.
CURSOR = "outbox"
#: The device id and measurement of the events sent on.
DEVICE = "lot-records"
MEASUREMENT = "lot_record"
#: Events sent in one batch.
BATCH = 200

Row = tuple[int, str, int, str, str, str, str, str]


def pending_events(conn: sqlite3.Connection, limit: int = BATCH) -> list[Row]:
    """Events past the cursor with no outbox identity, oldest first.

    Each is ``(id, lot, ts_ns, kind, text, by, source, data)``.
    """
    row = conn.execute("SELECT event_id FROM lot_event_cursor WHERE name = ?", (CURSOR,)).fetchone()
    after = 0 if row is None else int(row[0])
    return [
        (int(i), str(code), int(ts), str(kind), str(text), str(by), str(source), str(data))
        for i, code, ts, kind, text, by, source, data in conn.execute(
            "SELECT e.id, l.code, e.ts_ns, e.kind, e.text, e.by, e.source, e.data FROM events e"
            " JOIN lots l ON l.id = e.lot_id WHERE e.id > ?"
            " AND (e.ident IS NULL OR e.ident LIKE 'lotrec:%') ORDER BY e.id LIMIT ?",
            (after, limit),
        )
    ]


def _advance(conn: sqlite3.Connection, event_id: int) -> None:
    conn.execute(
        "INSERT INTO lot_event_cursor (name, event_id) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET event_id = MAX(event_id, excluded.event_id)",
        (CURSOR, event_id),
    )


def _draft(site: str, row: Row) -> Draft:
    event_id, code, ts, kind, text, by, source, data = row
    return Draft(
        device=DEVICE,
        measurement=MEASUREMENT,
        fields={
            "event_id": event_id,
            "event": kind,
            "text": text,
            "by": by,
            "source": source,
            "data": data,
        },
        tags={"site": site, "device": DEVICE, "lot": code},
        kind="event",
        ts_ns=ts,
        exact=True,
    )


class LotRecordEvents:
    """Sends the lot store's people-written events into the outbox (module docstring).

    Args:
        records: The lot record store.
        site: The site id (the ``site`` tag).
        record: The accept stage's ``record`` (commits drafts to the outbox).
        poll_s: How often the store is looked at.
    """

    def __init__(
        self,
        records: AsyncLotRecords,
        *,
        site: str,
        record: Callable[[Sequence[Draft]], Awaitable[object]],
        poll_s: float = 2.0,
    ) -> None:
        self._records = records
        self._site = site
        self._record = record
        self._poll_s = poll_s
        #: Events sent since start.
        self.sent = 0

    async def send_pending(self) -> int:
        """Send what is past the cursor (all of it, batch by batch); how many were sent."""
        sent = 0
        while True:
            rows = await self._records.call(self._records.sync.read_with, pending_events)
            if not rows:
                return sent
            await self._record([_draft(self._site, row) for row in rows])
            last = rows[-1][0]
            await self._records.call(
                self._records.sync.write_with, functools.partial(_advance, event_id=last)
            )
            sent += len(rows)
            self.sent += len(rows)

    async def run_loop(self) -> None:
        """Send new events every ``poll_s`` (a supervised interface)."""
        while True:
            try:
                await self.send_pending()
            except sqlite3.Error as exc:
                log.warning("Lot record events not sent on yet: %s", exc)
            await asyncio.sleep(self._poll_s)
