"""The notifier: alert events in, messages to people out, acknowledgements back.

Theory of operation
-------------------
``Notifier.submit`` takes the alert service's notifying events (after they reached the
readings outbox, before the alert state is saved, so a crash can only repeat an event,
and a repeated event is recognised by its key and not queued twice). For each event:

* **firing**, first notice: every route that takes it (``routing.routes_for``) gets an
  escalation row, and the route's first contact a message on each of their channels,
  due at once or, if not critical, at the end of the route's quiet hours.
* **firing**, a reminder (``repeat`` > 0): everyone told so far gets it again.
* **acknowledged** or **resolved**: the episode's escalation rows go (escalation stops)
  and everyone told gets the news, except whoever acknowledged.

``escalate_due`` (the escalation loop calls it every ``ESCALATION_TICK_S``) moves every
row whose ``next_ns`` passed to its route's next contact. Time is ``clock_ns`` (wall
clock, UTC ns: quiet hours and expiries are about the site's day), injectable for tests.

Each channel has its own loop (``channel_loop``) over its own rows of the queue: it
drops what is past its ``expires_ns`` (with a record), sends the oldest due message, and
files the outcome: ``Sent`` → done; ``Refused`` → dead letter, next message; ``Retry`` →
the message stays first, attempts + 1, and the loop waits for the back-off (doubling
from ``retry_initial_s`` to ``retry_max_s``, jittered) or the server's ``Retry-After``,
whichever is longer. A channel that fails forever holds only its own rows; the other
channels' loops never wait for it, and nothing here touches the readings outbox.

With ``digest_hour`` set, ``digest_due`` (every ``DIGEST_TICK_S``) queues once a day,
at that hour of the site's day, one digest per contact: what is still open and the last
24 hours' alerts by rule and who acknowledged them, from the events ``submit`` keeps;
then, from ``digest_facts`` (the agent sets it: this package imports nothing of the
history, hullers or outbox), today's lots and their verdicts, service tasks due or
overdue, devices offline and sink backlogs. A provider that fails or takes longer than
``DIGEST_FACTS_TIMEOUT_S`` is logged, and the digest goes with those sections marked
unavailable.

Acknowledgements come back as a signed link's POST (``acknowledge_token``) or an
answer carrying a code (``acknowledge_reply``: an SMS from the contact's number, a
Telegram button in the contact's chat). Both check the credential (``agent.notify.acks``)
and then submit ``ack/<rule>/<subject>`` through the ``CommandBoundary`` with source
``notify:<channel>`` and the contact's name as ``by``; the alert service's
``acknowledged`` event then closes the episode here like any other acknowledgement.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from coffee_telemetry.agent.backoff import Backoff
from coffee_telemetry.agent.commands import CommandBoundary
from coffee_telemetry.agent.notify.acks import (
    CODE_DIGITS,
    TokenClaims,
    decode_token,
    encode_token,
    new_code,
    new_nonce,
)
from coffee_telemetry.agent.notify.config import ContactConfig, NotifyConfig, RouteConfig
from coffee_telemetry.agent.notify.digest import DigestFacts, DigestFactsProvider
from coffee_telemetry.agent.notify.model import (
    AlertEvent,
    Channel,
    Message,
    MessageKind,
    Refused,
    Retry,
    Sent,
)
from coffee_telemetry.agent.notify.queue import AckRow, AsyncNotifyStore, EscalationRow
from coffee_telemetry.agent.notify.routing import (
    escalation_due_ns,
    next_contact,
    release_ns,
    routes_for,
)
from coffee_telemetry.agent.notify.texts import render, render_digest

__all__ = ["AckResult", "ChannelStats", "Notifier"]

log = logging.getLogger(__name__)

NS = 1_000_000_000
#: How often escalations are looked at.
ESCALATION_TICK_S = 1.0
#: How often the digest's hour is looked for.
DIGEST_TICK_S = 30.0
#: A digest not delivered within this is dropped.
DIGEST_MAX_AGE_S = 12 * 3600
#: Longest the digest waits for its facts (lots, tasks, devices, backlogs).
DIGEST_FACTS_TIMEOUT_S = 30.0
#: Longest a channel loop sleeps without looking at its queue (the clock may be fake).
IDLE_CHECK_S = 1.0
#: Longest error text kept.
MAX_ERROR_CHARS = 300

_CODE = re.compile(rf"(?<!\d)(\d{{{CODE_DIGITS}}})(?!\d)")

#: Why an acknowledgement was or was not recorded.
AckStatus = Literal[
    "acknowledged", "pending", "malformed", "forged", "expired", "used", "closed", "failed"
]


@dataclass(frozen=True, slots=True)
class AckResult:
    """What became of an acknowledgement attempt (the page and the reply show it).

    Attributes:
        status: ``acknowledged``; ``pending`` (a valid link, not pressed yet); or the
            refusal: ``malformed``, ``forged`` (bad MAC, another contact's code or
            number), ``expired``, ``used``, ``closed`` (already acknowledged or
            resolved), ``failed`` (the command boundary refused it).
        contact: The contact the credential belongs to, when known.
        episode: The alert episode, when known.
        detail: The command's refusal, for ``failed``.
    """

    status: AckStatus
    contact: str | None = None
    episode: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the alert was acknowledged now."""
        return self.status == "acknowledged"


@dataclass(slots=True)
class ChannelStats:
    """One channel since start (health)."""

    sent: int = 0
    dead: int = 0
    expired: int = 0
    retries: int = 0
    queued: int = 0
    last_error: str | None = None
    last_sent_ns: int | None = None
    retry_at_ns: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


def split_episode(episode: str) -> tuple[str, str, int]:
    """``rule/subject/since_ns`` → its parts (the subject may hold ``/``).

    Raises:
        ValueError: Not an episode.
    """
    rule, _, rest = episode.partition("/")
    subject, _, since = rest.rpartition("/")
    if not rule or not subject or not since.isdigit():
        raise ValueError("not an episode")
    return rule, subject, int(since)


class Notifier:
    """Routes alert events to contacts, runs the channel loops, takes acknowledgements.

    Args:
        cfg: ``[notify]``.
        site: The site's display name (in messages).
        zone: The site's time zone (quiet hours, days, times in messages).
        store: The queue (``open_notify_store``).
        channels: The channels by name.
        link_key: The acknowledgement-link key (``load_link_key``).
        commands: Where acknowledgements go (set later if made later).
        clock_ns: Wall clock, UTC ns.
        digest_facts: What the digest says beyond alerts (set later if made later;
            ``None``: alerts only).
    """

    def __init__(
        self,
        *,
        cfg: NotifyConfig,
        site: str,
        zone: ZoneInfo,
        store: AsyncNotifyStore,
        channels: Mapping[str, Channel],
        link_key: bytes,
        commands: CommandBoundary | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        digest_facts: DigestFactsProvider | None = None,
    ) -> None:
        self._cfg = cfg
        self._site = site
        self._zone = zone
        self._store = store
        self._channels = dict(channels)
        self._key = link_key
        self.commands = commands
        self._clock_ns = clock_ns
        self.digest_facts = digest_facts
        self._wake = {name: asyncio.Event() for name in self._channels}
        self.stats = {name: ChannelStats() for name in self._channels}
        self._loop_tokens: dict[str, object] = {}
        self.acks = 0

    @property
    def store(self) -> AsyncNotifyStore:
        """The queue."""
        return self._store

    @property
    def config(self) -> NotifyConfig:
        """``[notify]`` as it runs now."""
        return self._cfg

    def reconfigure(self, cfg: NotifyConfig) -> None:
        """Route with ``cfg``'s contacts, routes and timings from now on (a reload).

        The channels stay the ones opened at start. Messages already queued keep the
        address they were queued for and are sent; escalations go on with the new
        routes, past contacts no longer configured.
        """
        self._cfg = cfg

    def set_channel(self, name: str, channel: Channel | None) -> None:
        """Send channel ``name``'s queue with ``channel`` from its next message (a reload).

        ``None`` removes the channel: its loop ends, and what it had queued stays in the
        queue, sent if the channel comes back. A channel new to this notifier needs its
        loop started (``channel_loop``).
        """
        if channel is None:
            self._channels.pop(name, None)
            self.stats.pop(name, None)
        else:
            self._channels[name] = channel
            self.stats.setdefault(name, ChannelStats())
        self._wake.setdefault(name, asyncio.Event()).set()

    @property
    def channels(self) -> Mapping[str, Channel]:
        """The channels by name."""
        return self._channels

    # -- events in ---------------------------------------------------------------------

    async def submit(self, events: Sequence[AlertEvent]) -> int:
        """Queue the messages ``events`` call for; returns how many were new."""
        now = self._clock_ns()
        await self._store.record(events)
        queued: list[tuple[Message, int]] = []
        for event in events:
            if event.state == "firing":
                queued += await self._firing(event, now)
            elif event.state in ("acknowledged", "resolved"):
                queued += await self._closed(event, now)
        return await self._enqueue(queued)

    async def _enqueue(self, queued: list[tuple[Message, int]]) -> int:
        if not queued:
            return 0
        added = await self._store.enqueue(queued)
        for message, _ in queued:
            if message.channel in self._wake:
                self._wake[message.channel].set()
        return added

    async def _firing(self, event: AlertEvent, now: int) -> list[tuple[Message, int]]:
        rows = {row.route: row for row in await self._store.escalations(event.episode)}
        out: list[tuple[Message, int]] = []
        for route in routes_for(self._cfg, event, self._zone):
            row = rows.get(route.name)
            due = release_ns(route, event.severity, now, self._zone)
            if row is None:
                first = route.contacts[0]
                out += await self._for_contact(event, first, "firing", due, now)
                await self._store.put_escalation(
                    EscalationRow(
                        episode=event.episode,
                        route=route.name,
                        level=0,
                        next_ns=escalation_due_ns(route, 0, due),
                        notified=(first,),
                        event=event.to_json(),
                    )
                )
            elif event.repeat > 0:
                for name in row.notified:
                    out += await self._for_contact(event, name, "firing", due, now)
                await self._store.put_escalation(replace(row, event=event.to_json()))
        return out

    async def _closed(self, event: AlertEvent, now: int) -> list[tuple[Message, int]]:
        rows = await self._store.close_episode(event.episode)
        told: list[str] = []
        for row in rows:
            told += [name for name in row.notified if name not in told]
        kind: MessageKind = "acknowledged" if event.state == "acknowledged" else "resolved"
        out: list[tuple[Message, int]] = []
        for name in told:
            if kind == "acknowledged" and name == event.acked_by:
                continue
            out += await self._for_contact(event, name, kind, now, now)
        return out

    async def escalate_due(self) -> int:
        """Tell the next contact of every escalation whose time came; returns how many."""
        now = self._clock_ns()
        routes = {r.name: r for r in self._cfg.routes}
        queued: list[tuple[Message, int]] = []
        moved = 0
        for row in await self._store.escalations():
            if row.next_ns is None or row.next_ns > now:
                continue
            route = routes.get(row.route)
            contact = None if route is None else next_contact(route, row.level + 1)
            if route is None or contact is None:
                await self._store.put_escalation(replace(row, next_ns=None))
                continue
            event = AlertEvent.from_json(row.event)
            due = release_ns(route, event.severity, now, self._zone)
            queued += await self._for_contact(
                event,
                contact,
                "escalated",
                due,
                now,
                previous=row.notified[-1],
                route=route,
                level=row.level + 1,
            )
            level = row.level + 1
            await self._store.put_escalation(
                replace(
                    row,
                    level=level,
                    next_ns=escalation_due_ns(route, level, due),
                    notified=(*row.notified, contact),
                )
            )
            log.warning(
                "Alert %s not acknowledged by %s: escalated to %s (route %s)",
                row.episode,
                row.notified[-1],
                contact,
                row.route,
            )
            moved += 1
        await self._enqueue(queued)
        return moved

    async def _for_contact(
        self,
        event: AlertEvent,
        name: str,
        kind: MessageKind,
        due: int,
        now: int,
        *,
        previous: str | None = None,
        route: RouteConfig | None = None,
        level: int = 0,
    ) -> list[tuple[Message, int]]:
        contact = self._cfg.contact(name)
        if contact is None:
            log.warning("Contact %r is no longer configured; not notified", name)
            return []
        ack_url = ack_code = None
        if kind in ("firing", "escalated"):
            ack_url, ack_code = await self._credential(event.episode, contact, now)
        key = (
            f"{event.episode}/escalated/{level}"
            if kind == "escalated"
            else f"{event.episode}/{event.state}/{event.repeat}"
        )
        expires = event.at_ns + round(self._cfg.max_age_s(event.rule) * NS)
        out = []
        for channel, address in contact.channels.items():
            if channel not in self._channels:
                continue  # configured but not running (its section failed to open)
            text = render(
                event,
                kind=kind,
                lang=contact.lang,
                channel=channel,
                zone=self._zone,
                site=self._site,
                ack_url=ack_url,
                ack_code=ack_code,
                previous=previous,
                waited_min=route.escalate_after_min if route is not None else None,
            )
            message = Message(
                key=f"{key}/{contact.name}/{channel}",
                channel=channel,
                contact=contact.name,
                address=address,
                lang=contact.lang,
                kind=kind,
                severity=event.severity,
                title=text.title,
                body=text.body,
                episode=event.episode,
                ack_url=ack_url,
                ack_code=ack_code,
                created_ns=now,
                expires_ns=max(expires, now + NS),
            )
            out.append((message, due))
        return out

    async def _credential(
        self, episode: str, contact: ContactConfig, now: int
    ) -> tuple[str | None, str]:
        row = await self._store.ack_for(episode, contact.name, now)
        if row is None:
            expires = now + round(self._cfg.ack_link_hours * 3600 * NS)
            for _ in range(20):
                row = AckRow(new_nonce(), new_code(), episode, contact.name, expires, None, None)
                if await self._store.add_ack(row):
                    break
            else:  # pragma: no cover - 20 collisions among a million codes
                raise RuntimeError("could not find a free acknowledgement code")
        url = None
        if self._cfg.public_url is not None:
            claims = TokenClaims(episode, contact.name, row.expires_ns // NS, row.nonce)
            url = f"{self._cfg.public_url.rstrip('/')}/ack/{encode_token(self._key, claims)}"
        return url, row.code

    async def digest_due(self) -> int:
        """Queue today's digest if its hour came and it was not sent; returns messages queued.

        One message per contact, in their language, on their first channel that is not
        SMS (SMS only for a contact who has nothing else). A digest missed while the
        agent was off goes when it is back, the same day.
        """
        hour = self._cfg.digest_hour
        now = self._clock_ns()
        local = datetime.fromtimestamp(now / NS, tz=UTC).astimezone(self._zone)
        if hour is None or local.hour < hour:
            return 0
        day = local.date().isoformat()
        if await self._store.get_meta("digest_day") == day:
            return 0
        events = await self._store.events_since(now - 86400 * NS)
        still_open = await self._store.open_episodes()
        facts = await self._digest_facts(now)
        queued: list[tuple[Message, int]] = []
        for contact in self._cfg.contacts:
            running = [c for c in contact.channels if c in self._channels]
            if not running:
                continue
            channel = next((c for c in running if c != "sms"), running[0])
            text = render_digest(
                events=events,
                still_open=still_open,
                lang=contact.lang,
                zone=self._zone,
                site=self._site,
                at_ns=now,
                facts=facts,
                channel=channel,
            )
            message = Message(
                key=f"digest/{day}/{contact.name}/{channel}",
                channel=channel,
                contact=contact.name,
                address=contact.channels[channel],
                lang=contact.lang,
                kind="digest",
                severity="info",
                title=text.title,
                body=text.body,
                created_ns=now,
                expires_ns=now + DIGEST_MAX_AGE_S * NS,
            )
            queued.append((message, now))
        await self._store.set_meta("digest_day", day)
        await self._enqueue(queued)
        log.info("Daily digest for %s queued for %d contacts", day, len(queued))
        return len(queued)

    async def _digest_facts(self, now: int) -> DigestFacts | None:
        """The provider's facts; on its failure, every section unavailable."""
        if self.digest_facts is None:
            return None
        try:
            async with asyncio.timeout(DIGEST_FACTS_TIMEOUT_S):
                return await self.digest_facts(now)
        except Exception as exc:  # the digest still goes, with what the notifier knows
            log.error("Daily digest: could not gather its facts", exc_info=exc)
            return DigestFacts()

    # -- the loops ---------------------------------------------------------------------

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """Every loop to run under ``supervise``, by interface name."""
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "notify-escalation": self.escalation_loop
        }
        for name in self._channels:
            loops[f"notify[{name}]"] = functools.partial(self.channel_loop, name)
        if self._cfg.digest_hour is not None:
            loops["notify-digest"] = self.digest_loop
        return loops

    async def digest_loop(self) -> None:
        """Look every ``DIGEST_TICK_S`` whether the digest is due."""
        while True:
            await self.digest_due()
            await asyncio.sleep(DIGEST_TICK_S)

    async def escalation_loop(self) -> None:
        """Run ``escalate_due`` every ``ESCALATION_TICK_S``."""
        while True:
            await self.escalate_due()
            await self.refresh()
            await asyncio.sleep(ESCALATION_TICK_S)

    async def channel_loop(self, name: str) -> None:
        """Send channel ``name``'s queue, oldest due first, forever (module docstring)."""
        wake = self._wake[name]
        backoff = Backoff(
            initial_s=self._cfg.retry_initial_s, maximum_s=self._cfg.retry_max_s, jitter=0.1
        )
        # A reload may replace the channel (read for each message) or remove it (the
        # loop ends); a loop started later for the same name takes over from this one.
        token = self._loop_tokens[name] = object()
        while name in self._channels and self._loop_tokens.get(name) is token:
            channel, stats = self._channels[name], self.stats[name]
            wake.clear()
            now = self._clock_ns()
            for message in await self._store.expire(name, now):
                stats.expired += 1
                log.warning(
                    "Dropped %s message to %s (%s): undelivered for too long",
                    name,
                    message.contact,
                    message.episode or message.kind,
                )
            queued = await self._store.next_due(name, now)
            if queued is None:
                due = await self._store.next_due_ns(name)
                if due is None:  # empty; a message held for later (quiet hours) still counts
                    stats.queued = 0
                wait_s = IDLE_CHECK_S if due is None else min(IDLE_CHECK_S, (due - now) / NS)
                try:
                    async with asyncio.timeout(max(0.0, wait_s)):
                        await wake.wait()
                except TimeoutError:
                    pass
                continue
            try:
                outcome = await channel.send(queued.message)
            except Exception as exc:  # a channel bug must not stop the loop
                log.error("Channel %s failed on a send", name, exc_info=exc)
                outcome = Retry(f"{type(exc).__name__}: {exc}")
            done_at = self._clock_ns()
            match outcome:
                case Sent():
                    await self._store.finish(queued.id, "sent", now_ns=done_at)
                    stats.sent += 1
                    stats.last_sent_ns = done_at
                    stats.retry_at_ns = None
                    backoff.reset()
                    log.info(
                        "Sent %s %s to %s (%s)",
                        name,
                        queued.message.kind,
                        queued.message.contact,
                        queued.message.episode or "digest",
                    )
                case Refused(reason=reason, status=status):
                    reason = reason[:MAX_ERROR_CHARS]
                    await self._store.finish(
                        queued.id, "dead", now_ns=done_at, reason=reason, status=status
                    )
                    stats.dead += 1
                    stats.last_error = reason
                    log.error(
                        "Channel %s refused the message to %s for good: %s",
                        name,
                        queued.message.contact,
                        reason,
                    )
                case Retry(reason=reason, retry_after_s=after):
                    delay = max(backoff.next_delay(), after or 0.0)
                    reason = reason[:MAX_ERROR_CHARS]
                    stats.retries += 1
                    stats.last_error = reason
                    stats.retry_at_ns = done_at + round(delay * NS)
                    await self._store.failed(queued.id, error=reason)
                    log.warning(
                        "Channel %s: %s; retrying in %.1f s (attempt %d)",
                        name,
                        reason,
                        delay,
                        queued.attempts + 1,
                    )
                    # The channel is down or busy: nothing of it goes before the delay.
                    await asyncio.sleep(delay)

    # -- acknowledgements --------------------------------------------------------------

    async def inspect_token(self, token: str) -> tuple[AckResult, AlertEvent | None]:
        """Check a link without using it: ``pending`` and the alert, or the refusal."""
        claims = decode_token(self._key, token)
        if isinstance(claims, str):
            return AckResult("forged" if claims == "forged" else "malformed"), None
        result, row = await self._check(claims.nonce, claims.episode, claims.contact)
        if result is not None:
            return result, None
        if claims.expires_s * NS <= self._clock_ns():
            return AckResult("expired", claims.contact, claims.episode), None
        assert row is not None
        rows = await self._store.escalations(claims.episode)
        if not rows:
            return AckResult("closed", claims.contact, claims.episode), None
        return AckResult("pending", claims.contact, claims.episode), AlertEvent.from_json(
            rows[0].event
        )

    async def _check(
        self, nonce: str, episode: str, contact: str
    ) -> tuple[AckResult | None, AckRow | None]:
        row = await self._store.ack_by(nonce=nonce)
        if row is None or row.episode != episode or row.contact != contact:
            return AckResult("forged"), None
        if row.used_ns is not None:
            return AckResult("used", contact, episode), None
        return None, row

    async def acknowledge_token(self, token: str) -> AckResult:
        """Acknowledge with a link's token (the page's button); never raises on input."""
        claims = decode_token(self._key, token)
        if isinstance(claims, str):
            self._refused("link", claims)
            return AckResult("forged" if claims == "forged" else "malformed")
        result, row = await self._check(claims.nonce, claims.episode, claims.contact)
        if result is None and row is not None:
            result = await self._use(row, "link")
        assert result is not None
        if not result.ok:
            self._refused("link", result.status, result.contact)
        return result

    async def acknowledge_reply(self, channel: str, sender: str, text: str) -> AckResult:
        """Acknowledge with an answer carrying a code, from ``sender`` on ``channel``.

        The sender must be the address the credential's contact has on that channel.
        """
        match = _CODE.search(text[:1000])
        if match is None:
            return AckResult("malformed")
        row = await self._store.ack_by(code=match.group(1))
        contact = None if row is None else self._cfg.contact(row.contact)
        address = None
        if contact is not None:
            address = next((a for c, a in contact.channels.items() if c == channel), None)
        if row is None or contact is None or address != sender:
            self._refused(channel, "forged", None)
            return AckResult("forged")
        if row.used_ns is not None:
            return AckResult("used", row.contact, row.episode)
        result = await self._use(row, channel)
        if not result.ok:
            self._refused(channel, result.status, result.contact)
        return result

    async def _use(self, row: AckRow, via: str) -> AckResult:
        now = self._clock_ns()
        if row.expires_ns <= now:
            return AckResult("expired", row.contact, row.episode)
        if not await self._store.escalations(row.episode):
            return AckResult("closed", row.contact, row.episode)
        if not await self._store.use_ack(row.nonce, now_ns=now, via=via):
            return AckResult("used", row.contact, row.episode)
        rule, subject, _ = split_episode(row.episode)
        if self.commands is None:
            return AckResult("failed", row.contact, row.episode, "no command boundary")
        reply = await self.commands.submit(
            ("ack", rule, subject), b"{}", source=f"notify:{via}", by=row.contact
        )
        if not reply.ok:
            return AckResult("failed", row.contact, row.episode, str(reply.doc.get("error", "")))
        self.acks += 1
        log.warning("Alert %s acknowledged by %s via %s", row.episode, row.contact, via)
        return AckResult("acknowledged", row.contact, row.episode)

    @staticmethod
    def _refused(via: str, status: str, contact: str | None = None) -> None:
        log.warning("Refused an acknowledgement via %s: %s (contact %r)", via, status, contact)

    # -- health ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the queue lengths into ``stats`` (``health_doc`` cannot wait for the store)."""
        for counts in await self._store.counts():
            if counts.channel in self.stats:
                self.stats[counts.channel].queued = counts.queued

    def health_doc(self) -> dict[str, object]:
        """Per channel: queued, sent, dead letters, expired, retries, last error, extras."""
        return {
            "acknowledgements": self.acks,
            "channels": {
                name: {
                    "queued": s.queued,
                    "sent": s.sent,
                    "dead": s.dead,
                    "expired": s.expired,
                    "retries": s.retries,
                    "last_error": s.last_error,
                    "last_sent_ns": s.last_sent_ns,
                    "retry_at_ns": s.retry_at_ns,
                    **self._channels[name].health(),
                }
                for name, s in self.stats.items()
            },
        }
