"""The ``coffee-telemetry`` command.

    coffee-telemetry run -c site.toml          the agent (systemd runs this)
    coffee-telemetry run --once -c site.toml   one reading per device to stdout, nothing sent
    coffee-telemetry init DIR [--site ID]      a new site's files, ready to edit
    coffee-telemetry check-config site.toml    validate, print a summary, exit 0/2
    coffee-telemetry reload -c site.toml       validate, then the running agent applies it
    coffee-telemetry outbox -c site.toml       backlog per sink, drops, dead letters
    coffee-telemetry backup -c site.toml -o FILE | restore FILE -c site.toml   state
    coffee-telemetry maintenance status -c site.toml
    coffee-telemetry maintenance done -c site.toml HULLER TASK [--note T] [--at TIME]
    coffee-telemetry lot set -c site.toml STATION LOT | lot clear | lot show
    coffee-telemetry alerts list -c site.toml | alerts ack -c site.toml RULE SUBJECT
    coffee-telemetry hash-password [--user N]  a dashboard user's password hash
    coffee-telemetry simulate                  virtual meters on ptys, prints their paths
    coffee-telemetry capture PORT | propose FILE | replay FILE --pty PATH   a new meter
    coffee-telemetry demo                      broker + simulators + agent, zero setup
    coffee-telemetry completion bash|zsh       shell completion, from this parser
    coffee-telemetry --version

Exit codes (also in ``--help``): 0 success, 1 runtime failure, 2 invalid
configuration or usage. Global options (``--log-level``) are accepted before or
after the subcommand.

This module builds the parser and runs the agent, the simulators and the demo; the
verbs that read or write the site's stores are modules of their own (``outbox``,
``maintenance``, ``lots``, ``alerts``), each adding its subcommand to the parser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy as _copy
import getpass
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from coffee_telemetry.agent.cli import reload
from coffee_telemetry.agent.cli._common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_config_command,
    install_stop,
    load,
    setup_logging,
)
from coffee_telemetry.agent.config import TlsConfig, permission_warnings, public_url
from coffee_telemetry.agent.errors import ConfigError, OutboxError

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

log = logging.getLogger("coffee_telemetry")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT (with ``--once``: read each device once)."""
    if args.once:
        return cmd_run_once(args)
    cfg = load(args.config)
    setup_logging(args.log_level or cfg.agent.log_level, cfg.agent.log_format)
    from coffee_telemetry.agent.app import run_agent

    async def main() -> None:
        stop = asyncio.Event()
        install_stop(stop)
        requests = asyncio.Event()  # SIGHUP: read the site file again, apply what changed
        reload.install_reload(requests)
        with reload.pid_file(cfg.agent.data_dir):
            await run_agent(cfg, stop=stop, reload=requests, config_path=Path(args.config))

    try:
        loop_factory = event_loop_factory(cfg.agent.event_loop)
    except ImportError as exc:
        print(f"error: agent.event_loop: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    return EXIT_OK


def cmd_run_once(args: argparse.Namespace) -> int:
    """Read each configured device until one reading or the timeout; print, send nothing."""
    from coffee_telemetry.agent.cli.once import print_readings, read_once

    cfg = load(args.config)
    setup_logging(args.log_level or "warning")
    enabled = [dev for dev in cfg.devices if dev.enabled]
    if args.device:
        known = {dev.id: dev for dev in cfg.devices}
        unknown = [name for name in args.device if name not in known]
        if unknown:
            print(f"error: no device {', '.join(unknown)} in {args.config}", file=sys.stderr)
            return EXIT_USAGE
        enabled = [known[name] for name in dict.fromkeys(args.device)]
    if not enabled:
        print(f"error: {args.config} has no enabled devices", file=sys.stderr)
        return EXIT_FAILURE
    results = asyncio.run(read_once(cfg, enabled, timeout_s=args.timeout))
    silent = []
    for name, readings in results.items():
        print_readings(readings, fmt=args.format)
        if not readings:
            silent.append(name)
    for name in silent:
        print(f"error: {name}: no reading within {args.timeout:g} s", file=sys.stderr)
    return EXIT_FAILURE if silent else EXIT_OK


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``[agent] event_loop`` asks for (``None``: asyncio's own).

    Raises:
        ImportError: ``uvloop`` was asked for and is not installed.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ImportError(
                "uvloop is not installed (pip install 'coffee-telemetry[fast]')"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _tls_summary(tls: TlsConfig | None) -> str:
    if tls is None:
        return ""
    return " TLS (certificates NOT checked)" if tls.insecure else " TLS"


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and summarise it; warn about who may read or change it.

    Run as the unit's ``ExecStartPre``, so what it prints reaches the journal: it never
    prints a secret (URL user info is masked, tokens and hashes are not shown).
    """
    cfg = load(args.file)
    print(f"{args.file}: OK")
    print(f"  site      {cfg.site.id}")
    mqtt = f"{cfg.mqtt.host}:{cfg.mqtt.port} prefix {cfg.mqtt.prefix!r}"
    print(f"  mqtt      {mqtt + _tls_summary(cfg.mqtt.tls) if cfg.mqtt.enabled else 'off'}")
    influx = f"{cfg.influx.api} {public_url(cfg.influx.url)}{_tls_summary(cfg.influx.tls)}"
    print(f"  influx    {influx if cfg.influx.enabled else 'off'}")
    print(f"  outbox    {cfg.outbox_path} (quota {cfg.outbox.max_mb:g} MB)")
    api = cfg.api
    if api.enabled:
        behind = f", public origin {api.public_origin}" if api.public_origin else ""
        print(
            f"  web       {api.bind}:{api.port}{behind}; {len(api.users)} users;"
            f" tokens: {', '.join(sorted(cfg.api_tokens)) or 'none'}"
        )
    for hook in cfg.alerts.webhooks:
        print(f"  webhook   {hook.name} {public_url(hook.url)}")
    for dev in cfg.devices:
        state = "" if dev.enabled else " (disabled)"
        profile = f" (profile {dev.profile})" if dev.profile else ""
        print(f"  device    {dev.id} {dev.driver} {dev.port}{profile}{state}")
        if dev.meter is not None:
            from coffee_telemetry.agent.cli.meters import meter_line

            print(f"            {meter_line(dev.id, dev.meter)}")
    for bus in cfg.buses:
        print(f"  bus       {bus.id} modbus-rtu {bus.port}")
    for huller in cfg.hullers:
        tasks = ", ".join(f"{t.id} every {t.interval_h:g} h" for t in huller.tasks) or "no tasks"
        print(
            f"  huller    {huller.id} on {huller.bus} (bags: unit {huller.bag_counter},"
            f" hours: unit {huller.hour_meter or '-'}); {tasks}"
        )
    for warning in permission_warnings(Path(args.file), cfg):
        print(f"warning: {warning}", file=sys.stderr)
    for key, tls in (("mqtt", cfg.mqtt.tls), ("influx", cfg.influx.tls)):
        if tls is not None and tls.insecure:
            print(
                f"warning: [{key}.tls] insecure = true: the server's certificate is not"
                " checked; anyone on the network path can read and change this traffic",
                file=sys.stderr,
            )
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run virtual meters on ptys until Ctrl-C."""
    from coffee_telemetry.agent.cli.demo import demo_huller_units, weigh_samples_loop
    from coffee_telemetry.simulators.moisture import Faults, TesmaMeterSim, TicketMeterSim
    from coffee_telemetry.simulators.pty import PtyPort
    from coffee_telemetry.simulators.rtu import RtuBusSim
    from coffee_telemetry.simulators.scales import MtSicsBalanceSim, ToledoStreamSim

    setup_logging(args.log_level or "info")
    link_dir = Path(args.dir)
    link_dir.mkdir(parents=True, exist_ok=True)
    faults = Faults(garbage_prob=args.garbage, copies=args.copies)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop(stop)
        ports: list[PtyPort] = []

        def opened(name: str) -> PtyPort:
            port = PtyPort(link=link_dir / name)
            port.open()
            ports.append(port)
            return port

        async with asyncio.TaskGroup() as tg:
            tasks = []
            for i in range(args.ticket):
                port = opened(f"ticket-{i + 1}")
                sim = TicketMeterSim(
                    port, interval_s=args.interval, lot=f"L-{i + 1:04d}", knobs=faults
                )
                tasks.append(tg.create_task(sim.run(), name=f"sim[ticket-{i + 1}]"))
                print(f"moisture.ticket  {port.path} -> {port.tty_path}", flush=True)
            for i in range(args.tesma):
                port = opened(f"tesma-{i + 1}")
                tesma = TesmaMeterSim(port, interval_s=1.0)
                tasks.append(tg.create_task(tesma.run(), name=f"sim[tesma-{i + 1}]"))
                print(f"moisture.tesma   {port.path} -> {port.tty_path}", flush=True)
            if args.scales:
                port = opened("toledo-1")
                tasks.append(tg.create_task(ToledoStreamSim(port).run(), name="sim[toledo-1]"))
                print(f"scale.toledo_continuous {port.path} -> {port.tty_path}", flush=True)
                port = opened("mtsics-1")
                balance = MtSicsBalanceSim(port, capacity_kg=5.0)
                tasks.append(tg.create_task(balance.run(), name="sim[mtsics-1]"))
                tasks.append(tg.create_task(weigh_samples_loop(balance), name="sim[samples]"))
                print(f"scale.mtsics     {port.path} -> {port.tty_path}", flush=True)
            if args.huller:
                port = opened("rs485-1")
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


def _port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def demo_refusal(args: argparse.Namespace) -> str | None:
    """Why ``demo`` cannot start as asked (one line), or ``None``."""
    if args.broker is None:
        try:
            import amqtt.broker  # noqa: F401
        except ImportError:
            return (
                "the demo's embedded MQTT broker is not installed:"
                " pip install 'coffee-telemetry[demo]' (or use --broker HOST:PORT)"
            )
        if _port_in_use(args.port):
            return f"port {args.port} is in use, try --port"
    if _port_in_use(args.api_port):
        return f"port {args.api_port} is in use, try --api-port"
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    """Embedded broker + simulators + agent."""
    from coffee_telemetry.agent.cli.demo import DemoOptions, run_demo

    refusal = demo_refusal(args)
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level or "warning")
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
    """Print the ``password_hash`` for a dashboard user (``[[api.users]]``): Argon2id."""
    from coffee_telemetry.agent.passwords import hash_password

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


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the shell completion script for ``args.shell``, generated from the parser."""
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


def version() -> str:
    """The installed distribution's version (the package's own when not installed)."""
    try:
        return metadata.version("coffee-telemetry")
    except metadata.PackageNotFoundError:
        return "unknown"


#: The ``--help`` epilog: what the exit status means.
EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  runtime failure (a device gave no reading, the broker is unreachable, ...)
  2  invalid configuration or usage (the systemd unit does not restart on it)

global options such as --log-level may come before or after the subcommand;
shell completion: coffee-telemetry completion bash|zsh"""


def _share_global_options(parser: argparse.ArgumentParser) -> None:
    """Accept the top-level options after any subcommand too.

    Each subparser gets a copy of every top-level option (help and version aside)
    whose default is ``SUPPRESS``: given after the subcommand, it sets the value;
    not given there, it leaves what the top level parsed alone.
    """
    shared = [
        action
        for action in parser._actions
        if action.option_strings
        and not isinstance(action, argparse._HelpAction | argparse._VersionAction)
    ]

    def visit(current: argparse.ArgumentParser) -> None:
        for action in current._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for child in dict.fromkeys(action.choices.values()):
                for option in shared:
                    if any(s in child._option_string_actions for s in option.option_strings):
                        continue
                    copy = _copy.copy(option)
                    copy.default = argparse.SUPPRESS
                    child._add_action(copy)
                visit(child)

    visit(parser)


def _complete_files(parser: argparse.ArgumentParser) -> None:
    """Let shells complete file names for the options and arguments that take files."""
    import shtab

    def visit(current: argparse.ArgumentParser) -> None:
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in dict.fromkeys(action.choices.values()):
                    visit(child)
            elif action.dest in ("config", "file"):
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            elif action.dest in ("dir", "data_dir"):
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]

    visit(parser)


def build_parser(*, only_run: bool = False) -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs).

    ``only_run``: just ``run`` and the global options. The other verbs' modules
    bring the store, report and geometry libraries (PDF, PROJ, GEOS, NumPy) the
    long-running agent never uses; ``main`` leaves them out of its memory.
    """
    parser = argparse.ArgumentParser(
        prog="coffee-telemetry",
        description="Edge telemetry for coffee warehouses: serial devices to MQTT and InfluxDB.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    run = add_config_command(sub, "run", summary="run the agent", run=cmd_run)
    run.add_argument(
        "--once",
        action="store_true",
        help="read each device until one reading or --timeout, print it, send and store nothing",
    )
    run.add_argument(
        "--device", action="append", metavar="ID", help="with --once: only this device (repeat)"
    )
    run.add_argument(
        "--timeout", type=float, default=10.0, help="with --once: seconds per device (10)"
    )
    run.add_argument(
        "--format",
        choices=["both", "line", "json"],
        default="both",
        help="with --once: line protocol, JSON or both (a line each)",
    )
    if only_run:
        _share_global_options(parser)
        return parser
    from coffee_telemetry.agent.cli import (
        alerts,
        backup,
        central,
        doctor,
        evidence,
        init,
        lotfix,
        lots,
        maintenance,
        meters,
        onboard,
        outbox,
    )

    init.add_parser(sub)

    check = sub.add_parser("check-config", help="validate a site TOML file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    outbox.add_parser(sub)
    reload.add_parser(sub)
    backup.add_parser(sub)
    maintenance.add_parser(sub)
    lots.add_parser(sub)
    evidence.add_parser(sub)  # after lots: adds lot members|pack|verify-pack
    meters.add_parser(sub)  # after lots: adds lot oven
    lotfix.add_parser(sub)  # after lots: adds lot move|blend
    alerts.add_parser(sub)
    onboard.add_parser(sub)
    central.add_parser(sub)
    doctor.add_parser(sub)

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

    completion = sub.add_parser(
        "completion", help="print shell completion (bash, zsh), generated from this parser"
    )
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(func=cmd_completion)
    _share_global_options(parser)
    with contextlib.suppress(ImportError):
        _complete_files(parser)
    return parser


def _runs_agent(words: Sequence[str]) -> bool:
    """Whether the command line asks for ``run`` (and not for help on something else)."""
    verbs = [w for w in words if not w.startswith("-")]
    options_with_value = {"--log-level"}
    for i, word in enumerate(words):
        if word in options_with_value and i + 1 < len(words) and words[i + 1] in verbs:
            verbs.remove(words[i + 1])
    return bool(verbs) and verbs[0] == "run"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``coffee-telemetry`` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(only_run=_runs_agent(words)).parse_args(words)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ExceptionGroup as group:
        # A store refused at start (a newer version wrote it) inside the agent's task groups.
        refused = group.subgroup(lambda exc: isinstance(exc, ConfigError))
        while isinstance(refused, ExceptionGroup):
            refused = refused.exceptions[0]
        if refused is None:
            raise
        print(f"configuration error:\n{refused}", file=sys.stderr)
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
