"""``coffee-telemetry maintenance``: huller running hours and service tasks.

    coffee-telemetry maintenance status -c site.toml [--json]
    coffee-telemetry maintenance done -c site.toml HULLER TASK [--note T] [--at TIME] [--by B]

``status`` reads the maintenance database without creating it and prints, per huller,
its hours and where each task stands (``tasks.huller_status``); ``done`` records a
service through ``record.record_service`` and says what was stored. The table is in
Portuguese, as the warehouse staff read it; the messages of ``done`` in English.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TextIO
from zoneinfo import ZoneInfo

from coffee_telemetry.agent.cli._common import Subcommands, add_config_command, load
from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.errors import MaintenanceError, UsageError
from coffee_telemetry.agent.hullers.record import record_service
from coffee_telemetry.agent.hullers.store import MaintenanceStore
from coffee_telemetry.agent.hullers.tasks import HullerState, ServiceRecord, huller_status

__all__ = ["add_parser", "cmd_maintenance", "print_status", "record_done"]

_STATE_LABELS: Mapping[str, str] = {
    "ok": "em dia",
    "due": "VENCENDO",
    "overdue": "ATRASADA",
    "unknown": "?",
}


def _printable(text: str) -> str:
    # Stored text is checked on entry; this guards the terminal against anything else.
    return "".join(
        "?" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch for ch in text
    )


def _local(ts_ns: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, zone).strftime("%Y-%m-%d %H:%M")


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _render_table(doc: Mapping[str, object], zone: ZoneInfo, out: TextIO) -> None:
    hullers = doc["hullers"]
    assert isinstance(hullers, list)
    out.write(f"Manutenção dos descascadores — site {doc['site']}\n")
    if not hullers:
        out.write("\nNenhum descascador configurado ([[hullers]] no arquivo de configuração).\n")
        return
    header = (
        f"  {'Tarefa':<16} {'Descrição':<24} {'Horas desde':>11} {'Intervalo':>9}"
        f" {'Restante':>9}  {'Estado':<9} Último serviço\n"
    )
    for h in hullers:
        assert isinstance(h, dict)
        name = f"  {_printable(str(h['name']))}" if h["name"] else ""
        out.write(f"\n{h['id']}{name}\n")
        hours, bags, updated = h["hours_total"], h["bags_total"], h["updated_ns"]
        if hours is None:
            out.write("  Horas de funcionamento: sem dados (o agente ainda não leu as horas)\n")
        else:
            assert isinstance(hours, float)
            line = f"  Horas de funcionamento: {hours:.1f} h"
            if isinstance(bags, float):
                line += f"    Sacas (total): {bags:.0f}"
            if isinstance(updated, int):
                line += f"    Última alteração: {_local(updated, zone)}"
            out.write(line + "\n")
        tasks = h["tasks"]
        assert isinstance(tasks, list)
        if not tasks:
            out.write("  (nenhuma tarefa de manutenção configurada)\n")
            continue
        out.write(header)
        for t in tasks:
            assert isinstance(t, dict)
            since, remaining, interval = t["hours_since"], t["remaining_h"], t["interval_h"]
            assert isinstance(interval, float)
            last = t["last_service"]
            if isinstance(last, dict):
                done_at = last["done_at_ns"]
                assert isinstance(done_at, int)
                who = _printable(str(last["by"]))
                by = f", {who}" if who else ""
                done = f"{_local(done_at, zone)} ({last['hours_at']:.1f} h{by})"
            else:
                done = "nunca (conta desde a hora 0)"
            out.write(
                f"  {t['task']:<16} {_printable(str(t['name']))[:24]:<24}"
                f" {_hours(since if isinstance(since, float) else None):>11}"
                f" {interval:>9.1f}"
                f" {_hours(remaining if isinstance(remaining, float) else None):>9}"
                f"  {_STATE_LABELS[str(t['state'])]:<9} {done}\n"
            )
    out.write(
        "\nEstado: em dia = ok; VENCENDO = due (dentro de warn_before_h do intervalo);"
        " ATRASADA = overdue. Horas = horas de funcionamento.\n"
    )


def print_status(
    cfg: Config,
    out: TextIO,
    *,
    as_json: bool,
    err: TextIO | None = None,
) -> int:
    """``coffee-telemetry maintenance status``: running hours and service tasks per huller.

    Reads the database without creating it (before the agent's first run every value is
    unknown). JSON: ``{"site", "hullers": [{"id", "name", "hours_total", "bags_total",
    "updated_ns", "tasks": [{"task", "name", "interval_h", "warn_before_h",
    "hours_since", "remaining_h", "state", "last_service"}]}]}``; ``state`` is ``ok``,
    ``due``, ``overdue`` or ``unknown`` (hours not read yet).

    Returns:
        0, or 1 when the database cannot be read.
    """
    err = sys.stderr if err is None else err
    states: dict[str, HullerState] = {}
    updated: dict[str, int | None] = {}
    last: dict[tuple[str, str], ServiceRecord] = {}
    path = cfg.maintenance_path
    if path.exists():
        try:
            with MaintenanceStore.open(path) as store:
                states = store.load_states()
                updated = {h.id: store.updated_ns(h.id) for h in cfg.hullers}
                last = store.last_services()
        except MaintenanceError as exc:
            err.write(f"error: {exc}\n")
            return 1
    doc: dict[str, object] = {
        "site": cfg.site.id,
        "hullers": [
            huller_status(h, states.get(h.id), updated.get(h.id), last) for h in cfg.hullers
        ],
    }
    if as_json:
        out.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    else:
        _render_table(doc, cfg.site.zone, out)
    return 0


def record_done(
    cfg: Config,
    huller: str,
    task: str,
    *,
    note: str | None,
    at: str | None,
    by: str | None,
    out: TextIO,
    err: TextIO | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
) -> int:
    """``coffee-telemetry maintenance done``: ``record_service``, reported on ``out``.

    Returns:
        0 recorded; 2 usage error (unknown huller or task, bad note or ``--by``, ``--at``
        not ISO 8601 or in the future); 1 the database cannot be written.
    """
    err = sys.stderr if err is None else err
    try:
        done = record_service(cfg, huller, task, note=note, at=at, by=by, clock_ns=clock_ns)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return 2
    except MaintenanceError as exc:
        err.write(f"error: {exc}\n")
        return 1
    record = done.record
    h = next(x for x in cfg.hullers if x.id == record.huller)
    t = next(x for x in h.tasks if x.id == record.task)
    zone = cfg.site.zone
    what = f"{h.id} / {t.id}" + (f" ({_printable(t.name)})" if t.name else "")
    out.write(
        f"Recorded service #{record.id}: {what}, done {_local(record.done_at_ns, zone)}"
        f" ({zone.key}) at {record.hours_at:.1f} running hours"
        + (f", by {_printable(record.by)}" if record.by else "")
        + ".\n"
    )
    for remark in done.remarks:
        out.write(f"Note: {remark}.\n")
    if done.later is not None:
        later = done.later
        out.write(
            f"Note: a later service of this task is on record ({_local(later.done_at_ns, zone)},"
            f" #{later.id}); the hours since service still count from that one.\n"
        )
    out.write("The agent publishes it within a few seconds (or at its next start).\n")
    return 0


def cmd_maintenance(args: argparse.Namespace) -> int:
    """Huller service tasks: status table, or record a service as done."""
    cfg = load(args.config)
    if args.action == "status":
        return print_status(cfg, sys.stdout, as_json=args.json)
    return record_done(
        cfg, args.huller, args.task, note=args.note, at=args.at, by=args.by, out=sys.stdout
    )


def add_parser(sub: Subcommands) -> None:
    """Add ``maintenance status`` and ``maintenance done`` to the command's subparsers."""
    maintenance = sub.add_parser("maintenance", help="huller running hours and service tasks")
    actions = maintenance.add_subparsers(dest="action", required=True)
    status = add_config_command(
        actions,
        "status",
        summary="hours since each service against its interval",
        run=cmd_maintenance,
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    done = add_config_command(
        actions, "done", summary="record a service task as done", run=cmd_maintenance
    )
    done.add_argument("huller", help="huller id, as in the config")
    done.add_argument("task", help="task id, as in the config")
    done.add_argument("--note", help="what was done (up to 500 characters)")
    done.add_argument("--at", help="when, ISO 8601 (default: now; naive = site time zone)")
    done.add_argument("--by", help="who did it (default: your login name)")
