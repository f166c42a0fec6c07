"""The notification queue: one durable queue per channel, apart from the readings outbox.

Theory of operation
-------------------
Notifications live in their own SQLite database (``data_dir/notify.sqlite3``, opened by
``agent.sqlite.connect``: WAL, ``synchronous=FULL``, so a queued message survives a
power cut). Readings never wait here and messages never wait in the outbox: a channel
that fails for days pins nothing but its own rows, and another channel's loop never
reads them.

Tables:

``queue``
    A message waiting for its channel: its JSON (``model.Message``), when it may go
    (``due_ns``: at once, or the end of quiet hours), when it stops mattering (``expires_ns``),
    attempts and the last error. ``key`` is unique: queuing a message again (a crash
    between the queue commit and the alert state's save, a resubmitted event) is a no-op.
``done``
    What became of every message that left ``queue``: ``sent``, ``dead`` (the channel
    refused it for good: bad credentials, an unknown number; shown in health and by
    ``read_notify_stats``) or ``expired`` (too old to matter, dropped with a record).
    Its key stays unique too, so a message delivered once is never queued again.
    Rows older than ``KEEP_DONE_DAYS`` go at open.
``escalations``
    One row per (alert episode, route) still firing and unacknowledged: its level,
    who was told, when the next contact is due. Acknowledged or resolved, the row goes.
``events``
    Every alert event handed over (for the daily digest), kept ``KEEP_DONE_DAYS``.
``meta``
    Small facts that must survive a restart (the day of the last digest).
``acks``
    One acknowledgement credential per (episode, contact): the nonce its signed link
    carries and the short code an SMS or Telegram answer carries, its expiry and, once
    used, when and how. A credential is used once.

Every method runs on the store's thread (``AsyncNotifyStore``); each is one
transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from coffee_telemetry.agent.notify.model import AlertEvent, Message
from coffee_telemetry.agent.sqlite import (
    ThreadedStore,
    connect,
    connect_read_only,
    migrate,
    open_on_thread,
    script,
)

__all__ = [
    "AckRow",
    "AsyncNotifyStore",
    "ChannelCounts",
    "DeadLetter",
    "EscalationRow",
    "NotifyStore",
    "Queued",
    "open_notify_store",
    "read_notify_stats",
]

#: Delivered and expired records are kept this long (dead letters too).
KEEP_DONE_DAYS = 30
NS = 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    due_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (channel, due_ns, id);
CREATE TABLE IF NOT EXISTS done (
    key TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT,
    status INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS done_at ON done (outcome, at_ns);
CREATE TABLE IF NOT EXISTS escalations (
    episode TEXT NOT NULL,
    route TEXT NOT NULL,
    level INTEGER NOT NULL,
    next_ns INTEGER,
    notified TEXT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (episode, route)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    episode TEXT NOT NULL,
    state TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at_ns);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acks (
    nonce TEXT PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    episode TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_ns INTEGER NOT NULL,
    used_ns INTEGER,
    used_via TEXT
);
"""


@dataclass(frozen=True, slots=True)
class Queued:
    """A queued message and its queue row."""

    id: int
    message: Message
    attempts: int


@dataclass(frozen=True, slots=True)
class EscalationRow:
    """An episode's escalation on one route.

    Attributes:
        episode: ``rule/subject/since_ns``.
        route: The route's name.
        level: The last escalation level told (0: the first contact).
        next_ns: When the next contact is due (None: nobody is next).
        notified: The contacts told so far, in order.
        event: The latest firing event (``AlertEvent.to_json``).
    """

    episode: str
    route: str
    level: int
    next_ns: int | None
    notified: tuple[str, ...]
    event: str


@dataclass(frozen=True, slots=True)
class AckRow:
    """An acknowledgement credential (see the module docstring)."""

    nonce: str
    code: str
    episode: str
    contact: str
    expires_ns: int
    used_ns: int | None
    used_via: str | None


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    """One channel's queue: waiting, and what became of the rest."""

    channel: str
    queued: int
    sent: int
    dead: int
    expired: int
    oldest_ns: int | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message its channel refused for good."""

    key: str
    channel: str
    at_ns: int
    reason: str
    status: int | None
    message: Message


#: Schema versions: ``STEPS[i]`` takes the store from version ``i`` to ``i + 1``
#: (``agent.sqlite.migrate``; stores made before versions existed are version 0).
STEPS = (script(_SCHEMA),)


def _prepare(conn: sqlite3.Connection) -> None:
    migrate(conn, STEPS, name="notification queue")


class NotifyStore:
    """The queue's database (synchronous; see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path, *, now_ns: int) -> NotifyStore:
        """Open (creating) the database at ``path`` and forget old records."""
        conn = connect(path, synchronous="full", prepare=_prepare, isolation_level="IMMEDIATE")
        with conn:
            conn.execute(
                "DELETE FROM done WHERE at_ns < ?", (now_ns - KEEP_DONE_DAYS * 86400 * NS,)
            )
            conn.execute("DELETE FROM acks WHERE expires_ns < ?", (now_ns - 86400 * NS,))
            conn.execute(
                "DELETE FROM events WHERE at_ns < ?", (now_ns - KEEP_DONE_DAYS * 86400 * NS,)
            )
        return cls(conn)

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    # -- the queue ---------------------------------------------------------------------

    def enqueue(self, messages: Sequence[tuple[Message, int]]) -> int:
        """Queue ``(message, due_ns)`` pairs in one transaction; returns how many are new.

        A message whose key is queued or done already is skipped.
        """
        added = 0
        with self._conn:
            for message, due_ns in messages:
                if self._conn.execute(
                    "SELECT 1 FROM done WHERE key = ?", (message.key,)
                ).fetchone():
                    continue
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO queue (channel, key, doc, created_ns, due_ns,"
                    " expires_ns) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        message.channel,
                        message.key,
                        message.to_json(),
                        message.created_ns,
                        due_ns,
                        message.expires_ns,
                    ),
                )
                added += cur.rowcount
        return added

    def next_due(self, channel: str, now_ns: int) -> Queued | None:
        """The channel's first message due at ``now_ns`` (oldest first)."""
        row = self._conn.execute(
            "SELECT id, doc, attempts FROM queue WHERE channel = ? AND due_ns <= ?"
            " ORDER BY due_ns, id LIMIT 1",
            (channel, now_ns),
        ).fetchone()
        if row is None:
            return None
        return Queued(id=row[0], message=Message.from_json(row[1]), attempts=row[2])

    def next_due_ns(self, channel: str) -> int | None:
        """When the channel's next message is due (None: nothing queued)."""
        row = self._conn.execute(
            "SELECT MIN(due_ns) FROM queue WHERE channel = ?", (channel,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def finish(
        self,
        queued_id: int,
        outcome: str,
        *,
        now_ns: int,
        reason: str | None = None,
        status: int | None = None,
    ) -> None:
        """Move a message from ``queue`` to ``done`` as ``sent`` or ``dead``."""
        with self._conn:
            self._finish(queued_id, outcome, now_ns=now_ns, reason=reason, status=status)

    def _finish(
        self, queued_id: int, outcome: str, *, now_ns: int, reason: str | None, status: int | None
    ) -> None:
        row = self._conn.execute(
            "SELECT key, channel, doc, attempts FROM queue WHERE id = ?", (queued_id,)
        ).fetchone()
        if row is None:
            return
        key, channel, doc, attempts = row
        self._conn.execute("DELETE FROM queue WHERE id = ?", (queued_id,))
        self._conn.execute(
            "INSERT OR REPLACE INTO done (key, channel, outcome, at_ns, attempts, reason,"
            " status, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, channel, outcome, now_ns, attempts + 1, reason, status, doc),
        )

    def failed(self, queued_id: int, *, error: str) -> None:
        """Count a failed attempt (the channel loop waits out the back-off itself)."""
        with self._conn:
            self._conn.execute(
                "UPDATE queue SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error, queued_id),
            )

    def expire(self, channel: str, now_ns: int) -> list[Message]:
        """Drop the channel's messages past their ``expires_ns``; returns them."""
        with self._conn:
            rows = self._conn.execute(
                "SELECT id, doc, last_error FROM queue WHERE channel = ? AND expires_ns <= ?",
                (channel, now_ns),
            ).fetchall()
            for row_id, _, last_error in rows:
                self._finish(
                    row_id,
                    "expired",
                    now_ns=now_ns,
                    reason=f"too old to matter; last error: {last_error or 'none'}",
                    status=None,
                )
        return [Message.from_json(doc) for _, doc, _ in rows]

    def counts(self) -> list[ChannelCounts]:
        """Per channel: queued, sent, dead, expired, and the oldest queued."""
        return _counts(self._conn)

    # -- escalations -------------------------------------------------------------------

    def escalations(self, episode: str | None = None) -> list[EscalationRow]:
        """The open escalations (of one episode)."""
        sql = "SELECT episode, route, level, next_ns, notified, event FROM escalations"
        args: tuple[str, ...] = ()
        if episode is not None:
            sql += " WHERE episode = ?"
            args = (episode,)
        return [
            EscalationRow(e, r, lv, n, tuple(json.loads(who)), ev)
            for e, r, lv, n, who, ev in self._conn.execute(sql + " ORDER BY episode, route", args)
        ]

    def put_escalation(self, row: EscalationRow) -> None:
        """Create or replace an escalation row."""
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO escalations VALUES (?, ?, ?, ?, ?, ?)",
                (
                    row.episode,
                    row.route,
                    row.level,
                    row.next_ns,
                    json.dumps(list(row.notified), ensure_ascii=False),
                    row.event,
                ),
            )

    def close_episode(self, episode: str) -> list[EscalationRow]:
        """Remove the episode's escalations (acknowledged or resolved); returns them."""
        with self._conn:
            rows = self.escalations(episode)
            self._conn.execute("DELETE FROM escalations WHERE episode = ?", (episode,))
        return rows

    # -- acknowledgement credentials ---------------------------------------------------

    def add_ack(self, row: AckRow) -> bool:
        """Store a new credential; False if its nonce or code is taken."""
        try:
            with self._conn:
                self._conn.execute(
                    "INSERT INTO acks VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                    (row.nonce, row.code, row.episode, row.contact, row.expires_ns),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def ack_for(self, episode: str, contact: str, now_ns: int) -> AckRow | None:
        """The unused, unexpired credential of (episode, contact), if one was issued."""
        row = self._conn.execute(
            "SELECT * FROM acks WHERE episode = ? AND contact = ? AND used_ns IS NULL"
            " AND expires_ns > ? ORDER BY expires_ns DESC LIMIT 1",
            (episode, contact, now_ns),
        ).fetchone()
        return None if row is None else AckRow(*row)

    def ack_by(self, *, nonce: str | None = None, code: str | None = None) -> AckRow | None:
        """The credential with this nonce or this code."""
        if nonce is not None:
            row = self._conn.execute("SELECT * FROM acks WHERE nonce = ?", (nonce,)).fetchone()
        else:
            row = self._conn.execute("SELECT * FROM acks WHERE code = ?", (code,)).fetchone()
        return None if row is None else AckRow(*row)

    def use_ack(self, nonce: str, *, now_ns: int, via: str) -> bool:
        """Mark a credential used; False if it already was (single use)."""
        with self._conn:
            cur = self._conn.execute(
                "UPDATE acks SET used_ns = ?, used_via = ? WHERE nonce = ? AND used_ns IS NULL",
                (now_ns, via, nonce),
            )
        return cur.rowcount == 1

    def dead_letters(self, limit: int = 20) -> list[DeadLetter]:
        """The newest dead letters."""
        return _dead_letters(self._conn, limit)

    # -- events and facts (the digest) -------------------------------------------------

    def record(self, events: Sequence[AlertEvent]) -> None:
        """Keep alert events for the digest (a repeated event is kept once)."""
        with self._conn:
            for event in events:
                if self._conn.execute(
                    "SELECT 1 FROM events WHERE episode = ? AND state = ? AND at_ns = ?",
                    (event.episode, event.state, event.at_ns),
                ).fetchone():
                    continue
                self._conn.execute(
                    "INSERT INTO events (episode, state, at_ns, doc) VALUES (?, ?, ?, ?)",
                    (event.episode, event.state, event.at_ns, event.to_json()),
                )

    def events_since(self, since_ns: int) -> list[AlertEvent]:
        """Alert events at or after ``since_ns``, oldest first."""
        return [
            AlertEvent.from_json(doc)
            for (doc,) in self._conn.execute(
                "SELECT doc FROM events WHERE at_ns >= ? ORDER BY at_ns, id", (since_ns,)
            )
        ]

    def open_episodes(self) -> list[AlertEvent]:
        """The latest event of every episode that fired and has not resolved (kept ones)."""
        rows = self._conn.execute(
            "SELECT doc FROM events e WHERE id = (SELECT MAX(id) FROM events"
            " WHERE episode = e.episode) AND state != 'resolved' ORDER BY at_ns"
        )
        return [AlertEvent.from_json(doc) for (doc,) in rows]

    def get_meta(self, key: str) -> str | None:
        """A kept fact."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Keep a fact."""
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def _counts(conn: sqlite3.Connection) -> list[ChannelCounts]:
    queued = {
        ch: (n, oldest)
        for ch, n, oldest in conn.execute(
            "SELECT channel, COUNT(*), MIN(created_ns) FROM queue GROUP BY channel"
        )
    }
    done: dict[str, dict[str, int]] = {}
    for ch, outcome, n in conn.execute(
        "SELECT channel, outcome, COUNT(*) FROM done GROUP BY channel, outcome"
    ):
        done.setdefault(ch, {})[outcome] = n
    return [
        ChannelCounts(
            channel=ch,
            queued=queued.get(ch, (0, None))[0],
            sent=done.get(ch, {}).get("sent", 0),
            dead=done.get(ch, {}).get("dead", 0),
            expired=done.get(ch, {}).get("expired", 0),
            oldest_ns=queued.get(ch, (0, None))[1],
        )
        for ch in sorted(set(queued) | set(done))
    ]


def _dead_letters(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    return [
        DeadLetter(key, ch, at, reason or "", status, Message.from_json(doc))
        for key, ch, at, reason, status, doc in conn.execute(
            "SELECT key, channel, at_ns, reason, status, doc FROM done WHERE outcome = 'dead'"
            " ORDER BY at_ns DESC LIMIT ?",
            (limit,),
        )
    ]


def read_notify_stats(
    path: Path, *, dead_letters: int = 0
) -> tuple[list[ChannelCounts], list[DeadLetter]]:
    """The queue per channel and the newest dead letters, read while the agent runs."""
    if not path.exists():
        return [], []
    conn = connect_read_only(path)
    try:
        return _counts(conn), _dead_letters(conn, dead_letters) if dead_letters else []
    finally:
        conn.close()


class AsyncNotifyStore(ThreadedStore[NotifyStore]):
    """``NotifyStore`` for the event loop: each call runs on the store's thread."""

    async def enqueue(self, messages: Sequence[tuple[Message, int]]) -> int:
        """See ``NotifyStore.enqueue``."""
        return await self._run(self.sync.enqueue, messages)

    async def next_due(self, channel: str, now_ns: int) -> Queued | None:
        """See ``NotifyStore.next_due``."""
        return await self._run(self.sync.next_due, channel, now_ns)

    async def next_due_ns(self, channel: str) -> int | None:
        """See ``NotifyStore.next_due_ns``."""
        return await self._run(self.sync.next_due_ns, channel)

    async def finish(
        self,
        queued_id: int,
        outcome: str,
        *,
        now_ns: int,
        reason: str | None = None,
        status: int | None = None,
    ) -> None:
        """See ``NotifyStore.finish``."""
        await self._run(
            self.sync.finish, queued_id, outcome, now_ns=now_ns, reason=reason, status=status
        )

    async def failed(self, queued_id: int, *, error: str) -> None:
        """See ``NotifyStore.failed``."""
        await self._run(self.sync.failed, queued_id, error=error)

    async def expire(self, channel: str, now_ns: int) -> list[Message]:
        """See ``NotifyStore.expire``."""
        return await self._run(self.sync.expire, channel, now_ns)

    async def counts(self) -> list[ChannelCounts]:
        """See ``NotifyStore.counts``."""
        return await self._run(self.sync.counts)

    async def escalations(self, episode: str | None = None) -> list[EscalationRow]:
        """See ``NotifyStore.escalations``."""
        return await self._run(self.sync.escalations, episode)

    async def put_escalation(self, row: EscalationRow) -> None:
        """See ``NotifyStore.put_escalation``."""
        await self._run(self.sync.put_escalation, row)

    async def close_episode(self, episode: str) -> list[EscalationRow]:
        """See ``NotifyStore.close_episode``."""
        return await self._run(self.sync.close_episode, episode)

    async def add_ack(self, row: AckRow) -> bool:
        """See ``NotifyStore.add_ack``."""
        return await self._run(self.sync.add_ack, row)

    async def ack_for(self, episode: str, contact: str, now_ns: int) -> AckRow | None:
        """See ``NotifyStore.ack_for``."""
        return await self._run(self.sync.ack_for, episode, contact, now_ns)

    async def ack_by(self, *, nonce: str | None = None, code: str | None = None) -> AckRow | None:
        """See ``NotifyStore.ack_by``."""
        return await self._run(self.sync.ack_by, nonce=nonce, code=code)

    async def use_ack(self, nonce: str, *, now_ns: int, via: str) -> bool:
        """See ``NotifyStore.use_ack``."""
        return await self._run(self.sync.use_ack, nonce, now_ns=now_ns, via=via)

    async def dead_letters(self, limit: int = 20) -> list[DeadLetter]:
        """See ``NotifyStore.dead_letters``."""
        return await self._run(self.sync.dead_letters, limit)

    async def record(self, events: Sequence[AlertEvent]) -> None:
        """See ``NotifyStore.record``."""
        await self._run(self.sync.record, events)

    async def events_since(self, since_ns: int) -> list[AlertEvent]:
        """See ``NotifyStore.events_since``."""
        return await self._run(self.sync.events_since, since_ns)

    async def open_episodes(self) -> list[AlertEvent]:
        """See ``NotifyStore.open_episodes``."""
        return await self._run(self.sync.open_episodes)

    async def get_meta(self, key: str) -> str | None:
        """See ``NotifyStore.get_meta``."""
        return await self._run(self.sync.get_meta, key)

    async def set_meta(self, key: str, value: str) -> None:
        """See ``NotifyStore.set_meta``."""
        await self._run(self.sync.set_meta, key, value)


@asynccontextmanager
async def open_notify_store(path: Path, *, now_ns: int) -> AsyncIterator[AsyncNotifyStore]:
    """Open the notification queue at ``path`` on its own thread, for the duration."""
    async with open_on_thread(
        "notify-store", lambda: NotifyStore.open(path, now_ns=now_ns), NotifyStore.close
    ) as (store, thread):
        yield AsyncNotifyStore(store, thread)
