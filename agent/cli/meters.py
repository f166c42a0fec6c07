"""``coffee-telemetry meters`` and ``coffee-telemetry lot oven``.

    coffee-telemetry meters -c site.toml [--history] [--lang en]
    coffee-telemetry lot oven -c site.toml LOT PCT [--by B] [--lang en]

``meters`` lists each configured meter with its identity, method and calibration state
(in force, due within ``[alerts.calibration_due] warn_days``, overdue, or none), and
keeps their records in the lot records' store so that readings' calibration ids
resolve later (``agent.evidence.meters``); ``--history`` lists every record the store
holds, current or not. ``lot oven`` enters a lot's reference oven moisture result
(ISO 6673), checked like the lot's other details (nothing is written on a refusal), and
shows each meter's bias against it.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import sys
import time
from collections.abc import Mapping
from typing import Literal

from coffee_telemetry.agent.cli._common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    Subcommands,
    add_config_command,
    load,
)
from coffee_telemetry.agent.config import Config, MeterConfig
from coffee_telemetry.agent.evidence.meter_report import meter_bias
from coffee_telemetry.agent.evidence.meters import (
    MeterCalibration,
    all_calibrations,
    configured_records,
    meter_record,
    parse_oven,
    record_calibrations,
    set_oven,
)
from coffee_telemetry.agent.lots.records import LotRecords, configured_lot_records
from coffee_telemetry.agent.lots.store import LotError, validate_lot

__all__ = ["add_parser", "calibration_state", "cmd_lot_oven", "cmd_meters", "meter_line"]

Lang = Literal["pt-BR", "en"]

_TEXT: Mapping[Lang, Mapping[str, str]] = {
    "pt-BR": {
        "none": "nenhum medidor com [devices.meter] no arquivo do site",
        "uncal": "sem calibração",
        "ok": "em dia (vence em {d} dias)",
        "due": "VENCENDO em {d} dias",
        "today": "VENCE HOJE",
        "overdue": "VENCIDA há {d} dias",
        "cal": "calibração {date}, certificado {cert}, desvio {off} pp, vence {due}",
        "approval": "aprovação Inmetro",
        "method": "método",
        "history": "registros guardados (id, medidor, registrado em):",
        "oven": "{lot}: estufa {pct} % por {by} (referência do lote)",
        "bias": "  {dev}: {n} leituras, média {mean} %, viés {bias} pp",
        "unknown": "lote desconhecido",
    },
    "en": {
        "none": "no meter with [devices.meter] in the site file",
        "uncal": "not calibrated",
        "ok": "in force (due in {d} days)",
        "due": "DUE in {d} days",
        "today": "DUE TODAY",
        "overdue": "OVERDUE by {d} days",
        "cal": "calibrated {date}, certificate {cert}, offset {off} pp, due {due}",
        "approval": "Inmetro approval",
        "method": "method",
        "history": "records kept (id, meter, recorded at):",
        "oven": "{lot}: oven {pct} % by {by} (the lot's reference)",
        "bias": "  {dev}: {n} readings, mean {mean} %, bias {bias} pp",
        "unknown": "unknown lot",
    },
}


def _num(value: float, digits: int, lang: Lang) -> str:
    text = f"{value:.{digits}f}"
    return text.replace(".", ",") if lang == "pt-BR" else text


def calibration_state(
    record: MeterCalibration, today: datetime.date, warn_days: int, lang: Lang
) -> str:
    """A meter's calibration state on ``today``, in ``lang``."""
    t = _TEXT[lang]
    if record.due is None:
        return t["uncal"]
    days = (datetime.date.fromisoformat(record.due) - today).days
    if days < 0:
        return t["overdue"].format(d=-days)
    if days == 0:
        return t["today"]
    return (t["due"] if days <= warn_days else t["ok"]).format(d=days)


def meter_line(device: str, meter: MeterConfig) -> str:
    """One line about a configured meter, for ``check-config``."""
    rec = meter_record(device, meter)
    ident = " ".join(x for x in (rec.make, rec.model) if x) or "meter"
    if rec.serial:
        ident += f" nº {rec.serial}"
    cal = "not calibrated" if rec.due is None else f"calibration due {rec.due}"
    return f"{ident}; {cal}; id {rec.ref}"


def _open(cfg: Config) -> LotRecords | None:
    try:
        return configured_lot_records(cfg)
    except LotError as exc:
        print(f"erro/error: {exc}", file=sys.stderr)
        return None


def cmd_meters(args: argparse.Namespace) -> int:
    """List the configured meters with their calibration state."""
    cfg = load(args.config)
    lang: Lang = "en" if args.lang == "en" else "pt-BR"
    t = _TEXT[lang]
    records = _open(cfg)
    if records is None:
        return EXIT_FAILURE
    current = configured_records(cfg.devices)
    now = time.time_ns()
    try:
        records.write_with(lambda conn: record_calibrations(conn, current, at_ns=now))
        history = records.read_with(all_calibrations) if args.history else []
    finally:
        records.close()
    today = datetime.datetime.fromtimestamp(now / 1e9, cfg.site.zone).date()
    warn = cfg.alerts.calibration_due.warn_days
    if not current:
        print(t["none"])
    for rec in current:
        ident = " ".join(x for x in (rec.make, rec.model) if x) or "-"
        serial = f" nº {rec.serial}" if rec.serial else ""
        print(f"{rec.device}\t{ident}{serial}\t{rec.ref}")
        extra = []
        if rec.inmetro_approval:
            extra.append(f"{t['approval']} {rec.inmetro_approval}")
        if rec.method:
            extra.append(f"{t['method']} {rec.method}")
        if extra:
            print("  " + "; ".join(extra))
        if rec.date is not None:
            print(
                "  "
                + t["cal"].format(
                    date=rec.date,
                    cert=rec.certificate,
                    off=_num(rec.offset_pct or 0.0, 2, lang),
                    due=rec.due,
                )
            )
        print(f"  {calibration_state(rec, today, warn, lang)}")
    if args.history:
        print(t["history"])
        for rec, at_ns in history:
            when = datetime.datetime.fromtimestamp(at_ns / 1e9, cfg.site.zone)
            print(f"  {rec.ref}\t{rec.device}\t{when:%Y-%m-%d %H:%M}")
    return EXIT_OK


def cmd_lot_oven(args: argparse.Namespace) -> int:
    """Enter a lot's reference oven result and show each meter's bias against it."""
    cfg = load(args.config)
    lang: Lang = "en" if args.lang == "en" else "pt-BR"
    t = _TEXT[lang]
    try:
        code = validate_lot(args.lot)
        pct, by = parse_oven(args.pct, args.by if args.by else getpass.getuser())
    except (LotError, ValueError) as exc:
        print(f"erro/error: {exc}; nada foi gravado / nothing was written", file=sys.stderr)
        return EXIT_CONFIG
    records = _open(cfg)
    if records is None:
        return EXIT_FAILURE
    now = time.time_ns()
    try:
        if records.record(code) is None:
            print(f"erro/error: {t['unknown']} {code!r}", file=sys.stderr)
            return EXIT_FAILURE
        current = configured_records(cfg.devices)
        records.write_with(lambda conn: record_calibrations(conn, current, at_ns=now))
        records.write_with(lambda conn: set_oven(conn, code, pct, by, at_ns=now))
        record = records.record(code)
    finally:
        records.close()
    print(t["oven"].format(lot=code, pct=_num(pct, 2, lang), by=by))
    for b in meter_bias(record) if record is not None else []:
        bias = 0.0 if b.bias_pp is None else b.bias_pp
        print(
            t["bias"].format(
                dev=b.device,
                n=b.readings,
                mean=_num(b.mean_pct, 2, lang),
                bias=("+" if bias > 0 else "") + _num(bias, 2, lang),
            )
        )
    return EXIT_OK


def _lot_actions(sub: Subcommands) -> Subcommands:
    lot = sub.choices["lot"]
    for action in lot._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the lot command has no subcommands")


def add_parser(sub: Subcommands) -> None:
    """Add ``meters`` and ``lot oven`` (after ``cli.lots``)."""
    meters = add_config_command(
        sub, "meters", summary="meters and their calibration state", run=cmd_meters
    )
    meters.add_argument("--history", action="store_true", help="also every calibration record kept")
    meters.add_argument("--lang", choices=("pt-BR", "en"), default="pt-BR")
    oven = add_config_command(
        _lot_actions(sub),
        "oven",
        summary="enter a lot's reference oven moisture (ISO 6673)",
        run=cmd_lot_oven,
    )
    oven.add_argument("lot", help="lot code")
    oven.add_argument("pct", help="oven moisture, %% wet basis (11.4 or 11,4)")
    oven.add_argument("--by", help="who measured (default: your login name)")
    oven.add_argument("--lang", choices=("pt-BR", "en"), default="pt-BR")
