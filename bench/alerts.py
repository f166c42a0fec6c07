"""Alerts benchmark: what the rule engine costs per reading, and how fast a wet lot is known.

Prints one JSON document with the machine, the parameters and two measurements:

* ``rule_cost``: in-process and pure (no agent, no I/O). An ``agent.alerts.engine.Engine`` with
  50 rules (10 of each kind: ``wet_lot``, ``device_silent``, ``huller_fault``,
  ``service``, ``sink_backlog``; distinct names and thresholds) is fed ``--readings``
  pre-stamped readings: ``moisture`` (lots cycling over ``--lots`` codes, values around
  the thresholds), ``huller`` and ``maintenance_status`` mixed by ``--mix``, on a
  synthetic clock of ``--clock-step-ms`` per reading. Reported: µs per reading, wall
  (``time.perf_counter``) and process CPU (``time.process_time``), median and best of
  ``--repeats`` runs on a fresh engine each; then one more pass timing every call, for
  the cost per measurement (that pass includes the timer's own ~0.1 µs). The same for
  an engine holding only the default ``wet_lot`` rule. Stamping is not timed.
* ``latency``: the real agent (a subprocess) with one ticket meter on a pty, a private
  Mosquitto, InfluxDB off, and ``[alerts.wet_lot] k = 1, n = 1, repeat_s = 3600``.
  ``--tickets`` tickets, each with a new lot code at 13.5 % (default threshold 12.5 %),
  paced at ``--rate`` per second, so each fires one ``wet_lot`` alert at once. A paho
  subscriber on ``<prefix>/<site>/alerts/wet_lot/#`` notes ``time.time_ns()`` when each
  firing state arrives. ``from_engine_ms``: arrival minus the alert's own event time
  (payload ``ts``: when the engine evaluated the accepted reading, right after the
  outbox commit); ``from_write_ms``: arrival minus the simulator's write
  (``SentReading.ts_ns``), an upper bound that includes the ticket's parse and
  acceptance; ``write_to_engine_ms``: the difference. p50/p99/max each, how many of the
  tickets arrived, and p50 over the first and last tenth of the tickets (a latency that
  grows with the number of lots the engine remembers shows up there).

Usage: ``python bench/alerts.py [--readings 20000] [--tickets 1000] [--rate 20]``.
Not a test: numbers go in the README. The issue's target is p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coffee_telemetry.agent.alerts.engine import Engine  # noqa: E402
from coffee_telemetry.agent.alerts.kinds import (  # noqa: E402
    DeviceSilentRule,
    HullerFaultRule,
    Rule,
    ServiceRule,
    SinkBacklogRule,
    WetLotRule,
)
from coffee_telemetry.agent.alerts.model import Severity  # noqa: E402
from coffee_telemetry.agent.readings import Reading, Stamper  # noqa: E402
from coffee_telemetry.simulators.moisture import TicketMeterSim  # noqa: E402
from coffee_telemetry.simulators.pty import PtyPort  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    AgentProcess,
    DeviceSpec,
    eventually,
    write_site_config,
)
from tests.services.mosquitto import MosquittoServer  # noqa: E402

SITE = "ourofino"
PREFIX = "bench"
DEVICE = "umid-1"
WET_PCT = 13.5
HULLERS = ("desc-1", "desc-2", "desc-3", "desc-4")
TASKS = ("correias", "peneiras", "rolamentos")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "mean": None}
    return {
        "p50": round(percentile(values, 0.50), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
        "mean": round(statistics.fmean(values), 2),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model"):
                return value.strip()
    return platform.processor() or platform.machine()


# -- rule cost (pure, in-process) ----------------------------------------------------------


def fifty_rules() -> list[Rule]:
    """Ten rules of each kind, unique names, thresholds and limits spread out."""
    rules: list[Rule] = []
    for i in range(10):
        rules.append(
            WetLotRule(
                name=f"wet_lot_{i}",
                default_threshold_pct=round(11.6 + 0.2 * i, 1),
                thresholds_pct={"CONILON": round(12.6 + 0.2 * i, 1)},
                k=1 + i % 3,
                n=3 + i % 3,
            )
        )
    for i in range(10):
        rules.append(
            DeviceSilentRule(
                name=f"device_silent_{i}",
                silent_s_by_device={"umid-1": 60.0 * (i + 1)},
            )
        )
    for i in range(10):
        rules.append(
            HullerFaultRule(
                name=f"huller_fault_{i}",
                jam_s=30.0 * (i + 1),
                wiring_h=0.01 * (i + 1),
            )
        )
    for i in range(10):
        overdue = i % 2 == 1
        rules.append(
            ServiceRule(
                name=f"service_{i}",
                level="overdue" if overdue else "due",
                severity=Severity.CRITICAL if overdue else Severity.WARNING,
            )
        )
    for i in range(10):
        rules.append(SinkBacklogRule(name=f"sink_backlog_{i}", undelivered_s=60.0 * (i + 1)))
    return rules


@dataclass
class _Huller:
    running: bool = True
    bags: float = 1000.0
    hours: float = 500.0


def make_readings(
    count: int, *, lots: int, mix: tuple[int, int, int], step_ns: int, seed: int
) -> list[Reading]:
    """A mixed stream of stamped readings on a synthetic clock (``step_ns`` apart)."""
    rng = random.Random(seed)
    clock = 1_780_000_000 * 1_000_000_000
    stamper = Stamper(clock_ns=lambda: clock)
    cycle = ["moisture"] * mix[0] + ["huller"] * mix[1] + ["maintenance_status"] * mix[2]
    hullers = {
        h: _Huller(bags=1000.0 * (i + 1), hours=500.0 * (i + 1)) for i, h in enumerate(HULLERS)
    }
    since = {(h, t): rng.uniform(0.0, 120.0) for h in HULLERS for t in TASKS}
    out: list[Reading] = []
    n_moisture = n_huller = n_service = 0
    for i in range(count):
        clock += step_ns
        kind = cycle[i % len(cycle)]
        if kind == "moisture":
            lot_index = n_moisture % lots
            n_moisture += 1
            product = "CONILON" if lot_index % 5 == 0 else "CAFE"
            centre = 13.0 if product == "CONILON" else 12.5
            value = round(min(16.0, max(9.0, rng.gauss(centre, 0.8))), 1)
            out.append(
                stamper.stamp(
                    device=f"umid-{1 + lot_index % 3}",
                    measurement="moisture",
                    fields={"moisture_pct": value, "sample_id": f"{n_moisture:05d}"},
                    tags={
                        "site": SITE,
                        "device": f"umid-{1 + lot_index % 3}",
                        "station": "recepcao",
                        "lot": f"L-{lot_index:04d}",
                        "product": product,
                    },
                )
            )
        elif kind == "huller":
            name = HULLERS[n_huller % len(HULLERS)]
            n_huller += 1
            h = hullers[name]
            if rng.random() < 0.02:
                h.running = not h.running
            # desc-4 has a wiring fault: its hours rise with the motor input off.
            if h.running or name == "desc-4":
                h.hours += rng.uniform(0.0, 0.004)
            if h.running and rng.random() < 0.6:
                h.bags += 1.0
            out.append(
                stamper.stamp(
                    device=name,
                    measurement="huller",
                    fields={
                        "running": h.running,
                        "bags_total": h.bags,
                        "hours_total": round(h.hours, 6),
                    },
                    tags={"site": SITE, "device": name, "station": "beneficio"},
                )
            )
        else:
            name = HULLERS[n_service % len(HULLERS)]
            task = TASKS[(n_service // len(HULLERS)) % len(TASKS)]
            n_service += 1
            hours_since = since[(name, task)] + rng.uniform(0.0, 0.5)
            if hours_since > 120.0:
                hours_since = 0.0  # serviced
            since[(name, task)] = hours_since
            remaining = 100.0 - hours_since
            state = "overdue" if remaining < 0 else "due" if remaining <= 10.0 else "ok"
            out.append(
                stamper.stamp(
                    device=name,
                    measurement="maintenance_status",
                    fields={
                        "hours_since": round(hours_since, 6),
                        "interval_h": 100.0,
                        "remaining_h": round(remaining, 6),
                        "state": state,
                        "due": state != "ok",
                        "overdue": state == "overdue",
                    },
                    tags={"site": SITE, "device": name, "task": task},
                )
            )
    return out


def time_engine(
    rules: Sequence[Rule], readings: Sequence[Reading], repeats: int
) -> dict[str, object]:
    """µs per reading over the whole stream (fresh engine per run), then per measurement."""
    walls: list[float] = []
    cpus: list[float] = []
    emitted = 0
    for _ in range(repeats):
        engine = Engine(rules)
        on_reading = engine.on_reading
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        emitted = 0
        for reading in readings:
            emitted += len(on_reading(reading, reading.ts_ns))
        w1, c1 = time.perf_counter(), time.process_time()
        walls.append((w1 - w0) / len(readings) * 1e6)
        cpus.append((c1 - c0) / len(readings) * 1e6)

    # Per measurement: one more pass timing every call.
    engine = Engine(rules)
    spent: dict[str, int] = {}
    calls: dict[str, int] = {}
    alerts: dict[str, int] = {}
    gc.collect()
    for reading in readings:
        t0 = time.perf_counter_ns()
        got = engine.on_reading(reading, reading.ts_ns)
        t1 = time.perf_counter_ns()
        m = reading.measurement
        spent[m] = spent.get(m, 0) + (t1 - t0)
        calls[m] = calls.get(m, 0) + 1
        alerts[m] = alerts.get(m, 0) + len(got)
    return {
        "rules": len(rules),
        "us_per_reading": {
            "wall_median": round(statistics.median(walls), 2),
            "wall_min": round(min(walls), 2),
            "cpu_median": round(statistics.median(cpus), 2),
            "cpu_min": round(min(cpus), 2),
        },
        "readings_per_s": round(len(readings) / (statistics.median(walls) * len(readings) / 1e6)),
        "alert_events": emitted,
        "by_measurement": {
            m: {
                "readings": calls[m],
                "rules_visited": len(engine.rules_for(m)),
                "us_per_reading": round(spent[m] / calls[m] / 1000, 2),
                "alert_events": alerts[m],
            }
            for m in sorted(calls)
        },
    }


def rule_cost(args: argparse.Namespace) -> dict[str, object]:
    mix = tuple(int(x) for x in args.mix.split(":"))
    if len(mix) != 3 or min(mix) < 0 or sum(mix) == 0:
        raise SystemExit("--mix must be three non-negative integers, e.g. 8:1:1")
    readings = make_readings(
        args.readings,
        lots=args.lots,
        mix=(mix[0], mix[1], mix[2]),
        step_ns=round(args.clock_step_ms * 1e6),
        seed=args.seed,
    )
    counts: dict[str, int] = {}
    for r in readings:
        counts[r.measurement] = counts.get(r.measurement, 0) + 1
    return {
        "readings": dict(sorted(counts.items())),
        "fifty_rules": time_engine(fifty_rules(), readings, args.repeats),
        "default_wet_lot": time_engine([WetLotRule()], readings, args.repeats),
    }


# -- latency (the real agent) --------------------------------------------------------------


class AlertSubscriber:
    """Note when each lot's first ``firing`` state arrives, with its payload's times."""

    def __init__(self, port: int) -> None:
        self.base = f"{PREFIX}/{SITE}"
        # lot -> (received ns, payload ts, payload since)
        self.firing: dict[str, tuple[int, int, int]] = {}
        self.messages = 0
        self.other_states: dict[str, int] = {}
        self.online = False
        self.subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-alerts")
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        client.subscribe(
            [(f"{self.base}/alerts/wet_lot/#", 1), (f"{self.base}/{DEVICE}/status", 1)]
        )

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: object,
        properties: object,
    ) -> None:
        self.subscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time_ns()
        if msg.topic.endswith("/status"):
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                self.online = json.loads(msg.payload).get("state") == "online"
            return
        doc = json.loads(msg.payload)
        self.messages += 1
        state = str(doc["state"])
        if state != "firing":
            self.other_states[state] = self.other_states.get(state, 0) + 1
            return
        subject = str(doc["subject"])
        if subject not in self.firing:
            self.firing[subject] = (now, int(doc["ts"]), int(doc["since"]))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def latency(
    args: argparse.Namespace, tmp: Path, cleanup: contextlib.ExitStack
) -> dict[str, object]:
    broker = MosquittoServer(tmp / "mosquitto")
    broker.start()
    cleanup.callback(broker.stop)
    (tmp / "dev").mkdir()
    port = PtyPort(link=tmp / "dev" / DEVICE)
    port.open()
    cleanup.callback(port.close)
    data_dir = tmp / "data"
    config = write_site_config(
        tmp / "site.toml",
        data_dir=data_dir,
        devices=[DeviceSpec(DEVICE, "moisture.ticket", port.path, "recepcao")],
        mqtt_port=broker.port,
        prefix=PREFIX,
        influx_url=None,
        site=SITE,
    )
    text = config.read_text().replace('log_level = "debug"', 'log_level = "warning"')
    text += "[alerts.wet_lot]\nk = 1\nn = 1\nrepeat_s = 3600\n"
    config.write_text(text)

    sub = AlertSubscriber(broker.port)
    cleanup.callback(sub.close)
    if not await asyncio.to_thread(sub.subscribed.wait, 10.0):
        raise RuntimeError("the benchmark's MQTT subscription was not acknowledged")
    agent = AgentProcess(config, tmp / "agent.log")
    agent.start()
    cleanup.callback(agent.stop)
    assert agent.proc is not None
    proc = psutil.Process(agent.proc.pid)
    await eventually(
        lambda: sub.online, timeout_s=30, what=f"{DEVICE} online", context=agent.log_tail
    )
    await asyncio.sleep(1.0)  # let the parser see an idle line before the first ticket

    sim = TicketMeterSim(port, seed=args.seed)
    sent: dict[str, int] = {}
    period = 1.0 / args.rate
    cpu0 = proc.cpu_times()
    next_at = time.monotonic()
    for i in range(args.tickets):
        lot = f"B-{i:05d}"
        s = await sim.emit(moisture_pct=WET_PCT, lot=lot)
        if s is not None:
            sent[lot] = s.ts_ns
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    with contextlib.suppress(AssertionError):
        await eventually(
            lambda: all(lot in sub.firing for lot in sent),
            timeout_s=args.settle,
            what="every firing state",
        )
    cpu1 = proc.cpu_times()
    agent_cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    agent_alive = agent.alive

    order = [lot for lot in sent if lot in sub.firing]
    from_engine = [(sub.firing[lot][0] - sub.firing[lot][1]) / 1e6 for lot in order]
    from_write = [(sub.firing[lot][0] - sent[lot]) / 1e6 for lot in order]
    write_to_engine = [(sub.firing[lot][1] - sent[lot]) / 1e6 for lot in order]
    tenth = max(1, len(order) // 10)
    agent.stop()
    return {
        "tickets": args.tickets,
        "written": len(sent),
        "arrived": len(order),
        "missing": len(sent) - len(order),
        "unexpected_subjects": len(set(sub.firing) - set(sent)),
        "other_states": sub.other_states,
        "from_engine_ms": summary(from_engine),
        "from_write_ms": summary(from_write),
        "write_to_engine_ms": summary(write_to_engine),
        "from_engine_p50_first_last_tenth_ms": [
            round(percentile(from_engine[:tenth], 0.5), 2),
            round(percentile(from_engine[-tenth:], 0.5), 2),
        ],
        "target_p99_ms": 100,
        "p99_within_target": bool(from_engine) and percentile(from_engine, 0.99) <= 100,
        "agent_cpu_ms_per_ticket": round(agent_cpu_s / max(1, len(sent)) * 1e3, 2),
        "agent_alive_at_end": agent_alive,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20_000, help="rule_cost stream length")
    parser.add_argument("--lots", type=int, default=200, help="rule_cost lot codes")
    parser.add_argument(
        "--mix", default="8:1:1", help="rule_cost moisture:huller:maintenance_status"
    )
    parser.add_argument("--clock-step-ms", type=float, default=50.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tickets", type=int, default=1000, help="latency: tickets (new lots)")
    parser.add_argument("--rate", type=float, default=20.0, help="latency: tickets per second")
    parser.add_argument("--settle", type=float, default=30.0, help="latency: wait at the end")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    if args.readings < 1 or args.lots < 1 or args.repeats < 1 or args.tickets < 1:
        parser.error("--readings, --lots, --repeats and --tickets must be >= 1")
    if not args.rate > 0:
        parser.error("--rate must be > 0")

    # SIGTERM / SIGHUP cancel the run like Ctrl-C does, so the ExitStack stops everything.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)

    result: dict[str, object] = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "cores_physical": psutil.cpu_count(logical=False),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "params": {
            **vars(args),
            "rule_cost_clock": "synthetic, now_ns = reading.ts_ns",
            "latency_alerts_config": {"k": 1, "n": 1, "repeat_s": 3600},
            "latency_moisture_pct": WET_PCT,
            "influx": False,
        },
    }
    result["rule_cost"] = rule_cost(args)
    if not args.skip_latency:
        # Services and the agent are stopped however the run ends (stop() is idempotent).
        with (
            tempfile.TemporaryDirectory(prefix="coffee-bench-alerts-") as tmp_name,
            contextlib.ExitStack() as cleanup,
        ):
            result["latency"] = await latency(args, Path(tmp_name), cleanup)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
