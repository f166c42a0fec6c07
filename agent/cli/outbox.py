"""``coffee-telemetry outbox``: the backlog per sink, drops and dead letters.

    coffee-telemetry outbox -c site.toml | --path outbox.sqlite3 [--json] [--dead-letters N]

It reads the outbox on a read-only connection of its own (``outbox.stats``), so it works
while the agent runs. With ``-c`` it also shows the notification queues
(``data_dir/notify.sqlite3``): what waits per channel, what was sent, refused for good
(dead letters) or dropped as too old.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from coffee_telemetry.agent.cli._common import CONFIG_HELP, EXIT_OK, Subcommands, load
from coffee_telemetry.agent.notify.queue import read_notify_stats
from coffee_telemetry.agent.notify.runtime import QUEUE_FILE
from coffee_telemetry.agent.outbox.stats import read_dead_letters, read_stats

__all__ = ["add_parser", "cmd_outbox"]


def _age(ns: int | None, now_ns: int) -> str:
    if ns is None:
        return "-"
    seconds = max(0.0, (now_ns - ns) / 1e9)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_outbox(args: argparse.Namespace) -> int:
    """Show the outbox backlog per sink (works while the agent runs)."""
    if args.path:
        path, quota, notify_path = Path(args.path), 0, None
    else:
        cfg = load(args.config)
        path, quota = cfg.outbox_path, int(cfg.outbox.max_mb * 1024 * 1024)
        notify_path = cfg.agent.data_dir / QUEUE_FILE
    stats = read_stats(path, max_bytes=quota)
    channels, notify_dead = (
        read_notify_stats(notify_path, dead_letters=args.dead_letters)
        if notify_path is not None
        else ([], [])
    )
    if args.json:
        doc = {
            "path": stats.path,
            "records": stats.records,
            "bytes": stats.bytes_held,
            "max_bytes": stats.max_bytes,
            "last_id": stats.last_id,
            "dropped_total": stats.dropped_total,
            "sinks": [
                {
                    "sink": s.sink,
                    "backlog": s.backlog,
                    "cursor": s.cursor,
                    "oldest_ns": s.oldest_ns,
                    "delivered_total": s.delivered_total,
                    "delivered_at_ns": s.delivered_at_ns,
                    "dropped_total": s.dropped_total,
                    "dead_total": s.dead_total,
                }
                for s in stats.sinks
            ],
            "notifications": [
                {
                    "channel": c.channel,
                    "queued": c.queued,
                    "oldest_ns": c.oldest_ns,
                    "sent": c.sent,
                    "dead": c.dead,
                    "expired": c.expired,
                }
                for c in channels
            ],
        }
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    now = time.time_ns()
    quota_text = f" of {stats.max_bytes / 1e6:.1f} MB" if stats.max_bytes else ""
    print(f"outbox {stats.path}")
    print(
        f"  {stats.records} records held, {stats.bytes_held / 1e6:.2f} MB{quota_text},"
        f" last id {stats.last_id}, dropped by quota {stats.dropped_total}"
    )
    header = ("sink", "backlog", "oldest", "last delivery", "dropped", "dead")
    print("  {:<10} {:>8} {:>8} {:>14} {:>8} {:>6}".format(*header))
    for s in stats.sinks:
        print(
            f"  {s.sink:<10} {s.backlog:>8} {_age(s.oldest_ns, now):>8}"
            f" {_age(s.delivered_at_ns, now) + ' ago' if s.delivered_at_ns else 'never':>14}"
            f" {s.dropped_total:>8} {s.dead_total:>6}"
        )
    if channels:
        print("notifications")
        header = ("channel", "queued", "oldest", "sent", "dead", "expired")
        print("  {:<10} {:>8} {:>8} {:>8} {:>6} {:>8}".format(*header))
        for c in channels:
            print(
                f"  {c.channel:<10} {c.queued:>8} {_age(c.oldest_ns, now):>8}"
                f" {c.sent:>8} {c.dead:>6} {c.expired:>8}"
            )
    if args.dead_letters and notify_dead:
        print("notifications refused for good (newest first):")
        for nd in notify_dead:
            at = datetime.fromtimestamp(nd.at_ns / 1e9, tz=UTC).isoformat(timespec="seconds")
            print(f"  {at} {nd.channel} to {nd.message.contact!r} status={nd.status} {nd.reason}")
            print(f"      {nd.message.title[:200]}")
    if args.dead_letters:
        print("dead letters (newest first):")
        for dl in read_dead_letters(path, limit=args.dead_letters):
            at = datetime.fromtimestamp(dl.at_ns / 1e9, tz=UTC).isoformat(timespec="seconds")
            print(f"  #{dl.id} {at} sink={dl.sink} status={dl.status} {dl.reason}")
            print(f"      {dl.payload.decode(errors='replace')[:300]}")
    return EXIT_OK


def add_parser(sub: Subcommands) -> None:
    """Add ``outbox`` to the command's subparsers."""
    outbox = sub.add_parser("outbox", help="show the outbox backlog per sink")
    where = outbox.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", help=CONFIG_HELP)
    where.add_argument("--path", help="outbox database file")
    outbox.add_argument("--json", action="store_true", help="machine-readable output")
    outbox.add_argument(
        "--dead-letters", type=int, default=0, metavar="N", help="also list N dead letters"
    )
    outbox.set_defaults(func=cmd_outbox)
