"""``coffee-telemetry doctor -c site.toml``: check a site on the spot, one line per check.

Each line says OK, AVISO/WARN or FALHA/FAIL, what was checked, what was found and how
to fix it; in Portuguese, or English with ``--lang en``; ``--json`` prints the same as
one JSON document for scripts. Exit codes: 0 every check passed (warnings allowed),
1 a check failed, 2 the config or the options are wrong. Every check has a timeout and
the whole run a deadline (``--deadline``), so it answers in seconds whatever hangs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from coffee_telemetry.agent.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Subcommands,
    add_config_command,
    load,
)
from coffee_telemetry.agent.doctor.result import Result
from coffee_telemetry.agent.doctor.run import Options, plan, run_checks
from coffee_telemetry.agent.doctor.serialports import ServiceUser, service_user
from coffee_telemetry.agent.doctor.texts import render, say
from coffee_telemetry.agent.onboard.texts import LANGS, Lang

__all__ = ["add_parser", "cmd_doctor", "to_json"]


def to_json(results: list[Result], lang: Lang) -> dict[str, object]:
    """The report as a JSON-ready document (messages in ``lang``)."""
    return {
        "ok": not any(r.failed for r in results),
        "checks": [
            {
                "check": r.check,
                "subject": r.subject,
                "status": r.status.value,
                "message": say(lang, r.message, r.values),
                "fix": None if r.fix is None else say(lang, r.fix, r.values),
                "values": {
                    k: v if isinstance(v, int | float) else str(v) for k, v in r.values.items()
                },
            }
            for r in results
        ],
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every check the site's config calls for and print the report."""
    lang: Lang = args.lang
    cfg = load(args.config)
    try:
        user: ServiceUser = service_user(args.user)
    except KeyError:
        print(f"error: no user {args.user!r}", file=sys.stderr)
        return EXIT_USAGE
    opts = Options(
        user=user,
        listen_s=args.listen,
        guess_s=args.guess,
        timeout_s=args.timeout,
        unit=args.unit,
        ports=not args.no_ports,
    )
    results = run_checks(plan(cfg, opts), deadline_s=args.deadline)
    if args.json:
        print(json.dumps(to_json(results, lang), ensure_ascii=False, indent=2))
    else:
        for result in results:
            print(render(result, lang), flush=True)
    return EXIT_FAILURE if any(r.failed for r in results) else EXIT_OK


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"{text}: expected seconds in (0, 600]")
    return value


def add_parser(sub: Subcommands) -> None:
    """Add ``doctor`` to the command's subparsers."""
    doctor = add_config_command(
        sub,
        "doctor",
        summary="check ports, broker, InfluxDB, clock, disk, outbox, service",
        run=cmd_doctor,
    )
    env_lang = os.environ.get("COFFEE_LANG")
    doctor.add_argument(
        "--lang",
        choices=LANGS,
        default=env_lang if env_lang in LANGS else "pt-BR",
        help="language of the report (pt-BR or en; default pt-BR, or $COFFEE_LANG)",
    )
    doctor.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    doctor.add_argument(
        "--user", help="check port access for this user (default: coffee if it exists, else you)"
    )
    doctor.add_argument(
        "--listen", type=_positive, default=3.0, help="seconds to listen per port (3)"
    )
    doctor.add_argument(
        "--guess", type=_positive, default=8.0, help="seconds to guess unreadable settings (8)"
    )
    doctor.add_argument("--timeout", type=_positive, default=5.0, help="network timeout (5)")
    doctor.add_argument(
        "--deadline", type=_positive, default=30.0, help="answer within this many seconds (30)"
    )
    doctor.add_argument("--unit", default="coffee-telemetry", help="the systemd unit's name")
    doctor.add_argument("--no-ports", action="store_true", help="skip the serial port checks")
