"""``coffee-telemetry lot``: set, clear or show the lot each station works on.

    coffee-telemetry lot set -c site.toml STATION LOT [--by B]
    coffee-telemetry lot clear -c site.toml STATION [--by B]
    coffee-telemetry lot show -c site.toml

It writes the lot store (``lots.store``) while the agent runs; the agent picks a change
up within a second and publishes it as a ``lot_assignment`` event.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from coffee_telemetry.agent.cli._common import (
    EXIT_CONFIG,
    EXIT_OK,
    Subcommands,
    add_config_command,
    load,
)
from coffee_telemetry.agent.lots.store import LotError, LotStore

__all__ = ["add_parser", "cmd_lot"]


def cmd_lot(args: argparse.Namespace) -> int:
    """Set, clear or show the lot each station works on."""
    cfg = load(args.config)
    stations = sorted({d.station for d in cfg.devices if d.station})
    if args.action != "show" and args.station not in stations:
        print(
            f"error: unknown station {args.station!r}; stations: {', '.join(stations) or 'none'}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    store = LotStore.open(cfg.agent.data_dir / "lots.sqlite3")
    try:
        by = args.by if getattr(args, "by", None) else getpass.getuser()
        now = time.time_ns()
        try:
            if args.action == "set":
                active = store.set(args.station, args.lot, by=by, source="cli", at_ns=now)
                print(f"{args.station}: lot {active.lot} (set by {active.set_by})")
            elif args.action == "clear":
                had = store.clear(args.station, by=by, source="cli", at_ns=now)
                print(f"{args.station}: {'lot cleared' if had else 'had no lot'}")
            else:
                active_lots = store.active()
                for station in stations:
                    lot = active_lots.get(station)
                    text = "-" if lot is None else f"{lot.lot} (by {lot.set_by}, {lot.source})"
                    print(f"{station:<16} {text}")
        except LotError as exc:
            print(f"error: {exc}; nothing was written", file=sys.stderr)
            return EXIT_CONFIG
    finally:
        store.close()
    if args.action != "show":
        print("The agent applies it to the next readings within a second.")
    return EXIT_OK


def add_parser(sub: Subcommands) -> None:
    """Add ``lot set``, ``lot clear`` and ``lot show`` to the command's subparsers."""
    lot = sub.add_parser("lot", help="the lot each station works on")
    actions = lot.add_subparsers(dest="action", required=True)
    lot_set = add_config_command(actions, "set", summary="set a station's active lot", run=cmd_lot)
    lot_set.add_argument("station")
    lot_set.add_argument("lot", help="lot code: letters, digits and - _ . / (up to 32)")
    lot_set.add_argument("--by", help="who (default: your login name)")
    lot_clear = add_config_command(
        actions, "clear", summary="end a station's active lot", run=cmd_lot
    )
    lot_clear.add_argument("station")
    lot_clear.add_argument("--by", help="who (default: your login name)")
    add_config_command(actions, "show", summary="active lot per station", run=cmd_lot)
