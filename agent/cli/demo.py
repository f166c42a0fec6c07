"""``coffee-telemetry demo``: the whole pipeline on a machine with nothing installed.

It starts, on 127.0.0.1 only:

* an embedded MQTT broker (amqtt, settings as in ``broker_config/amqtt.yaml``)
  unless ``--broker HOST:PORT`` points at an existing one;
* simulated equipment on pseudo-terminals, each behind a stable symlink like a
  udev name: two ticket-printing moisture meters and a continuous one, a truck
  scale (Toledo continuous), a lab balance (MT-SICS), and an RS-485 bus with a
  huller's bag counter and hour meter (Autonics CT, Modbus RTU);
* the agent, with its outbox in a data directory, publishing to the broker
  (and to InfluxDB only when ``--influx-url`` is given);

then prints what it started, how to watch it with any MQTT client, and every
reading as it is accepted, until Ctrl-C (or ``--duration``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from coffee_telemetry.agent.app import run_agent
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.lots.records import LotRecords, parse_details
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.agent.readings import Reading
from coffee_telemetry.agent.web.auth import hash_password
from coffee_telemetry.drivers.counter_autonics_ct import Mode
from coffee_telemetry.simulators.drying import DryingCurve
from coffee_telemetry.simulators.moisture import TesmaMeterSim, TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from coffee_telemetry.simulators.rtu import CounterUnitSim, RtuBusSim
from coffee_telemetry.simulators.scales import MtSicsBalanceSim, ToledoStreamSim

log = logging.getLogger(__name__)

#: The embedded broker's settings (the same as broker_config/amqtt.yaml, which
#: a test keeps in step). Plugins are listed explicitly so amqtt does not load
#: them from entry points (deprecated, and it warns).
AMQTT_DEFAULTS: dict[str, object] = {
    "listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:1883"}},
    "plugins": {
        "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
    },
}


def amqtt_config(port: int) -> dict[str, object]:
    """The embedded broker's settings with its listener on ``port``."""
    config = dict(AMQTT_DEFAULTS)
    config["listeners"] = {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}
    return config


@asynccontextmanager
async def open_embedded_broker(port: int) -> AsyncIterator[None]:
    """Run an amqtt broker on 127.0.0.1:``port`` for the duration."""
    from amqtt.broker import Broker

    broker = Broker(amqtt_config(port))
    await broker.start()
    try:
        yield
    finally:
        await broker.shutdown()


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``coffee-telemetry demo`` was asked for."""

    port: int = 1883
    broker: str | None = None
    data_dir: Path | None = None
    influx_url: str | None = None
    influx_database: str = "coffee"
    interval_s: float = 5.0
    duration_s: float | None = None
    site: str = "demo"
    prefix: str = "coffee"
    api_port: int = 8780
    #: Password of the dashboard's ``demo`` user (default: a random one, printed).
    web_password: str | None = None


#: Simulated equipment: (port name, driver) for devices; the RS-485 bus apart.
STREAM_DEVICES = ("umid-recepcao", "umid-armazem", "umid-secador", "balanca-recepcao")
POLLED_PORTS = ("balanca-lab", "rs485-beneficio")


def demo_config(
    opts: DemoOptions, links: dict[str, str], data_dir: Path, *, password_hash: str | None = None
) -> Config:
    """The agent configuration the demo runs with (``password_hash``: the ``demo`` user's)."""
    host, port = "127.0.0.1", opts.port
    if opts.broker:
        host, _, port_text = opts.broker.rpartition(":")
        port = int(port_text)
    doc: dict[str, object] = {
        "site": {"id": opts.site, "name": "Demonstração"},
        # The demo shows readings at once: it takes the machine's clock as it is.
        "agent": {
            "data_dir": str(data_dir),
            "status_interval_s": 30.0,
            "time_sources": ["system", "ntp", "user"],
        },
        "mqtt": {"host": host or "127.0.0.1", "port": port, "prefix": opts.prefix},
        "api": {
            "port": opts.api_port,
            "users": [{"name": "demo", "password_hash": password_hash}] if password_hash else [],
        },
        "influx": {
            "enabled": opts.influx_url is not None,
            "url": opts.influx_url or "http://127.0.0.1:8086",
            "database": opts.influx_database,
            "create_database": True,
        },
        "devices": [
            {
                "id": "umid-recepcao",
                "driver": "moisture.ticket",
                "port": links["umid-recepcao"],
                "station": "recepcao",
                "product": "cafe-verde",
            },
            {
                "id": "umid-armazem",
                "driver": "moisture.ticket",
                "port": links["umid-armazem"],
                "station": "armazem",
                "product": "cafe-verde",
            },
            {
                "id": "umid-secador",
                "driver": "moisture.tesma",
                "port": links["umid-secador"],
                "station": "secador",
            },
            {
                "id": "balanca-recepcao",
                "driver": "scale.toledo_continuous",
                "port": links["balanca-recepcao"],
                "station": "recepcao",
            },
            {
                "id": "balanca-lab",
                "driver": "scale.mtsics",
                "port": links["balanca-lab"],
                "station": "laboratorio",
                "serial": {"xonxoff": False},
            },
        ],
        "buses": [{"id": "rs485-beneficio", "port": links["rs485-beneficio"]}],
        "hullers": [
            {
                "id": "descascador-1",
                "name": "Descascador 1",
                "bus": "rs485-beneficio",
                "bag_counter": 1,
                "hour_meter": 2,
                "hour_meter_unit": "s",
                "station": "beneficio",
                "tasks": [
                    {"id": "facas", "name": "Troca das facas", "interval_h": 300},
                    {
                        "id": "lubrificacao",
                        "name": "Lubrificação dos rolamentos",
                        "interval_h": 100,
                    },
                ],
            }
        ],
    }
    (data_dir / "site.toml").write_text(to_toml(doc), encoding="utf-8")
    return parse_config(doc, source="demo")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple) and not any(isinstance(v, Mapping) for v in value):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(doc: Mapping[str, object], prefix: str = "") -> str:
    """Render the demo's config (scalars, arrays, tables, arrays of tables) as TOML."""
    lines: list[str] = []
    nested: list[str] = []
    for key, value in doc.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            nested.append(f"\n[{name}]\n" + to_toml(value, name))
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            for item in value:
                nested.append(f"\n[[{name}]]\n" + to_toml(item, name))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + ("\n" if lines else "") + "".join(nested)


def demo_huller_units() -> list[CounterUnitSim]:
    """The huller's two Autonics CT units: bags (runs 2 min, stops 30 s) and run seconds."""
    return [
        CounterUnitSim(1, mode=Mode.COUNTER, pv=1200, rate_per_s=0.1, run_cycle_s=(120.0, 30.0)),
        # 95 h on the hour meter: the 100 h lubrication is due soon.
        CounterUnitSim(2, mode=Mode.TIMER, pv=95 * 3600, run_cycle_s=(120.0, 30.0)),
    ]


async def weigh_samples_loop(balance: MtSicsBalanceSim, *, seed: int | None = None) -> None:
    """Samples of green coffee put on the lab balance, one every few seconds."""
    rng = random.Random(seed)
    while True:
        balance.load(round(rng.uniform(0.25, 1.2), 2))
        await asyncio.sleep(1.0)
        balance.settle()
        await asyncio.sleep(rng.uniform(3.0, 6.0))
        balance.unload()
        await asyncio.sleep(0.5)
        balance.settle()
        await asyncio.sleep(rng.uniform(2.0, 4.0))


#: The lots the demo starts with: the station that works on each (``None``: the meter
#: prints it on its tickets) and its details, as ``coffee-telemetry lot info`` sets them.
DEMO_LOTS: dict[str, tuple[str | None, dict[str, object]]] = {
    "L-0001": (
        "recepcao",
        {"producer": "Sítio Boa Vista", "bags": 42, "product_type": "cereja"},
    ),
    "L-0002": (
        None,
        {"producer": "Sítio Santa Rita", "bags": 18, "note": "chegou com chuva"},
    ),
    "L-0003": (
        "secador",
        {
            "producer": "Fazenda Santa Luzia",
            "bags": 120,
            "product_type": "pergaminho",
            "note": "secador 2, secagem acelerada para a demonstração",
        },
    ),
}


def seed_lots(cfg: Config) -> None:
    """Give the demo's stations their lots and the lots their details, before the agent starts."""
    stations = LotStore.open(cfg.agent.data_dir / "lots.sqlite3")
    records = LotRecords.open(cfg.lot_records_path)
    try:
        for code, (station, details) in DEMO_LOTS.items():
            now = time.time_ns()
            if station is not None:
                stations.set(station, code, by="demo", source="cli", at_ns=now)
            records.set_details(code, parse_details(details), by="demo", source="cli", at_ns=now)
    finally:
        records.close()
        stations.close()


def _wet() -> Iterator[float]:
    """A lot that arrived wet: readings at and above the 12.5 % wet-lot threshold."""
    return itertools.cycle([12.9, 13.4, 12.6, 13.8, 13.1])


def _printer(out: TextIO) -> Callable[[Reading], None]:
    def show(reading: Reading) -> None:
        fields = " ".join(f"{k}={v}" for k, v in sorted(reading.fields.items()))
        lot = reading.tags.get("lot", "-")
        out.write(
            f"{reading.device:<15} seq={reading.seq:<5} lot={lot:<10}"
            f" {reading.measurement}: {fields}\n"
        )
        out.flush()

    return show


async def run_demo(opts: DemoOptions, *, out: TextIO = sys.stdout) -> None:
    """Run the demo until cancelled or ``opts.duration_s`` has passed."""
    with contextlib.ExitStack() as cleanup:
        if opts.data_dir is None:
            data_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="coffee-")))
        else:
            data_dir = opts.data_dir
        dev_dir = data_dir / "dev"
        dev_dir.mkdir(parents=True, exist_ok=True)
        ports = {name: PtyPort(link=dev_dir / name) for name in STREAM_DEVICES + POLLED_PORTS}
        for port in ports.values():
            port.open()
            cleanup.callback(port.close)
        links = {name: port.path for name, port in ports.items()}
        password = opts.web_password or secrets.token_urlsafe(8)
        cfg = demo_config(opts, links, data_dir, password_hash=hash_password(password))
        seed_lots(cfg)
        # Meters and the truck scale talk on their own once switched on.
        talkers: dict[str, Callable[[], Coroutine[object, object, None]]] = {
            "umid-recepcao": TicketMeterSim(
                ports["umid-recepcao"], interval_s=opts.interval_s, product="CAFE", lot="L-0001"
            ).run,
            "umid-armazem": TicketMeterSim(
                ports["umid-armazem"],
                interval_s=opts.interval_s * 1.5,
                product="CAFE",
                lot="L-0002",
                moisture=_wet(),
            ).run,
            "umid-secador": TesmaMeterSim(
                ports["umid-secador"],
                interval_s=1.0,
                grain="CAFE",
                moisture_pct=18.0,
                # A dryer, sped up: from 18 % to the 11.5 % target in about 20 minutes.
                moisture=DryingCurve(m0_pct=18.0, me_pct=10.5, k_per_h=6.0),
                frames_per_sample=10,
            ).run,
            "balanca-recepcao": ToledoStreamSim(ports["balanca-recepcao"], rate_hz=5.0).run,
        }
        balance = MtSicsBalanceSim(ports["balanca-lab"], capacity_kg=5.0)
        async with contextlib.AsyncExitStack() as stack:
            if opts.broker is None:
                await stack.enter_async_context(open_embedded_broker(opts.port))
            broker = opts.broker or f"127.0.0.1:{opts.port}"
            host, _, port_text = broker.rpartition(":")
            out.write(
                "coffee-telemetry demo\n"
                f"  MQTT broker   {broker}"
                f" ({'embedded amqtt' if opts.broker is None else 'external'})\n"
                f"  InfluxDB      {opts.influx_url or 'off (use --influx-url)'}\n"
                f"  outbox        {cfg.outbox_path}\n"
                f"  dashboard     http://127.0.0.1:{opts.api_port}/"
                f"  (log in as demo / {password} to change lots, ack alerts)\n"
            )
            for dev in cfg.devices:
                out.write(f"  device        {dev.id:<17} {dev.driver:<24} {dev.port}\n")
            for bus in cfg.buses:
                out.write(f"  bus           {bus.id:<17} {'modbus rtu':<24} {bus.port}\n")
            for huller in cfg.hullers:
                out.write(
                    f"  huller        {huller.id:<17} units {huller.bag_counter} (bags),"
                    f" {huller.hour_meter} (hours) on {huller.bus}\n"
                )
            out.write(
                "Watch it with any MQTT client, e.g.:\n"
                f"  mosquitto_sub -h {host} -p {port_text} -t '{opts.prefix}/#' -v\n"
                "Huller service tasks:\n"
                f"  coffee-telemetry maintenance status -c {data_dir / 'site.toml'}\n"
                f"  coffee-telemetry maintenance done -c {data_dir / 'site.toml'}"
                " descascador-1 lubrificacao\n"
                "Readings as they are accepted (Ctrl-C to stop):\n"
            )
            out.flush()
            stop = asyncio.Event()
            health = Health()
            watch = health.watch()
            async with asyncio.TaskGroup() as tg:
                # Polled equipment only answers: it can be up before the agent.
                sim_tasks = [
                    tg.create_task(balance.run(), name="simulator[balanca-lab]"),
                    tg.create_task(weigh_samples_loop(balance), name="simulator[lab-samples]"),
                    tg.create_task(
                        RtuBusSim(ports["rs485-beneficio"], demo_huller_units()).serve_loop(),
                        name="simulator[rs485-beneficio]",
                    ),
                ]
                agent = tg.create_task(
                    run_agent(cfg, stop=stop, listeners=[_printer(out)], health=health),
                    name="agent",
                )
                # Meters start printing once the agent holds their ports, as
                # real ones would be switched on after the box is up.
                while any(
                    name not in health.devices
                    or health.devices[name].state is not DeviceState.ONLINE
                    for name in talkers
                ):
                    await watch.changed()
                    watch.take()
                sim_tasks += [
                    tg.create_task(run(), name=f"simulator[{name}]")
                    for name, run in talkers.items()
                ]
                try:
                    if opts.duration_s is None:
                        await asyncio.Event().wait()
                    else:
                        await asyncio.sleep(opts.duration_s)
                finally:
                    stop.set()
                    await agent
                    for task in sim_tasks:
                        task.cancel()
