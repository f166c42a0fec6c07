r"""``coffee-telemetry recorder``: the central service from the sites' stream to InfluxDB.

    coffee-telemetry recorder --nats nats://n1:4222,nats://n2:4222,nats://n3:4222 \
        --nats-user recorder --nats-password-file $CREDENTIALS_DIRECTORY/nats \
        --influx-url http://influx:8086 --influx-database coffee

Run as many as the load needs, on any hosts: they share one durable consumer
(``agent.central``). Secrets come from files only; a path may start with
``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from coffee_telemetry.agent.cli._common import (
    EXIT_CONFIG,
    EXIT_OK,
    Subcommands,
    install_stop,
    setup_logging,
)

__all__ = ["add_parser", "cmd_recorder"]


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(os.path.expandvars(text))


def _secret(text: str | None) -> str | None:
    path = _path(text)
    return None if path is None else path.read_text(encoding="utf-8").strip()


def cmd_recorder(args: argparse.Namespace) -> int:
    """Run one recorder until SIGTERM/SIGINT."""
    setup_logging(args.log_level or "info")
    try:
        from coffee_telemetry.agent.central.service import RecorderOptions, run_recorder
        from coffee_telemetry.agent.central.stream import StreamSettings
        from coffee_telemetry.agent.config import TlsConfig
        from coffee_telemetry.agent.tls import client_context
    except ImportError as exc:
        print(f"error: the recorder needs coffee-telemetry[central]: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        nats_tls = None
        if args.nats_ca_file or args.nats_cert_file:
            nats_tls = client_context(
                TlsConfig(
                    ca_file=_path(args.nats_ca_file),
                    cert_file=_path(args.nats_cert_file),
                    key_file=_path(args.nats_key_file),
                )
            )
        options = RecorderOptions(
            servers=[s.strip() for s in args.nats.split(",") if s.strip()],
            nats_user=args.nats_user,
            nats_password=_secret(args.nats_password_file),
            nats_creds=_path(args.nats_creds),
            nats_tls=nats_tls,
            influx_url=args.influx_url,
            influx_database=args.influx_database,
            influx_username=args.influx_user,
            influx_password=_secret(args.influx_password_file),
            influx_token=_secret(args.influx_token_file),
            create_database=args.create_database,
            batch_size=args.batch,
            stats_every_s=args.stats_every,
            streams=StreamSettings(
                prefix=args.prefix,
                replicas=args.replicas,
                ack_wait_s=args.ack_wait,
                max_bytes=int(args.stream_max_mb * 1024 * 1024),
            ),
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    async def main() -> None:
        stop = asyncio.Event()
        install_stop(stop)
        await run_recorder(options, stop=stop)

    asyncio.run(main())
    return EXIT_OK


def add_parser(sub: Subcommands) -> None:
    """Add ``recorder`` to the command's subparsers."""
    p = sub.add_parser("recorder", help="central: the sites' stream into InfluxDB")
    p.add_argument("--nats", required=True, help="NATS server URLs, comma-separated")
    p.add_argument("--nats-user", help="NATS user name")
    p.add_argument("--nats-password-file", help="file holding the NATS password")
    p.add_argument("--nats-creds", help="NATS .creds file (JWT accounts)")
    p.add_argument("--nats-ca-file", help="CA of the cluster's TLS certificates")
    p.add_argument("--nats-cert-file", help="client certificate (mutual TLS)")
    p.add_argument("--nats-key-file", help="its private key")
    p.add_argument("--influx-url", required=True, help="InfluxDB base URL (v1 HTTP API)")
    p.add_argument("--influx-database", default="coffee", help="database (default: coffee)")
    p.add_argument("--influx-user", help="InfluxDB user name")
    p.add_argument("--influx-password-file", help="file holding the InfluxDB password")
    p.add_argument("--influx-token-file", help="file holding an InfluxDB token")
    p.add_argument("--create-database", action="store_true", help="CREATE DATABASE at start")
    p.add_argument("--prefix", default="coffee", help="subject prefix (default: coffee)")
    p.add_argument("--replicas", type=int, default=3, help="stream replicas (default: 3)")
    p.add_argument(
        "--stream-max-mb",
        type=float,
        default=8192.0,
        help="readings stream limit per node, MB (default: 8192; full = sites keep their data)",
    )
    p.add_argument("--ack-wait", type=float, default=30.0, help="seconds before redelivery")
    p.add_argument("--batch", type=int, default=1000, help="messages per write (default: 1000)")
    p.add_argument("--stats-every", type=float, default=60.0, help="seconds between stats lines")
    p.set_defaults(func=cmd_recorder)
