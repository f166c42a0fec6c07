"""Ready to hull: a lot's rest after the dryer, the hulling window, and the bags hulled.

Theory of operation
-------------------
Coffee is not hulled straight from the dryer: it rests, about 8 days after a patio
and 10 after a mechanical dryer, and is hulled when its moisture is inside the
hulling window, 10.8 to 11.2 % (Gehaka's guidance on "umidade do café"; all four numbers
are ``[lots]`` settings: ``rest_days_patio``, ``rest_days_mechanical``,
``hulling_min_pct``, ``hulling_max_pct``).

**Dried.** Someone says when a lot left the dryer and which kind it was (a ``lotdried``
command from MQTT or the page, or ``coffee-telemetry lot dried``); ``parse_dried``
checks it with the rules of lot codes (nothing written on a refusal) and ``set_dried``
keeps it in the lot record store (table ``lot_drying``) with a ``dried`` event in the
lot's timeline. Saying it again corrects it.

**The state** (``assess``, pure; time passed in):

``resting``   the rest is not over: ``rest_ends_ns`` and ``remaining_s`` say when;
``waiting``   rested, but fewer than ``ready_readings`` (3) moisture readings were
              taken since the lot left the dryer;
``outside``   rested, and one of the latest ``ready_readings`` readings since the
              dryer is outside the window;
``ready``     rested, and the latest ``ready_readings`` readings since the dryer are
              all inside the window: "pronto para beneficiar".

Only readings taken since the lot left the dryer count (earlier ones measured coffee
still drying); the latest decide, so a lot re-measured after it drifted out of the
window leaves ``ready`` again.

**Announced once.** ``ReadinessService`` looks at the lots that left a dryer and were
never announced, every ``interval_s`` (60 s) of its clock (injectable: tests move it
by days). The first time one is ``ready`` it writes ``lot_ready`` (the time it was
first seen ready) and a ``ready`` event of the timeline, hands a ``ready_to_hull``
notice to the notifier (``agent.notify``: an alert event of severity
``ready_severity``, ``info`` by default, its episode named by the lot and that
time), then marks it announced. A crash between the notice and the mark only repeats
the notice, which the notifier recognises by its key and does not queue twice. A
lot is announced once in its life, whatever its readings do next; a site routes the
notice with a ``[[notify.routes]]`` entry that takes rule ``ready_to_hull`` and its
severity.

**Bags hulled.** Every ``huller`` reading carries the huller's ``bags_total``; the lot
record store (``take_huller``, fed from the outbox in commit order) keeps the last
total and sequence number seen per huller, and credits the increase since to the lot
active at the huller's station at that point of the record (``station_lots``, set by
the ``lot_assignment`` events), so bags counted while a lot is active at the huller
are that lot's (table ``lot_hulled``, per huller). A reading delivered again (its
sequence number not above the last) credits nothing. The huller's first reading is
only a baseline, and bags counted while no lot is active at the station are nobody's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import TYPE_CHECKING, Literal

from coffee_telemetry.agent.commands import Command, CommandRefused
from coffee_telemetry.agent.config import LotsConfig
from coffee_telemetry.agent.errors import LotError
from coffee_telemetry.agent.lots.model import LotDrying
from coffee_telemetry.agent.lots.store import validate_lot
from coffee_telemetry.agent.notify.model import AlertEvent

if TYPE_CHECKING:
    from coffee_telemetry.agent.lots.records import AsyncLotRecords, LotRecords

__all__ = [
    "DRIED_COMMAND",
    "DRYERS",
    "READY_RULE",
    "DriedChange",
    "Readiness",
    "ReadinessRules",
    "ReadinessService",
    "assess",
    "describe",
    "handle_dried_command",
    "lot_readiness",
    "parse_dried",
    "readiness_by_code",
    "readiness_doc",
    "set_dried",
]

log = logging.getLogger(__name__)

NS = 1_000_000_000
DAY_NS = 86_400 * NS
#: The command that says a lot left the dryer: ``cmd/lotdried/<lot code, escaped>``.
DRIED_COMMAND = "lotdried"
#: Kinds of dryer, and their names on pages and reports.
DRYERS: Mapping[str, tuple[str, str]] = {
    "patio": ("terreiro", "patio"),
    "mechanical": ("secador mecânico", "mechanical dryer"),
}
#: The notice's rule name (``agent.notify`` routes by it).
READY_RULE = "ready_to_hull"
#: A dried time further ahead of the clock than this is refused.
FUTURE_SLACK_NS = 10 * 60 * NS
#: Dried times before this are refused as absurd.
MIN_DRIED_NS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * NS
#: Longest text a ``dried`` time may be given as.
AT_MAX_LEN = 40
#: Lots that left a dryer longer ago than this are no longer looked at for a notice.
WATCH_DAYS = 365

State = Literal["resting", "waiting", "outside", "ready"]


# -- the rules and the state ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadinessRules:
    """The rest per dryer, the hulling window, and how many readings decide.

    Attributes:
        rest_days_patio: Days of rest after a patio.
        rest_days_mechanical: Days of rest after a mechanical dryer.
        min_pct: The hulling window's low end (% wet basis).
        max_pct: Its high end.
        readings: The latest readings since the dryer that must all be inside it.
        severity: The notice's severity.
    """

    rest_days_patio: float = 8.0
    rest_days_mechanical: float = 10.0
    min_pct: float = 10.8
    max_pct: float = 11.2
    readings: int = 3
    severity: str = "info"

    @classmethod
    def from_config(cls, cfg: LotsConfig) -> ReadinessRules:
        """The rules of a site's ``[lots]``."""
        return cls(
            rest_days_patio=cfg.rest_days_patio,
            rest_days_mechanical=cfg.rest_days_mechanical,
            min_pct=cfg.hulling_min_pct,
            max_pct=cfg.hulling_max_pct,
            readings=cfg.ready_readings,
            severity=cfg.ready_severity,
        )

    def rest_ns(self, dryer: str) -> int:
        """The rest after ``dryer``, in nanoseconds."""
        days = self.rest_days_mechanical if dryer == "mechanical" else self.rest_days_patio
        return int(days * DAY_NS)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Where a lot that left the dryer stands (see the module docstring).

    Attributes:
        state: ``resting``, ``waiting``, ``outside`` or ``ready``.
        dried_ns: When it left the dryer.
        dryer: ``patio`` or ``mechanical``.
        rest_ends_ns: When its rest ends.
        remaining_s: Rest left (0 once over).
        min_pct: The hulling window's low end.
        max_pct: Its high end.
        needed: Readings since the dryer that decide.
        latest: The latest of them, newest first (at most ``needed``).
        ready_ns: When it was first seen ready (``None``: not yet).
        announced_ns: When its notice was handed over (``None``: not yet).
    """

    state: State
    dried_ns: int
    dryer: str
    rest_ends_ns: int
    remaining_s: float
    min_pct: float
    max_pct: float
    needed: int
    latest: tuple[float, ...] = ()
    ready_ns: int | None = None
    announced_ns: int | None = None


def assess(
    drying: LotDrying,
    latest: Sequence[float],
    rules: ReadinessRules,
    now_ns: int,
    *,
    ready_ns: int | None = None,
    announced_ns: int | None = None,
) -> Readiness:
    """The lot's state at ``now_ns`` (pure).

    Args:
        drying: When and where it dried.
        latest: Moisture of its readings since ``drying.dried_ns``, newest first
            (only the first ``rules.readings`` are looked at).
        rules: The rest and the window.
        now_ns: Now (UTC ns).
        ready_ns: When it was first seen ready, if it was.
        announced_ns: When it was announced, if it was.
    """
    rest_ends = drying.dried_ns + rules.rest_ns(drying.dryer)
    values = tuple(latest[: rules.readings])
    state: State
    if now_ns < rest_ends:
        state = "resting"
    elif len(values) < rules.readings:
        state = "waiting"
    elif all(rules.min_pct <= v <= rules.max_pct for v in values):
        state = "ready"
    else:
        state = "outside"
    return Readiness(
        state=state,
        dried_ns=drying.dried_ns,
        dryer=drying.dryer,
        rest_ends_ns=rest_ends,
        remaining_s=max(0.0, (rest_ends - now_ns) / NS),
        min_pct=rules.min_pct,
        max_pct=rules.max_pct,
        needed=rules.readings,
        latest=values,
        ready_ns=ready_ns,
        announced_ns=announced_ns,
    )


def _pct(value: float, lang: str) -> str:
    text = f"{value:.1f}"
    return (text if lang == "en" else text.replace(".", ",")) + " %"


def _left(seconds: float) -> str:
    days, rest = divmod(math.ceil(seconds / 3600), 24)
    return f"{days} d {rest} h" if days else f"{rest} h"


def describe(r: Readiness, lang: str = "pt-BR") -> str:
    """The state as one sentence in ``lang`` (``pt-BR`` or ``en``)."""
    en = lang == "en"
    dryer = DRYERS.get(r.dryer, (r.dryer, r.dryer))[1 if en else 0]
    window = f"{_pct(r.min_pct, lang)[:-2]}\u2013{_pct(r.max_pct, lang)}"  # en dash
    if r.state == "resting":
        left = _left(r.remaining_s)
        if en:
            return f"Resting after the {dryer}: {left} left"
        return f"Em descanso após {dryer}: faltam {left}"
    if r.state == "waiting":
        got = len(r.latest)
        if en:
            return f"Rested; waiting for readings ({got} of {r.needed} since the dryer)"
        return f"Descanso concluído; aguardando leituras ({got} de {r.needed} desde a secagem)"
    latest = ", ".join(_pct(v, lang) for v in r.latest)
    if r.state == "outside":
        if en:
            return f"Rested; moisture outside the hulling window ({window}): {latest}"
        return f"Descanso concluído; umidade fora da janela de beneficiamento ({window}): {latest}"
    if en:
        return f"Ready to hull: {latest} inside the window ({window})"
    return f"Pronto para beneficiar: {latest} dentro da janela ({window})"


def readiness_doc(r: Readiness | None) -> dict[str, object] | None:
    """A lot's readiness as JSON, with its sentence in both languages."""
    if r is None:
        return None
    return {
        "state": r.state,
        "dried_ns": r.dried_ns,
        "dryer": r.dryer,
        "rest_ends_ns": r.rest_ends_ns,
        "remaining_s": r.remaining_s,
        "window_pct": [r.min_pct, r.max_pct],
        "needed": r.needed,
        "latest_pct": list(r.latest),
        "ready_ns": r.ready_ns,
        "announced_ns": r.announced_ns,
        "text": {"pt-BR": describe(r, "pt-BR"), "en": describe(r, "en")},
    }


# -- dried: the change ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriedChange:
    """A validated "left the dryer" statement.

    Attributes:
        dried_ns: When (UTC ns).
        dryer: ``patio`` or ``mechanical``.
    """

    dried_ns: int
    dryer: str


def _parse_at(value: object, now_ns: int, zone: tzinfo) -> int:
    if value is None:
        return now_ns
    if isinstance(value, bool):
        raise LotError('"at" must be a time')
    if isinstance(value, int):
        at = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > AT_MAX_LEN or not text.isascii() or not text.isprintable():
            raise LotError('"at" must be an ISO 8601 date or time (2026-12-01T17:30-03:00)')
        try:
            if len(text) == 10:
                parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
            else:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise LotError(
                '"at" must be an ISO 8601 date or time (2026-12-01T17:30-03:00)'
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
        try:
            at = int(parsed.timestamp()) * NS + parsed.microsecond * 1000
        except (OverflowError, OSError, ValueError):
            raise LotError('"at" is out of range') from None
    else:
        raise LotError('"at" must be a time (ISO 8601 text or UTC nanoseconds)')
    if at < MIN_DRIED_NS:
        raise LotError('"at" is before the year 2000')
    if at > now_ns + FUTURE_SLACK_NS:
        raise LotError('"at" is in the future')
    return at


def parse_dried(doc: Mapping[str, object], *, now_ns: int, zone: tzinfo = UTC) -> DriedChange:
    """Validate a "left the dryer" statement (a command's payload, the CLI's options).

    Keys: ``dryer`` (``patio`` or ``mechanical``, required) and ``at`` (ISO 8601 text,
    a date or a time, in the site's zone when it names none, or UTC nanoseconds;
    absent or ``null``: now), not in the future nor before 2000. ``by`` is ignored
    here (the boundary checked it); any other key is refused.

    Raises:
        LotError: What is wrong, for the sender; nothing is written.
    """
    unknown = sorted(k for k in doc if k not in ("at", "dryer", "by"))
    if unknown:
        raise LotError(f"unknown key {unknown[0][:40]!r} (at, dryer)")
    dryer = doc.get("dryer")
    if not isinstance(dryer, str) or dryer.strip() not in DRYERS:
        raise LotError(f"dryer must be one of {', '.join(DRYERS)}")
    return DriedChange(_parse_at(doc.get("at"), now_ns, zone), dryer.strip())


def set_dried(
    records: LotRecords, code: str, change: DriedChange, *, by: str, source: str, at_ns: int
) -> LotDrying:
    """Say when the lot left the dryer (creating its record if needed); one event.

    A lot not yet announced is assessed again from the new time.

    Raises:
        LotError: A bad lot code; nothing is written.
    """
    code = validate_lot(code)

    def write(conn: sqlite3.Connection) -> LotDrying:
        lot_id = records._lot_id(conn, {}, code, at_ns)
        conn.execute(
            "INSERT INTO lot_drying (lot_id, dried_ns, dryer, by, source, set_ns)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (lot_id) DO UPDATE SET"
            " dried_ns = excluded.dried_ns, dryer = excluded.dryer, by = excluded.by,"
            " source = excluded.source, set_ns = excluded.set_ns",
            (lot_id, change.dried_ns, change.dryer, by, source, at_ns),
        )
        conn.execute("DELETE FROM lot_ready WHERE lot_id = ? AND announced_ns IS NULL", (lot_id,))
        records._event(
            conn,
            lot_id,
            None,
            at_ns,
            "dried",
            f"left the {DRYERS[change.dryer][1]} (said by {by})",
            by=by,
            source=source,
            data={"dried_ns": change.dried_ns, "dryer": change.dryer},
        )
        return LotDrying(change.dried_ns, change.dryer, by, source, at_ns)

    return records.write_with(write)


# -- bags hulled, from the outbox ---------------------------------------------------------


# -- reading the state --------------------------------------------------------------------


def _latest(conn: sqlite3.Connection, lot_id: int, since_ns: int, n: int) -> list[float]:
    return [
        float(v)
        for (v,) in conn.execute(
            "SELECT moisture_pct FROM readings WHERE lot_id = ? AND ts_ns >= ?"
            " ORDER BY ts_ns DESC, device LIMIT ?",
            (lot_id, since_ns, n),
        )
    ]


def _assess_rows(
    conn: sqlite3.Connection,
    rules: ReadinessRules,
    now_ns: int,
    where: str,
    params: Sequence[object],
) -> dict[str, tuple[int, Readiness]]:
    out: dict[str, tuple[int, Readiness]] = {}
    for lot_id, code, dried, dryer, by, source, set_ns, ready, announced in conn.execute(
        "SELECT lots.id, lots.code, d.dried_ns, d.dryer, d.by, d.source, d.set_ns,"
        " r.ready_ns, r.announced_ns FROM lot_drying d JOIN lots ON lots.id = d.lot_id"
        f" LEFT JOIN lot_ready r ON r.lot_id = d.lot_id WHERE {where}",
        params,
    ).fetchall():
        drying = LotDrying(int(dried), str(dryer), str(by), str(source), int(set_ns))
        latest = _latest(conn, int(lot_id), drying.dried_ns, rules.readings)
        out[str(code)] = (
            int(lot_id),
            assess(drying, latest, rules, now_ns, ready_ns=ready, announced_ns=announced),
        )
    return out


def lot_readiness(
    records: LotRecords, code: str, rules: ReadinessRules, now_ns: int
) -> Readiness | None:
    """The lot's state (``None``: nobody said it left a dryer, or it was never seen)."""
    found = records.read_with(
        lambda conn: _assess_rows(conn, rules, now_ns, "lots.code = ?", (code,))
    )
    hit = found.get(code)
    return None if hit is None else hit[1]


def readiness_by_code(
    records: LotRecords, codes: Iterable[str], rules: ReadinessRules, now_ns: int
) -> dict[str, Readiness]:
    """The state of each of ``codes`` that left a dryer (a page of the Lotes list)."""
    wanted = sorted(set(codes))[:1000]
    if not wanted:
        return {}
    marks = ", ".join("?" for _ in wanted)
    found = records.read_with(
        lambda conn: _assess_rows(conn, rules, now_ns, f"lots.code IN ({marks})", wanted)
    )
    return {code: r for code, (_, r) in found.items()}


def newly_ready(
    records: LotRecords, rules: ReadinessRules, now_ns: int
) -> list[tuple[str, Readiness]]:
    """Lots ready and not announced; the first time one is seen ready is written down.

    Its ``lot_ready`` row and a ``ready`` event of its timeline are written once.
    """
    since = now_ns - WATCH_DAYS * DAY_NS

    def run(conn: sqlite3.Connection) -> list[tuple[str, Readiness]]:
        found = _assess_rows(
            conn, rules, now_ns, "d.dried_ns >= ? AND r.announced_ns IS NULL", (since,)
        )
        out: list[tuple[str, Readiness]] = []
        for code, (lot_id, r) in sorted(found.items()):
            if r.state != "ready":
                continue
            if r.ready_ns is None:
                conn.execute(
                    "INSERT INTO lot_ready (lot_id, ready_ns) VALUES (?, ?)", (lot_id, now_ns)
                )
                r = assess(
                    LotDrying(r.dried_ns, r.dryer),
                    r.latest,
                    rules,
                    now_ns,
                    ready_ns=now_ns,
                )
                records._event(
                    conn,
                    lot_id,
                    f"ready:{lot_id}",
                    now_ns,
                    "ready",
                    describe(r, "en"),
                    by="agent",
                    source="rules",
                    data={"latest_pct": ", ".join(f"{v:g}" for v in r.latest)},
                )
            out.append((code, r))
        return out

    return records.write_with(run)


def mark_announced(records: LotRecords, code: str, at_ns: int) -> None:
    """The lot's notice was handed over: never again."""
    records.write_with(
        lambda conn: conn.execute(
            "UPDATE lot_ready SET announced_ns = ? WHERE lot_id ="
            " (SELECT id FROM lots WHERE code = ?)",
            (at_ns, code),
        )
    )


def ready_notice(code: str, r: Readiness, severity: str) -> AlertEvent:
    """The notifier's event for a lot ready to hull (its episode: the lot and ``ready_ns``)."""
    at = r.ready_ns if r.ready_ns is not None else r.rest_ends_ns
    return AlertEvent(
        rule=READY_RULE,
        subject=code,
        state="firing",
        severity=severity,
        since_ns=at,
        at_ns=at,
        messages={
            "pt-BR": f"Lote {code}: {describe(r, 'pt-BR')}",
            "en": f"Lot {code}: {describe(r, 'en')}",
        },
        data={
            "lot": code,
            "dryer": r.dryer,
            "dried_ns": r.dried_ns,
            "last_pct": r.latest[0] if r.latest else 0.0,
        },
    )


# -- in the agent -------------------------------------------------------------------------


class ReadinessService:
    """Finds lots ready to hull and announces each once (see the module docstring).

    Args:
        records: The lot record store.
        rules: The rest and the window.
        announce: Hands notices to the notifier (``None``: no notification channels;
            the lots are still marked, so they are not announced later).
        on_ready: Told each lot announced (the live pages).
        clock_ns: Wall clock, UTC ns (tests move it by days).
        interval_s: How often to look.
        zone: The site's time zone (a dried time given without one is in it).
    """

    def __init__(
        self,
        *,
        records: AsyncLotRecords,
        rules: ReadinessRules,
        announce: Callable[[Sequence[AlertEvent]], Awaitable[object]] | None = None,
        on_ready: Callable[[str, Readiness], None] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        interval_s: float = 60.0,
        zone: tzinfo = UTC,
    ) -> None:
        self.zone = zone
        self._records = records
        self.rules = rules
        self._announce = announce
        self._on_ready = on_ready
        self.clock_ns = clock_ns
        self._interval_s = interval_s
        #: Lots announced since start.
        self.announced = 0

    async def check(self) -> list[str]:
        """Announce the lots ready now and never announced; their codes."""
        now = self.clock_ns()
        ready = await self._records.call(newly_ready, self._records.sync, self.rules, now)
        if not ready:
            return []
        if self._announce is not None:
            await self._announce([ready_notice(code, r, self.rules.severity) for code, r in ready])
        for code, r in ready:
            await self._records.call(mark_announced, self._records.sync, code, now)
            self.announced += 1
            log.info("Lot %r is ready to hull (%s)", code, describe(r, "en"))
            if self._on_ready is not None:
                self._on_ready(code, r)
        return [code for code, _ in ready]

    async def readiness(self, code: str) -> Readiness | None:
        """One lot's state now."""
        return await asyncio.to_thread(
            lot_readiness, self._records.sync, code, self.rules, self.clock_ns()
        )

    async def readiness_by_code(self, codes: Iterable[str]) -> dict[str, Readiness]:
        """The state now of each of ``codes`` that left a dryer."""
        return await asyncio.to_thread(
            readiness_by_code, self._records.sync, list(codes), self.rules, self.clock_ns()
        )

    async def run_loop(self) -> None:
        """Look every ``interval_s``."""
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)

    async def handle_command(self, cmd: Command) -> dict[str, object]:
        """``cmd/lotdried/<code>``: see ``handle_dried_command``."""
        return await handle_dried_command(
            self._records, cmd, now_ns=self.clock_ns(), zone=self.zone
        )


async def handle_dried_command(
    records: AsyncLotRecords, cmd: Command, *, now_ns: int, zone: tzinfo = UTC
) -> dict[str, object]:
    """``cmd/lotdried/<code>`` with ``{"dryer": ..., "at": ...}``; the reply document.

    Raises:
        CommandRefused: Not ``lotdried/<code>``, a bad code, dryer or time; nothing
            is written.
    """
    if len(cmd.path) != 2 or cmd.path[0] != DRIED_COMMAND:
        raise CommandRefused(f"expected cmd/{DRIED_COMMAND}/<lot>")
    try:
        code = validate_lot(cmd.path[1])
        change = parse_dried(cmd.doc, now_ns=now_ns, zone=zone)
        drying = await records.call(
            set_dried, records.sync, code, change, by=cmd.by, source=cmd.source, at_ns=now_ns
        )
    except LotError as exc:
        raise CommandRefused(str(exc)) from None
    return {"lot": code, "dried_ns": drying.dried_ns, "dryer": drying.dryer}
