"""The ``coffee-telemetry`` command.

    coffee-telemetry run -c site.toml          the agent (systemd runs this)
    coffee-telemetry check-config site.toml    validate, print a summary, exit 0/2
    coffee-telemetry outbox -c site.toml       backlog per sink, drops, dead letters
    coffee-telemetry maintenance status -c site.toml
    coffee-telemetry maintenance done -c site.toml HULLER TASK [--note T] [--at TIME]
    coffee-telemetry lot set -c site.toml STATION LOT | lot clear | lot show
    coffee-telemetry alerts list -c site.toml | alerts ack -c site.toml RULE SUBJECT
    coffee-telemetry hash-password [--user N]  a dashboard user's password hash
    coffee-telemetry simulate                  virtual meters on ptys, prints their paths
    coffee-telemetry demo                      broker + simulators + agent, zero setup

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from coffee_telemetry.agent.config import Config, load_config
from coffee_telemetry.agent.errors import ConfigError, OutboxError

log = logging.getLogger("coffee_telemetry")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_USAGE = 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(path: str) -> Config:
    return load_config(Path(path))


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT."""
    cfg = _load(args.config)
    _setup_logging(args.log_level or cfg.agent.log_level)
    from coffee_telemetry.agent.app import run_agent

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop(stop)
        await run_agent(cfg, stop=stop)

    asyncio.run(main())
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and summarise it."""
    cfg = _load(args.file)
    print(f"{args.file}: OK")
    print(f"  site      {cfg.site.id}")
    mqtt = f"{cfg.mqtt.host}:{cfg.mqtt.port} prefix {cfg.mqtt.prefix!r}"
    print(f"  mqtt      {mqtt if cfg.mqtt.enabled else 'off'}")
    influx = f"{cfg.influx.api} {cfg.influx.url}"
    print(f"  influx    {influx if cfg.influx.enabled else 'off'}")
    print(f"  outbox    {cfg.outbox_path} (quota {cfg.outbox.max_mb:g} MB)")
    for dev in cfg.devices:
        state = "" if dev.enabled else " (disabled)"
        print(f"  device    {dev.id} {dev.driver} {dev.port}{state}")
    for bus in cfg.buses:
        print(f"  bus       {bus.id} modbus-rtu {bus.port}")
    for huller in cfg.hullers:
        tasks = ", ".join(f"{t.id} every {t.interval_h:g} h" for t in huller.tasks) or "no tasks"
        print(
            f"  huller    {huller.id} on {huller.bus} (bags: unit {huller.bag_counter},"
            f" hours: unit {huller.hour_meter or '-'}); {tasks}"
        )
    return EXIT_OK


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
    from coffee_telemetry.agent.outbox.store import read_dead_letters, read_stats

    if args.path:
        path, quota = Path(args.path), 0
    else:
        cfg = _load(args.config)
        path, quota = cfg.outbox_path, int(cfg.outbox.max_mb * 1024 * 1024)
    stats = read_stats(path, max_bytes=quota)
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
    if args.dead_letters:
        print("dead letters (newest first):")
        for dl in read_dead_letters(path, limit=args.dead_letters):
            at = datetime.fromtimestamp(dl.at_ns / 1e9, tz=UTC).isoformat(timespec="seconds")
            print(f"  #{dl.id} {at} sink={dl.sink} status={dl.status} {dl.reason}")
            print(f"      {dl.payload.decode(errors='replace')[:300]}")
    return EXIT_OK


def cmd_maintenance(args: argparse.Namespace) -> int:
    """Huller service tasks: status table, or record a service as done."""
    from coffee_telemetry.agent.hullers.maintenance import print_status, record_done

    cfg = _load(args.config)
    if args.action == "status":
        return print_status(cfg, sys.stdout, as_json=args.json)
    return record_done(
        cfg, args.huller, args.task, note=args.note, at=args.at, by=args.by, out=sys.stdout
    )


def cmd_lot(args: argparse.Namespace) -> int:
    """Set, clear or show the lot each station works on."""
    import getpass

    from coffee_telemetry.agent.lots.store import LotError, LotStore

    cfg = _load(args.config)
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


def cmd_alerts(args: argparse.Namespace) -> int:
    """List open alerts (from the agent's saved state) or acknowledge one over MQTT."""
    cfg = _load(args.config)
    if args.action == "list":
        return _alerts_list(cfg, as_json=args.json)
    return _alerts_ack(cfg, args.rule, args.subject, by=args.by, timeout_s=args.timeout)


def _alerts_list(cfg: Config, *, as_json: bool) -> int:
    from coffee_telemetry.agent.alerts.rules import Engine, alert_payload
    from coffee_telemetry.agent.alerts.service import build_rules

    path = cfg.agent.data_dir / "alerts.json"
    try:
        engine = Engine.restore(build_rules(cfg.alerts), path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        engine = Engine(build_rules(cfg.alerts))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    alerts = engine.alerts(time.time_ns())
    if as_json:
        print(json.dumps([alert_payload(a) for a in alerts], indent=2, ensure_ascii=False))
        return EXIT_OK
    if not alerts:
        print("no open alerts")
    for alert in alerts:
        acked = f" (acknowledged by {alert.acked_by})" if alert.acked_by else ""
        print(f"{alert.state.value:<13} {alert.rule}/{alert.subject}{acked}: {alert.message}")
    return EXIT_OK


def _alerts_ack(cfg: Config, rule: str, subject: str, *, by: str | None, timeout_s: float) -> int:
    """Publish cmd/ack/<rule>/<subject> with the site's MQTT settings and wait for the reply."""
    import getpass
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from coffee_telemetry.agent.commands import CommandRefused, check_level, escape_level

    m = cfg.mqtt
    base = f"{m.prefix}/{cfg.site.id}"
    try:
        levels = [
            check_level(escape_level(v), what=w) for v, w in ((rule, "rule"), (subject, "subject"))
        ]
    except CommandRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    topic = f"{base}/cmd/ack/{levels[0]}/{levels[1]}"
    replies: list[bytes] = []
    got = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"coffee-cli-{os.getpid()}")
    if m.username:
        password = cfg.mqtt_password.get_secret_value() if cfg.mqtt_password else None
        client.username_pw_set(m.username, password)
    if m.tls is not None:
        client.tls_set(
            ca_certs=str(m.tls.ca_file) if m.tls.ca_file else None,
            certfile=str(m.tls.cert_file) if m.tls.cert_file else None,
            keyfile=str(m.tls.key_file) if m.tls.key_file else None,
        )

    def on_message(c: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        replies.append(bytes(msg.payload))
        got.set()

    client.on_message = on_message
    try:
        client.connect(m.host, m.port, keepalive=30)
    except OSError as exc:
        print(f"error: cannot reach the MQTT broker {m.host}:{m.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    client.loop_start()
    try:
        client.subscribe(f"{topic}/reply", qos=1)
        client.subscribe(f"{base}/cmd/reply", qos=1)
        time.sleep(0.2)
        payload = json.dumps({"by": by or getpass.getuser()}).encode()
        client.publish(topic, payload, qos=1).wait_for_publish(timeout=timeout_s)
        if not got.wait(timeout_s):
            print("error: no reply from the agent (is it running?)", file=sys.stderr)
            return EXIT_FAILURE
    finally:
        client.loop_stop()
        client.disconnect()
    reply = json.loads(replies[0])
    if not reply.get("ok"):
        print(f"error: {reply.get('error')}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"acknowledged {rule}/{subject} as {reply.get('by')}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run virtual meters on ptys until Ctrl-C."""
    from coffee_telemetry.agent.cli.demo import demo_huller_units, weigh_samples_loop
    from coffee_telemetry.simulators.moisture import Faults, TesmaMeterSim, TicketMeterSim
    from coffee_telemetry.simulators.pty import PtyPort
    from coffee_telemetry.simulators.rtu import RtuBusSim
    from coffee_telemetry.simulators.scales import MtSicsBalanceSim, ToledoStreamSim

    _setup_logging(args.log_level or "info")
    link_dir = Path(args.dir)
    link_dir.mkdir(parents=True, exist_ok=True)
    faults = Faults(garbage_prob=args.garbage, copies=args.copies)

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop(stop)
        ports: list[PtyPort] = []
        async with asyncio.TaskGroup() as tg:
            tasks = []
            for i in range(args.ticket):
                port = PtyPort(link=link_dir / f"ticket-{i + 1}")
                port.open()
                ports.append(port)
                sim = TicketMeterSim(
                    port, interval_s=args.interval, lot=f"L-{i + 1:04d}", knobs=faults
                )
                tasks.append(tg.create_task(sim.run(), name=f"sim[ticket-{i + 1}]"))
                print(f"moisture.ticket  {port.path} -> {port.tty_path}", flush=True)
            for i in range(args.tesma):
                port = PtyPort(link=link_dir / f"tesma-{i + 1}")
                port.open()
                ports.append(port)
                tesma = TesmaMeterSim(port, interval_s=1.0)
                tasks.append(tg.create_task(tesma.run(), name=f"sim[tesma-{i + 1}]"))
                print(f"moisture.tesma   {port.path} -> {port.tty_path}", flush=True)
            if args.scales:
                port = PtyPort(link=link_dir / "toledo-1")
                port.open()
                ports.append(port)
                tasks.append(tg.create_task(ToledoStreamSim(port).run(), name="sim[toledo-1]"))
                print(f"scale.toledo_continuous {port.path} -> {port.tty_path}", flush=True)
                port = PtyPort(link=link_dir / "mtsics-1")
                port.open()
                ports.append(port)
                balance = MtSicsBalanceSim(port, capacity_kg=5.0)
                tasks.append(tg.create_task(balance.run(), name="sim[mtsics-1]"))
                tasks.append(tg.create_task(weigh_samples_loop(balance), name="sim[samples]"))
                print(f"scale.mtsics     {port.path} -> {port.tty_path}", flush=True)
            if args.huller:
                port = PtyPort(link=link_dir / "rs485-1")
                port.open()
                ports.append(port)
                bus = RtuBusSim(port, demo_huller_units())
                tasks.append(tg.create_task(bus.serve_loop(), name="sim[rs485-1]"))
                print(
                    f"modbus rtu bus   {port.path} -> {port.tty_path}"
                    " (unit 1 bag counter, unit 2 hour meter)",
                    flush=True,
                )
            print("Simulating; Ctrl-C to stop.", flush=True)
            await stop.wait()
            for task in tasks:
                task.cancel()
        for port in ports:
            port.close()

    asyncio.run(main())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Embedded broker + simulators + agent."""
    from coffee_telemetry.agent.cli.demo import DemoOptions, run_demo

    _setup_logging(args.log_level or "warning")
    opts = DemoOptions(
        port=args.port,
        broker=args.broker,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        influx_url=args.influx_url,
        interval_s=args.interval,
        duration_s=args.duration,
        api_port=args.api_port,
        web_password=os.environ.get("COFFEE_DEMO_PASSWORD") or None,
    )

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_demo(opts)

    asyncio.run(main())
    return EXIT_OK


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print the ``password_hash`` for a dashboard user (``[[api.users]]``)."""
    from coffee_telemetry.agent.web.auth import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return EXIT_USAGE
    if len(password) < 8:
        print("error: use at least 8 characters", file=sys.stderr)
        return EXIT_USAGE
    encoded = hash_password(password)
    name = args.user or "maria"
    print(f'[[api.users]]\nname = "{name}"\npassword_hash = "{encoded}"')
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="coffee-telemetry",
        description="Edge telemetry for coffee warehouses: serial devices to MQTT and InfluxDB.",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent")
    run.add_argument("-c", "--config", required=True, help="site TOML file")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a site TOML file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    outbox = sub.add_parser("outbox", help="show the outbox backlog per sink")
    where = outbox.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", help="site TOML file")
    where.add_argument("--path", help="outbox database file")
    outbox.add_argument("--json", action="store_true", help="machine-readable output")
    outbox.add_argument(
        "--dead-letters", type=int, default=0, metavar="N", help="also list N dead letters"
    )
    outbox.set_defaults(func=cmd_outbox)

    maintenance = sub.add_parser("maintenance", help="huller running hours and service tasks")
    actions = maintenance.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="hours since each service against its interval")
    status.add_argument("-c", "--config", required=True, help="site TOML file")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_maintenance)
    done = actions.add_parser("done", help="record a service task as done")
    done.add_argument("-c", "--config", required=True, help="site TOML file")
    done.add_argument("huller", help="huller id, as in the config")
    done.add_argument("task", help="task id, as in the config")
    done.add_argument("--note", help="what was done (up to 500 characters)")
    done.add_argument("--at", help="when, ISO 8601 (default: now; naive = site time zone)")
    done.add_argument("--by", help="who did it (default: your login name)")
    done.set_defaults(func=cmd_maintenance)

    lot = sub.add_parser("lot", help="the lot each station works on")
    lot_actions = lot.add_subparsers(dest="action", required=True)
    lot_set = lot_actions.add_parser("set", help="set a station's active lot")
    lot_set.add_argument("-c", "--config", required=True, help="site TOML file")
    lot_set.add_argument("station")
    lot_set.add_argument("lot", help="lot code: letters, digits and - _ . / (up to 32)")
    lot_set.add_argument("--by", help="who (default: your login name)")
    lot_set.set_defaults(func=cmd_lot)
    lot_clear = lot_actions.add_parser("clear", help="end a station's active lot")
    lot_clear.add_argument("-c", "--config", required=True, help="site TOML file")
    lot_clear.add_argument("station")
    lot_clear.add_argument("--by", help="who (default: your login name)")
    lot_clear.set_defaults(func=cmd_lot)
    lot_show = lot_actions.add_parser("show", help="active lot per station")
    lot_show.add_argument("-c", "--config", required=True, help="site TOML file")
    lot_show.set_defaults(func=cmd_lot)

    alerts = sub.add_parser("alerts", help="open alerts; acknowledge one")
    alert_actions = alerts.add_subparsers(dest="action", required=True)
    alert_list = alert_actions.add_parser("list", help="open alerts (pending, firing, acked)")
    alert_list.add_argument("-c", "--config", required=True, help="site TOML file")
    alert_list.add_argument("--json", action="store_true", help="machine-readable output")
    alert_list.set_defaults(func=cmd_alerts)
    alert_ack = alert_actions.add_parser("ack", help="acknowledge a firing alert (via MQTT)")
    alert_ack.add_argument("-c", "--config", required=True, help="site TOML file")
    alert_ack.add_argument("rule", help="e.g. wet_lot")
    alert_ack.add_argument("subject", help="e.g. the lot code")
    alert_ack.add_argument("--by", help="who (default: your login name)")
    alert_ack.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    alert_ack.set_defaults(func=cmd_alerts)

    simulate = sub.add_parser("simulate", help="virtual meters, scales and a huller on ptys")
    simulate.add_argument("--dir", default="/tmp/coffee-sim", help="where the stable links go")
    simulate.add_argument("--ticket", type=int, default=2, help="ticket-printing meters")
    simulate.add_argument("--tesma", type=int, default=1, help="continuous meters")
    simulate.add_argument("--interval", type=float, default=5.0, help="seconds between tickets")
    simulate.add_argument(
        "--no-scales", dest="scales", action="store_false", help="no Toledo/MT-SICS scales"
    )
    simulate.add_argument(
        "--no-huller", dest="huller", action="store_false", help="no RS-485 huller bus"
    )
    simulate.add_argument("--garbage", type=float, default=0.0, help="garbage probability")
    simulate.add_argument("--copies", type=int, default=1, help="copies of each ticket")
    simulate.set_defaults(func=cmd_simulate)

    hashpw = sub.add_parser(
        "hash-password", help="make a dashboard user's password hash for [[api.users]]"
    )
    hashpw.add_argument("--user", help="the user name to print in the snippet")
    hashpw.add_argument("--stdin", action="store_true", help="read the password from stdin")
    hashpw.set_defaults(func=cmd_hash_password)

    demo = sub.add_parser("demo", help="embedded broker, simulated meters and the agent")
    demo.add_argument("--port", type=int, default=1883, help="embedded broker port")
    demo.add_argument("--broker", help="use this HOST:PORT broker instead of the embedded one")
    demo.add_argument("--data-dir", help="keep the outbox here (default: a temp dir)")
    demo.add_argument("--influx-url", help="also write to this InfluxDB (v1 API)")
    demo.add_argument("--interval", type=float, default=5.0, help="seconds between tickets")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--api-port", type=int, default=8780, help="dashboard and API port")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``coffee-telemetry`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OutboxError as exc:
        print(f"outbox error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
