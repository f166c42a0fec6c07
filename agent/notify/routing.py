"""Which routes take an alert, when a message may go, and who is next (pure; time passed in).

A route takes an alert when the alert's rule is among its ``rules`` (none listed: every
rule), its severity among its ``severities``, and the alert's time, in the site's zone,
falls on one of its ``days``: a rota of routes by weekday says who is on duty. Its
``contacts`` are the escalation order: the first gets the alert, the next one gets it
when nobody acknowledged within ``escalate_after_min``, and so on to the last.

Quiet hours hold back what is not critical: a warning at 23:10 with quiet hours
``22:00-06:00`` goes at 06:00; a critical alert goes at once, whatever the hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from coffee_telemetry.agent.notify.config import DAYS, NotifyConfig, RouteConfig
from coffee_telemetry.agent.notify.model import AlertEvent

__all__ = ["escalation_due_ns", "next_contact", "release_ns", "routes_for"]

NS = 1_000_000_000


def _local(at_ns: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(at_ns / NS, tz=UTC).astimezone(zone)


def routes_for(cfg: NotifyConfig, event: AlertEvent, zone: ZoneInfo) -> list[RouteConfig]:
    """The routes that take ``event`` (rule, severity, and the day it happened on)."""
    day = DAYS[_local(event.at_ns, zone).weekday()]
    return [
        route
        for route in cfg.routes
        if (not route.rules or event.rule in route.rules)
        and event.severity in route.severities
        and day in route.days
    ]


def _parse(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


def release_ns(route: RouteConfig, severity: str, at_ns: int, zone: ZoneInfo) -> int:
    """When a message of ``severity`` made at ``at_ns`` may go out on ``route``.

    ``at_ns`` itself, unless it is not critical and falls in the route's quiet hours:
    then the end of those quiet hours.
    """
    if route.quiet_hours is None or severity == "critical":
        return at_ns
    start_text, end_text = route.quiet_hours.split("-")
    start, end = _parse(start_text), _parse(end_text)
    local = _local(at_ns, zone)
    now = local.time().replace(second=0, microsecond=0)
    if start == end:
        return at_ns
    if start < end:
        quiet = start <= now < end
        end_day = local.date()
    else:  # overnight: 22:00-06:00
        quiet = now >= start or now < end
        end_day = local.date() + timedelta(days=1) if now >= start else local.date()
    if not quiet:
        return at_ns
    # Wall-clock arithmetic in the zone (a DST change moves the end, not the rule).
    ends = datetime.combine(end_day, end, tzinfo=zone)
    return max(at_ns, int(ends.timestamp()) * NS)


def next_contact(route: RouteConfig, level: int) -> str | None:
    """The contact at escalation ``level`` (0: the first), or None past the last."""
    return route.contacts[level] if 0 <= level < len(route.contacts) else None


def escalation_due_ns(route: RouteConfig, level: int, sent_ns: int) -> int | None:
    """When level ``level``'s message, released at ``sent_ns``, escalates (None: never)."""
    if route.escalate_after_min is None or next_contact(route, level + 1) is None:
        return None
    return sent_ns + round(route.escalate_after_min * 60 * NS)
