"""``coffee-telemetry lot move`` and ``lot blend``: corrections and blends of lot records.

    coffee-telemetry lot move -c site.toml --reading DEVICE:SEQ --to LOT --reason TEXT
        [--from LOT] [--by B]
    coffee-telemetry lot blend -c site.toml LOT --from LOT LOT [LOT ...] [--by B]

``move`` moves a moisture reading recorded under the wrong lot to the right one
(``lots.corrections``): the original assignment stays in the record, the move is an event
of both lots with who, when and why, and both lots' summaries and verdicts then count the
reading where it belongs. ``--from`` refuses the move if the reading is elsewhere now.

``blend`` makes a lot from named source lots (``lots.blends``): it carries the sources'
readings' summaries, and their members and plots (the evidence store); a blend of a lot
"sem geolocalização" with a geolocated one is refused.

Both write while the agent runs (SQLite WAL). Exit codes: 0 done; 1 refused (the
message says why; nothing was written); 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from coffee_telemetry.agent.cli._common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    Subcommands,
    add_config_command,
    load,
)
from coffee_telemetry.agent.errors import LotError

__all__ = ["add_parser", "cmd_lot_blend", "cmd_lot_move"]


def _error(message: str) -> None:
    print(f"erro/error: {message}; nada foi gravado / nothing was written", file=sys.stderr)


def cmd_lot_move(args: argparse.Namespace) -> int:
    """Move a reading to the lot it belongs to."""
    from coffee_telemetry.agent.lots import corrections
    from coffee_telemetry.agent.lots.records import configured_lot_records
    from coffee_telemetry.agent.lots.store import check_by, validate_lot

    cfg = load(args.config)
    try:
        request = corrections.parse_move(
            {"reading": args.reading, "to": args.to, "reason": args.reason}
        )
        from_lot = None if args.from_ is None else validate_lot(args.from_)
        by = check_by(args.by if args.by else getpass.getuser())
    except LotError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    try:
        records = configured_lot_records(cfg)
    except LotError as exc:
        print(f"erro/error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    at_ns = time.time_ns()
    try:
        move = records.write_with(
            lambda conn: corrections.move_reading(
                conn, request, from_lot=from_lot, by=by, source="cli", at_ns=at_ns
            )
        )
    except LotError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    finally:
        records.close()
    rid = corrections.reading_id(move.device, move.seq)
    print(
        f"leitura/reading {rid} ({move.moisture_pct:g} %): {move.from_lot} -> {move.to_lot}"
        f" por/by {move.by}: {move.reason}"
    )
    return EXIT_OK


def cmd_lot_blend(args: argparse.Namespace) -> int:
    """Make a blend lot from source lots."""
    from coffee_telemetry.agent.cli.evidence import evidence_path
    from coffee_telemetry.agent.evidence.geo import GeoError
    from coffee_telemetry.agent.evidence.store import EvidenceStore
    from coffee_telemetry.agent.lots import blends
    from coffee_telemetry.agent.lots.records import configured_lot_records
    from coffee_telemetry.agent.lots.store import check_by

    cfg = load(args.config)
    try:
        request = blends.parse_blend(args.lot, args.sources)
        by = check_by(args.by if args.by else getpass.getuser())
    except LotError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    try:
        records = configured_lot_records(cfg)
    except LotError as exc:
        print(f"erro/error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        evidence = EvidenceStore.open(evidence_path(cfg))
        try:
            result = blends.blend(
                records, evidence, request, by=by, source="cli", at_ns=time.time_ns()
            )
        finally:
            evidence.close()
    except (LotError, GeoError) as exc:
        _error(str(exc))
        return EXIT_FAILURE
    finally:
        records.close()
    c = result.combined
    mean = "-" if c.mean_pct is None else f"{c.mean_pct:.2f} %"
    print(
        f"{result.code}: mistura/blend de/of {', '.join(s.code for s in result.sources)};"
        f" {c.readings} leituras/readings, média/mean {mean}, veredito/verdict {c.verdict};"
        f" {len(result.members)} membros/members, {result.geolocation}"
    )
    return EXIT_OK


def _lot_actions(sub: Subcommands) -> Subcommands:
    """The subcommands of ``lot`` (added by ``cli.lots``)."""
    lot = sub.choices["lot"]
    for action in lot._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the lot command has no subcommands")


def add_parser(sub: Subcommands) -> None:
    """Add ``lot move`` and ``lot blend`` (after ``cli.lots``)."""
    actions = _lot_actions(sub)
    move = add_config_command(
        actions, "move", summary="move a reading to the lot it belongs to", run=cmd_lot_move
    )
    move.add_argument("--reading", required=True, help="the reading: DEVICE:SEQ (e.g. umid-1:57)")
    move.add_argument("--to", required=True, help="the lot it belongs to")
    move.add_argument("--reason", required=True, help="why (kept in both lots' records)")
    move.add_argument("--from", dest="from_", help="refuse unless the reading is in this lot")
    move.add_argument("--by", help="who (default: your login name)")
    blend = add_config_command(
        actions, "blend", summary="make a blend lot from source lots", run=cmd_lot_blend
    )
    blend.add_argument("lot", help="the blend's lot code")
    blend.add_argument(
        "--from", dest="sources", nargs="+", required=True, metavar="LOT", help="source lots"
    )
    blend.add_argument("--by", help="who (default: your login name)")
