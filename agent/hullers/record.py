"""Recording a service done: the checks, the hours at the time, and the store.

``record_service`` is the one way a service gets recorded: by ``coffee-telemetry
maintenance done``, by the ``cmd/service/<huller>`` MQTT command (``service_command``) and
by the web page, all of them while the agent runs. Everything an operator typed is
checked before the database is opened (``tasks.check_text``, ``tasks.parse_at``), so a
refused record writes nothing. The hours stored with the service are the huller's running
hours at the time it was done: now, or from the hour snapshots for a past time (see
``tasks``); ``ServiceDone.remarks`` says where they came from when that needs saying.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Callable
from dataclasses import dataclass

from coffee_telemetry.agent.commands import Command, CommandHandler, CommandRefused
from coffee_telemetry.agent.config import Config, HullerConfig, ServiceTaskConfig
from coffee_telemetry.agent.errors import UsageError
from coffee_telemetry.agent.hullers.store import MaintenanceStore
from coffee_telemetry.agent.hullers.tasks import (
    BY_MAX,
    NOTE_MAX,
    SNAPSHOT_EVERY_NS,
    ServiceRecord,
    check_text,
    hours_total,
    parse_at,
)

__all__ = ["ServiceDone", "record_service", "service_command"]


def _default_by() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


def _hours_for(
    store: MaintenanceStore,
    huller: HullerConfig,
    at_ns: int | None,
    now_ns: int,
) -> tuple[float, str | None]:
    # The running hours to store with a service, and a remark on where they came from.
    current = hours_total(huller, store.state(huller.id))
    if at_ns is None or at_ns >= now_ns - SNAPSHOT_EVERY_NS:
        if current is None:
            return 0.0, "the agent has not read this huller's hours yet: recorded at 0 h"
        return current, None
    past = store.hours_at(huller.id, at_ns)
    if past is not None:
        return past, None
    first = store.first_snapshot(huller.id)
    if first is not None:
        return first[1], (
            "that time is before hour tracking began; recorded with the first hours known"
            f" ({first[1]:.1f} h)"
        )
    if current is not None:
        return current, "no hour history yet: recorded with the current hours"
    return 0.0, "the agent has not read this huller's hours yet: recorded at 0 h"


def _validate(
    cfg: Config,
    huller_id: str,
    task_id: str,
    note: str | None,
    at: str | None,
    by: str | None,
    now_ns: int,
) -> tuple[HullerConfig, ServiceTaskConfig, str, str, int | None]:
    huller = next((h for h in cfg.hullers if h.id == huller_id), None)
    if huller is None:
        known = ", ".join(h.id for h in cfg.hullers) or "none configured"
        raise UsageError(f"unknown huller {huller_id!r}; hullers: {known}")
    task = next((t for t in huller.tasks if t.id == task_id), None)
    if task is None:
        known = ", ".join(t.id for t in huller.tasks) or "none configured"
        raise UsageError(f"huller {huller.id!r} has no task {task_id!r}; its tasks: {known}")
    clean_note = check_text(note or "", what="--note", limit=NOTE_MAX)
    clean_by = check_text(_default_by() if by is None else by, what="--by", limit=BY_MAX)
    at_ns = None if at is None else parse_at(at, cfg.site.zone, now_ns=now_ns)
    return huller, task, clean_note, clean_by, at_ns


@dataclass(frozen=True, slots=True)
class ServiceDone:
    """A service just recorded by ``record_service``.

    Attributes:
        record: What was stored.
        remarks: Where the hours came from, when that needs saying.
        later: A later service of the same task already on record, if any.
    """

    record: ServiceRecord
    remarks: tuple[str, ...]
    later: ServiceRecord | None


def service_command(
    cfg: Config,
    *,
    clock_ns: Callable[[], int] = time.time_ns,
    on_done: Callable[[ServiceDone], None] | None = None,
) -> CommandHandler:
    """The ``cmd/service/<huller>`` command: ``{"task": ..., "note": ..., "at": ...}``.

    The same check and store as ``maintenance done`` (``record_service``);
    ``on_done`` is told of each service recorded (live pages).
    """

    async def handle(cmd: Command) -> dict[str, object]:
        if len(cmd.path) != 2 or cmd.path[0] != "service":
            raise CommandRefused("expected cmd/service/<huller>")
        task, note, at = cmd.doc.get("task"), cmd.doc.get("note"), cmd.doc.get("at")
        if not isinstance(task, str) or not all(
            v is None or isinstance(v, str) for v in (note, at)
        ):
            raise CommandRefused("task must be a string; note and at strings or absent")
        try:
            done = await asyncio.to_thread(
                record_service,
                cfg,
                cmd.path[1],
                task,
                note=note if isinstance(note, str) else None,
                at=at if isinstance(at, str) else None,
                by=cmd.by,
                clock_ns=clock_ns,
            )
        except UsageError as exc:
            raise CommandRefused(str(exc)) from None
        if on_done is not None:
            on_done(done)
        r = done.record
        return {
            "service": {
                "id": r.id,
                "huller": r.huller,
                "task": r.task,
                "done_at_ns": r.done_at_ns,
                "hours_at": round(r.hours_at, 3),
                "by": r.by,
                "note": r.note,
            },
            "remarks": list(done.remarks),
        }

    return handle


def record_service(
    cfg: Config,
    huller: str,
    task: str,
    *,
    note: str | None,
    at: str | None,
    by: str | None,
    clock_ns: Callable[[], int] = time.time_ns,
) -> ServiceDone:
    """Check and store a service done (blocking); the agent publishes it.

    Everything is checked before the database is opened, so a refused record writes
    nothing. ``at`` is ISO 8601 (naive: the site's time zone; default now); the hours
    stored are the huller's running hours then (see the module docstring). ``by``
    defaults to the login name. Used by ``maintenance done`` and the web server.

    Raises:
        UsageError: Unknown huller or task, bad note or ``by``, ``at`` not ISO 8601 or
            in the future.
        MaintenanceError: The database cannot be written.
    """
    now_ns = clock_ns()
    h, t, clean_note, clean_by, at_ns = _validate(cfg, huller, task, note, at, by, now_ns)
    with MaintenanceStore.open(cfg.maintenance_path) as store:
        hours, remark = _hours_for(store, h, at_ns, now_ns)
        later = store.last_services().get((h.id, t.id))
        record = store.record_service(
            h.id,
            t.id,
            at_ns=now_ns if at_ns is None else at_ns,
            hours_at=hours,
            note=clean_note,
            by=clean_by,
            recorded_ns=now_ns,
        )
    return ServiceDone(
        record=record,
        remarks=() if remark is None else (remark,),
        later=later if later is not None and later.done_at_ns > record.done_at_ns else None,
    )
