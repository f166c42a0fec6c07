"""``coffee-telemetry lot``: set, clear or show the lot each station works on.

    coffee-telemetry lot set -c site.toml STATION LOT [--by B]
    coffee-telemetry lot clear -c site.toml STATION [--by B]
    coffee-telemetry lot show -c site.toml
    coffee-telemetry lot info -c site.toml LOT [--producer P] [--bags N]
        [--product-type T] [--note TEXT] [--by B]
    coffee-telemetry lot report -c site.toml LOT [-o FILE] [--csv] [--lang en]
    coffee-telemetry lot report -c site.toml --from DATE --to DATE --csv [-o FILE]
    coffee-telemetry lot verify -c site.toml FILE
    coffee-telemetry lot dried -c site.toml LOT --dryer patio|mechanical [--at TIME] [--by B]
    coffee-telemetry lot receipt -c site.toml LOT [--member M] [--invoice NF] [--sacks N]
        [--gross-kg KG] [--net-kg KG] [--stack POS] [--by B]

``set``/``clear`` write the lot store (``lots.store``) while the agent runs; the agent
picks a change up within a second and publishes it as a ``lot_assignment`` event.
``info`` writes a lot's details into its record (``lots.records``), with the rules of
the ``lotinfo`` command (an empty value clears a detail; nothing is written on a
refusal); without options it shows the lot's record at a glance.
``report`` writes a lot's PDF report, or its CSV (or the CSV of every lot seen in a
date range); ``verify`` checks a copy of a PDF report against the lot's record here
(``lots.export``): exit status 0 only when it is intact and matches.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from coffee_telemetry.agent.cli._common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    Subcommands,
    add_config_command,
    load,
)
from coffee_telemetry.agent.lots.export import (
    Lang,
    configured_csv,
    configured_report,
    report_file_name,
    verify_report,
)
from coffee_telemetry.agent.lots.model import LotReceipt, LotRecord
from coffee_telemetry.agent.lots.readiness import (
    ReadinessRules,
    describe,
    lot_readiness,
    parse_dried,
    set_dried,
)
from coffee_telemetry.agent.lots.receipt import (
    RECEIPT_KEYS,
    parse_receipt,
    receipt_doc,
    set_receipt,
)
from coffee_telemetry.agent.lots.records import (
    LotRecords,
    configured_lot_records,
    details_doc,
    parse_details,
)
from coffee_telemetry.agent.lots.store import LotError, LotStore, check_by, validate_lot
from coffee_telemetry.agent.web.lots import QueryError, parse_query

__all__ = [
    "add_parser",
    "cmd_lot",
    "cmd_lot_dried",
    "cmd_lot_info",
    "cmd_lot_receipt",
    "cmd_lot_report",
    "cmd_lot_verify",
]

#: ``lot info`` options and the details they set.
_DETAIL_OPTIONS = (
    ("producer", "producer"),
    ("bags", "bags"),
    ("product_type", "product_type"),
    ("note", "note"),
)


def cmd_lot_info(args: argparse.Namespace) -> int:
    """Set or show a lot's details (producer, bags, product type, note)."""
    cfg = load(args.config)
    doc: dict[str, object] = {}
    for option, key in _DETAIL_OPTIONS:
        value = getattr(args, option, None)
        if value is not None:
            doc[key] = (value or None) if key != "bags" else value
    try:
        code = validate_lot(args.lot)
        change = parse_details(doc) if doc else None
        by = check_by(args.by if args.by else getpass.getuser())
    except LotError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return EXIT_CONFIG
    try:
        records = configured_lot_records(cfg)
    except LotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if change is not None:
            details = records.set_details(code, change, by=by, source="cli", at_ns=time.time_ns())
            print(f"{code}: " + _details_text(details_doc(details)))
            return EXIT_OK
        record = records.record(code)
        state = lot_readiness(records, code, ReadinessRules.from_config(cfg.lots), time.time_ns())
    finally:
        records.close()
    if record is None:
        print(f"error: lote desconhecido / unknown lot {code!r}", file=sys.stderr)
        return EXIT_FAILURE
    s = record.summary
    print(f"{code}: {s.readings} leituras/readings, {s.weighments} pesagens/weighments,")
    print(f"  {s.net_kg:.1f} kg, veredito/verdict {s.verdict}, alertas/alerts {s.open_alerts}")
    print("  " + _details_text(details_doc(record.details)))
    if state is not None:
        print(f"  {describe(state, 'pt-BR')} / {describe(state, 'en')}")
    if record.hulled_bags is not None:
        print(f"  sacas beneficiadas/bags hulled {record.hulled_bags:g}")
    return EXIT_OK


def _details_text(doc: dict[str, object]) -> str:
    return ", ".join(
        f"{key}={'-' if doc[key] is None else doc[key]}"
        for key in ("producer", "bags", "product_type", "note")
    )


def cmd_lot(args: argparse.Namespace) -> int:
    """Set, clear or show the lot each station works on."""
    cfg = load(args.config)
    stations = sorted(
        {d.station for d in cfg.devices if d.station}
        | {h.station for h in cfg.hullers if h.station}
    )
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


#: A report file larger than this is not one (``lot verify`` reads no further).
MAX_REPORT_BYTES = 64 * 1024 * 1024


def _range_records(records: LotRecords, args: argparse.Namespace, zone: object) -> list[LotRecord]:
    """Every lot seen in ``--from``..``--to`` (QueryError: a bad date or range)."""
    params = {"from": args.from_ or "", "to": args.to or "", "per_page": "200"}
    out: list[LotRecord] = []
    page = 1
    while True:
        query = parse_query({**params, "page": str(page)}, zone=zone)
        lots, total = records.search(query)
        for summary in lots:
            record = records.record(summary.code)
            if record is not None:
                out.append(record)
        if not lots or page * query.per_page >= total:
            return out
        page += 1


def cmd_lot_report(args: argparse.Namespace) -> int:
    """Write a lot's PDF report or CSV, or the CSV of a date range's lots."""
    cfg = load(args.config)
    lang: Lang = "en" if args.lang == "en" else "pt-BR"
    by_range = args.from_ is not None or args.to is not None
    if by_range == (args.lot is not None) or (by_range and not args.csv):
        print("error: give a LOT, or --from/--to with --csv", file=sys.stderr)
        return EXIT_CONFIG
    try:
        code = None if args.lot is None else validate_lot(args.lot)
        records = configured_lot_records(cfg)
    except LotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if code is None:
            chosen = _range_records(records, args, cfg.site.zone)
        else:
            record = records.record(code)
            if record is None:
                print(f"error: lote desconhecido / unknown lot {code!r}", file=sys.stderr)
                return EXIT_FAILURE
            chosen = [record]
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        records.close()
    if args.csv:
        body = configured_csv(chosen, cfg, lang=lang, decimal_comma=args.decimal_comma)
        default = report_file_name(code, csv=True) if code else "lotes.csv"
    else:
        body = configured_report(chosen[0], cfg, generated_ns=time.time_ns(), lang=lang)
        default = report_file_name(chosen[0].summary.code)
    target = Path(args.output or default)
    partial = target.with_name(target.name + ".part")
    try:
        partial.write_bytes(body)
        partial.replace(target)
    except OSError as exc:
        print(f"error: cannot write {target}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    what = f"{len(chosen)} lots" if code is None else chosen[0].summary.code
    print(f"{target}: {what}, {len(body)} bytes")
    return EXIT_OK


def cmd_lot_verify(args: argparse.Namespace) -> int:
    """Check a copy of a lot's PDF report against the lot's record here."""
    cfg = load(args.config)
    lang: Lang = "en" if args.lang == "en" else "pt-BR"
    try:
        with open(args.file, "rb") as fh:
            data = fh.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        records = configured_lot_records(cfg)
    except LotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        result = verify_report(data[:MAX_REPORT_BYTES], records.record)
    finally:
        records.close()
    lot = f"{result.code}: " if result.code else ""
    print(f"{args.file}: {lot}{result.describe(lang)}")
    if result.report_sha256:
        print(f"  SHA-256 (relatório/report): {result.report_sha256}")
    if result.record_sha256 is not None:
        print(f"  SHA-256 (registro/record):  {result.record_sha256}")
    return EXIT_OK if result.ok else EXIT_FAILURE


def cmd_lot_dried(args: argparse.Namespace) -> int:
    """Say when a lot left the dryer, and show where it stands."""
    cfg = load(args.config)
    now = time.time_ns()
    try:
        code = validate_lot(args.lot)
        doc: dict[str, object] = {"dryer": args.dryer}
        if args.at is not None:
            doc["at"] = args.at
        change = parse_dried(doc, now_ns=now, zone=cfg.site.zone)
        by = check_by(args.by if args.by else getpass.getuser())
    except LotError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return EXIT_CONFIG
    try:
        records = configured_lot_records(cfg)
    except LotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    rules = ReadinessRules.from_config(cfg.lots)
    try:
        set_dried(records, code, change, by=by, source="cli", at_ns=now)
        state = lot_readiness(records, code, rules, now)
    finally:
        records.close()
    if state is not None:
        print(f"{code}: {describe(state, 'pt-BR')}")
        print(f"  {describe(state, 'en')}")
    return EXIT_OK


def cmd_lot_receipt(args: argparse.Namespace) -> int:
    """Set or show a lot's intake receipt."""
    cfg = load(args.config)
    doc: dict[str, object] = {}
    for key in RECEIPT_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            doc[key] = value
    try:
        code = validate_lot(args.lot)
        change = parse_receipt(doc) if doc else None
        by = check_by(args.by if args.by else getpass.getuser())
    except LotError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return EXIT_CONFIG
    try:
        records = configured_lot_records(cfg)
    except LotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    receipt: LotReceipt | None
    try:
        if change is not None:
            receipt = set_receipt(records, code, change, by=by, source="cli", at_ns=time.time_ns())
        else:
            record = records.record(code)
            if record is None:
                print(f"error: lote desconhecido / unknown lot {code!r}", file=sys.stderr)
                return EXIT_FAILURE
            receipt = record.receipt
    except LotError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        records.close()
    doc_out = receipt_doc(receipt) or {}
    shown = ", ".join(
        f"{key}={'-' if doc_out.get(key) is None else doc_out[key]}"
        for key in (*RECEIPT_KEYS, "weight_source")
    )
    print(f"{code}: {shown}")
    return EXIT_OK


def _kg(text: str) -> float:
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise argparse.ArgumentTypeError("a weight in kg, like 2580.5") from None
    return value


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
    info = add_config_command(
        actions, "info", summary="set or show a lot's details", run=cmd_lot_info
    )
    info.add_argument("lot", help="lot code")
    info.add_argument("--producer", help="producer (member) name or code; '' clears it")
    info.add_argument("--bags", type=_bags, help="declared bags")
    info.add_argument(
        "--product-type",
        dest="product_type",
        help="cereja, coco, pergaminho or beneficiado; '' clears it",
    )
    info.add_argument("--note", help="free note; '' clears it")
    info.add_argument("--by", help="who (default: your login name)")
    report = add_config_command(
        actions, "report", summary="write a lot's PDF report or CSV", run=cmd_lot_report
    )
    report.add_argument("lot", nargs="?", help="lot code (or --from/--to with --csv)")
    report.add_argument("-o", "--output", help="file to write (default: lote-<LOT>.pdf/.csv)")
    report.add_argument("--csv", action="store_true", help="readings and weighments as CSV")
    report.add_argument("--lang", choices=("pt-BR", "en"), default="pt-BR")
    report.add_argument(
        "--decimal-comma",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CSV with ';' and decimal commas (default: with --lang pt-BR)",
    )
    report.add_argument("--from", dest="from_", help="CSV of the lots seen from this date")
    report.add_argument("--to", help="... up to this date (YYYY-MM-DD, site time)")
    verify = add_config_command(
        actions, "verify", summary="check a copy of a lot's PDF report", run=cmd_lot_verify
    )
    verify.add_argument("file", help="the PDF report")
    dried = add_config_command(
        actions, "dried", summary="say when a lot left the dryer", run=cmd_lot_dried
    )
    dried.add_argument("lot", help="lot code")
    dried.add_argument("--dryer", required=True, help="patio or mechanical")
    dried.add_argument(
        "--at", help="when (ISO 8601: 2026-12-01T17:30, site time unless it names a zone)"
    )
    dried.add_argument("--by", help="who (default: your login name)")
    receipt = add_config_command(
        actions, "receipt", summary="set or show a lot's intake receipt", run=cmd_lot_receipt
    )
    receipt.add_argument("lot", help="lot code")
    receipt.add_argument("--member", help="member (producer) code; '' clears it")
    receipt.add_argument("--invoice", help="nota fiscal number; '' clears it")
    receipt.add_argument("--sacks", type=_bags, help="sacks received")
    receipt.add_argument("--gross-kg", dest="gross_kg", type=_kg, help="gross weight, kg")
    receipt.add_argument("--net-kg", dest="net_kg", type=_kg, help="net weight, kg")
    receipt.add_argument("--stack", help="stack position in the warehouse; '' clears it")
    receipt.add_argument("--by", help="who (default: your login name)")
    verify.add_argument("--lang", choices=("pt-BR", "en"), default="pt-BR")


def _bags(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise argparse.ArgumentTypeError("bags must be a whole number")
    return int(text)
