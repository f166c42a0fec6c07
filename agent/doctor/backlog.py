"""The outbox's backlog per sink and its oldest record (``outbox.stats``).

A backlog is normal while a link is down; what matters is its age. A sink that owes
records older than ``WARN_AGE_S`` warns, older than ``FAIL_AGE_S`` fails (a day: the
link or the sink needs a person). Records a sink refused for good (dead letters) warn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.errors import OutboxError
from coffee_telemetry.agent.outbox.stats import read_stats

__all__ = ["FAIL_AGE_S", "WARN_AGE_S", "check_outbox"]

WARN_AGE_S = 600.0
FAIL_AGE_S = 86400.0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def check_outbox(path: Path, *, now_ns: Callable[[], int] = time.time_ns) -> list[Result]:
    """One result per sink cursor in the outbox at ``path``."""
    values: dict[str, object] = {"path": str(path)}
    if not path.exists():
        return [
            Result(
                "outbox.backlog",
                "outbox",
                Status.WARN,
                "outbox_missing",
                "fix_outbox_missing",
                values,
            )
        ]
    try:
        stats = read_stats(path)
    except OutboxError as exc:
        values["error"] = str(exc)
        return [
            Result(
                "outbox.backlog",
                "outbox",
                Status.FAIL,
                "outbox_unreadable",
                "fix_outbox_unreadable",
                values,
            )
        ]
    if not stats.sinks:
        return [
            Result(
                "outbox.backlog",
                "outbox",
                Status.WARN,
                "outbox_no_sinks",
                "fix_outbox_missing",
                {**values, "records": stats.records},
            )
        ]
    results = []
    now = now_ns()
    for sink in stats.sinks:
        item: dict[str, object] = {
            **values,
            "sink": sink.sink,
            "backlog": sink.backlog,
            "delivered": sink.delivered_total,
            "dead": sink.dead_total,
        }
        subject = f"outbox:{sink.sink}"
        if sink.backlog == 0 or sink.oldest_ns is None:
            status, key, fix = Status.OK, "outbox_current", None
        else:
            age_s = max(0.0, (now - sink.oldest_ns) / 1e9)
            item["age"] = _age(age_s)
            if age_s >= FAIL_AGE_S:
                status, key, fix = Status.FAIL, "outbox_behind", "fix_outbox_behind"
            elif age_s >= WARN_AGE_S:
                status, key, fix = Status.WARN, "outbox_behind", "fix_outbox_behind"
            else:
                status, key, fix = Status.OK, "outbox_pending", None
        if sink.dead_total and status is Status.OK:
            status, key, fix = Status.WARN, "outbox_dead", "fix_outbox_dead"
        results.append(Result("outbox.backlog", subject, status, key, fix, item))
    return results
