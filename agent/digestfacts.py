"""The daily digest's facts, gathered from the agent's services for the notifier.

Theory of operation
-------------------
``agent.notify`` sits below the history, the hullers and the outbox, so it cannot ask
them itself; ``digest_facts_provider`` (called by ``agent.app``, which holds them all)
returns the ``DigestFactsProvider`` it calls once per digest. Every section reads what
the pages and ``coffee-telemetry maintenance status`` read, without writing anything:

* **lots**: ``AsyncHistory.lots_today`` since the site's local midnight; a lot is wet
  as on the Armazém page: an open wet-lot alert names it, or its mean is at or above
  its product's threshold (``wet_lot_rule``).
* **tasks**: each huller's running hours (``hours_total`` of the live state) against
  the latest service of each task (``last_services``), by ``task_status``; only tasks
  due or overdue. A huller whose hours were never read says nothing.
* **offline**: ``Health.devices`` not online (meters, scales and hullers alike).
* **backlogs**: ``Outbox.backlog`` per sink, the sinks with something to deliver.

A section that fails to read is logged and left ``None`` (the digest says it is
unavailable); the others still go. The history being off leaves the lots ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from coffee_telemetry.agent.alerts import AlertService
from coffee_telemetry.agent.alerts.kinds import wet_lot_rule
from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.history.service import AsyncHistory
from coffee_telemetry.agent.hullers.service import HullerService
from coffee_telemetry.agent.hullers.store import AsyncMaintenanceStore
from coffee_telemetry.agent.hullers.tasks import hours_total, task_status
from coffee_telemetry.agent.notify.digest import (
    DeviceOffline,
    DigestFacts,
    DigestFactsProvider,
    LotVerdict,
    SinkBacklog,
    TaskDue,
)
from coffee_telemetry.agent.outbox.store import Outbox

__all__ = ["digest_facts_provider", "local_midnight_ns"]

log = logging.getLogger(__name__)

NS = 1_000_000_000
#: The rule whose open alerts mark a lot wet.
WET_LOT_RULE = "wet_lot"

_T = TypeVar("_T")


def local_midnight_ns(cfg: Config, now_ns: int) -> int:
    """The start of ``now_ns``'s day at the site, UTC ns."""
    zone = cfg.site.zone
    today = datetime.fromtimestamp(now_ns / NS, zone).date()
    return int(datetime(today.year, today.month, today.day, tzinfo=zone).timestamp()) * NS


def digest_facts_provider(
    *,
    cfg: Config,
    health: Health,
    outbox: Outbox | None,
    history: AsyncHistory | None,
    hullers: HullerService | None,
    maintenance: AsyncMaintenanceStore | None,
    alerts: AlertService | None,
) -> DigestFactsProvider:
    """The provider the notifier calls for each digest (module docstring).

    Args:
        cfg: The site's configuration (zone, hullers, the wet-lot rule).
        health: Devices and sinks as the agent sees them.
        outbox: The readings outbox (backlogs); ``None``: unavailable.
        history: The local history (lots); ``None``: history off.
        hullers: The huller service (live running hours); ``None``: no hullers.
        maintenance: The maintenance store (last services); ``None``: no hullers.
        alerts: The alert service (open wet-lot alerts); ``None``: alerts off.
    """
    wet = wet_lot_rule(cfg.alerts.wet_lot)

    async def lots(now_ns: int) -> tuple[LotVerdict, ...] | None:
        if history is None:
            return None
        today = await history.lots_today(local_midnight_ns(cfg, now_ns))
        alerted = set()
        if alerts is not None:
            alerted = {
                str(a.get("subject")) for a in alerts.open_docs() if a.get("rule") == WET_LOT_RULE
            }
        out = []
        for s in today.values():
            threshold = wet.threshold_for(s.product)
            out.append(
                LotVerdict(
                    lot=s.lot,
                    station=s.station,
                    product=s.product,
                    count=s.count,
                    mean_pct=s.mean_pct,
                    max_pct=s.max_pct,
                    threshold_pct=threshold,
                    wet=s.lot in alerted or s.mean_pct >= threshold,
                    last_ns=s.last_ns,
                )
            )
        return tuple(out)

    async def tasks() -> tuple[TaskDue, ...] | None:
        if not cfg.hullers:
            return ()
        if hullers is None or maintenance is None:
            return None
        states = hullers.states()
        last = await maintenance.last_services()
        out = []
        for h in cfg.hullers:
            hours = hours_total(h, states.get(h.id))
            if hours is None:
                continue
            for task in h.tasks:
                record = last.get((h.id, task.id))
                status = task_status(
                    task, hours, None if record is None else record.hours_at, huller=h.id
                )
                if status.due:
                    out.append(
                        TaskDue(
                            huller=h.id,
                            huller_name=h.name or "",
                            task=task.id,
                            name=task.name,
                            overdue=status.overdue,
                            hours_since=status.hours_since,
                            interval_h=status.interval_h,
                            last_done_ns=None if record is None else record.done_at_ns,
                        )
                    )
        return tuple(out)

    async def offline() -> tuple[DeviceOffline, ...] | None:
        return tuple(
            DeviceOffline(
                device=d.device,
                station=d.station,
                since_ns=d.since_ns,
                last_seen_ns=d.last_frame_ns,
                error=d.last_error,
            )
            for d in health.devices.values()
            if d.state is not DeviceState.ONLINE
        )

    async def backlogs() -> tuple[SinkBacklog, ...] | None:
        if outbox is None:
            return None
        out = []
        for name in outbox.sinks:
            records = outbox.backlog(name)
            if records <= 0:
                continue
            sink = health.sinks.get(name)
            out.append(
                SinkBacklog(
                    sink=name,
                    records=records,
                    last_delivery_ns=None if sink is None else sink.last_delivery_ns,
                    error=None if sink is None else sink.last_error,
                )
            )
        return tuple(out)

    async def provide(now_ns: int) -> DigestFacts:
        return DigestFacts(
            lots=await _section("lots", lambda: lots(now_ns)),
            tasks=await _section("tasks", tasks),
            offline=await _section("offline", offline),
            backlogs=await _section("backlogs", backlogs),
        )

    return provide


async def _section(
    name: str, read: Callable[[], Awaitable[tuple[_T, ...] | None]]
) -> tuple[_T, ...] | None:
    """``read()``, or ``None`` when it fails (logged): one store must not lose the rest."""
    try:
        return await read()
    except Exception as exc:
        log.error("Daily digest: cannot read its %s section", name, exc_info=exc)
        return None
