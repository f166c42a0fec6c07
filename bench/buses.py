"""RS-485 polling benchmark: B buses x N Autonics CT units, each unit polled every interval.

Each bus is a real pty served by ``simulators.rtu.RtuBusSim`` (addresses 1..N, odd ones in
counter mode, even ones in timer mode). The simulators run in a child process, this same
file started with ``--simulate``, so the process measured holds only the real
``agent.hullers.bus.BusPoller``s and their real pymodbus clients. Prints one JSON document:

* ``polls``: polls ok/failed (a poll is one FC04 0x03E8 x6 status+PV exchange, plus the
  FC02/FC04 reads of the slow interval when due) and every request the pollers' stats
  counted, timeouts and CRC errors included;
* ``cpu``: poller process CPU time (user + system) over the run, per successful poll and
  as a share of one core;
* ``jitter_ms``: per unit and over all units, the interval between two consecutive
  samples of a unit (taken when ``on_event`` gets the sample) minus ``--interval``;
  p50/p99/max and min, signed (a late sample followed by an on-time one shows up as a
  negative jitter, the grid does not drift). The first poll of every unit also reads the
  slow blocks, all units at once, so each unit's first sample is a few hundred ms late
  and ``min`` shows it (again every ``slow_interval_s``, 60 s);
* ``peak_rss_mb``: the poller process' VmHWM at the end;
* ``simulator``: what the child heard and its CPU time while serving, as a cross-check.

The pty has no baud rate: bytes arrive at once, so the times are the software's alone,
not 9600 Bd wire time. Bus timing is ``BusSpec``'s defaults (20 ms gap, 0.5 s timeout).

Usage: ``python bench/buses.py [--buses 2] [--units 8] [--interval 1] [--duration 60]``.
Not a test: numbers go in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coffee_telemetry.agent.bus.rtu import BusSpec  # noqa: E402
from coffee_telemetry.agent.hullers.bus import BusPoller, UnitSpec  # noqa: E402
from coffee_telemetry.drivers.counter_autonics_ct import Mode  # noqa: E402
from coffee_telemetry.simulators.pty import PtyPort  # noqa: E402
from coffee_telemetry.simulators.rtu import CounterUnitSim, RtuBusSim  # noqa: E402
from tests.fakes import PollRecorder  # noqa: E402

READY = "ready"


def cpu_times() -> tuple[float, float]:
    """This process' user and system CPU seconds (getrusage: µs, not os.times' 10 ms ticks)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


# -- the simulator process --------------------------------------------------------------


def bus_units(count: int) -> list[CounterUnitSim]:
    """Units 1..count: odd addresses count bags, even ones accumulate run seconds."""
    return [
        CounterUnitSim(address, mode=Mode.COUNTER, pv=1000 * address, rate_per_s=2.0)
        if address % 2
        else CounterUnitSim(address, mode=Mode.TIMER, pv=3600 * address)
        for address in range(1, count + 1)
    ]


async def simulate(links: Sequence[str], units: int) -> dict[str, object]:
    """Serve one bus per link until stdin closes; return what the simulators heard."""
    ports = [PtyPort(link=link) for link in links]
    sims = [RtuBusSim(port, bus_units(units)) for port in ports]
    try:
        for port in ports:
            port.open()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(sim.serve_loop(), name=f"rtu-sim[{Path(link).name}]")
                for sim, link in zip(sims, links, strict=True)
            ]
            cpu0 = cpu_times()
            print(READY, flush=True)
            # The parent closes our stdin when its run is over (or when it dies).
            await asyncio.to_thread(sys.stdin.buffer.read)
            for task in tasks:
                task.cancel()
    finally:
        for port in ports:
            port.close()
    cpu1 = cpu_times()
    return {
        "requests": sum(sim.requests for sim in sims),
        "unanswered": sum(sim.unanswered for sim in sims),
        "crc_errors": sum(sim.crc_errors for sim in sims),
        "discarded": sum(sim.discarded for sim in sims),
        "replies": sum(unit.replies for sim in sims for unit in sim.units.values()),
        "cpu_s_serving": round(sum(cpu1) - sum(cpu0), 3),
    }


# -- the poller process -----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank, as ``bench/pipeline.py`` does."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def jitter_summary(jitter_ms: Sequence[float]) -> dict[str, object]:
    if not jitter_ms:
        return {"intervals": 0}
    return {
        "intervals": len(jitter_ms),
        "p50": round(percentile(jitter_ms, 0.50), 2),
        "p99": round(percentile(jitter_ms, 0.99), 2),
        "max": round(max(jitter_ms), 2),
        "min": round(min(jitter_ms), 2),
    }


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model"):
                return value.strip()
    return platform.processor() or platform.machine()


async def poll_buses(args: argparse.Namespace, links: Sequence[str]) -> dict[str, object]:
    recorder = PollRecorder()
    pollers = [
        BusPoller(
            BusSpec(port=link, name=f"bus{b}"),
            [
                UnitSpec(
                    name=f"bus{b}/u{address}",
                    address=address,
                    poll_interval_s=args.interval,
                    backoff_max_s=max(60.0, args.interval),
                )
                for address in range(1, args.units + 1)
            ],
            on_event=recorder,
        )
        for b, link in enumerate(links)
    ]
    loop = asyncio.get_running_loop()
    cpu0, t0 = cpu_times(), loop.time()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.duration), asyncio.TaskGroup() as tg:
            for b, poller in enumerate(pollers):
                tg.create_task(poller.run_loop(), name=f"bus[bus{b}]")
    cpu1, t1 = cpu_times(), loop.time()
    user_s, system_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu_s = user_s + system_s

    stats = {name: s for poller in pollers for name, s in poller.stats.items()}
    ok = sum(s.polls_ok for s in stats.values())
    per_unit: dict[str, object] = {}
    everything: list[float] = []
    for name, s in stats.items():
        times = [t for t, _ in recorder.samples(name)]
        jitter = [(b - a - args.interval) * 1e3 for a, b in itertools.pairwise(times)]
        everything += jitter
        per_unit[name] = {
            "ok": s.polls_ok,
            "failed": s.polls_failed,
            "jitter_ms": jitter_summary(jitter),
        }
    faults: dict[str, int] = {}
    for name in stats:
        for error in recorder.errors(name):
            faults[error.fault.value] = faults.get(error.fault.value, 0) + 1
    return {
        "wall_s": round(t1 - t0, 3),
        "polls": {
            "ok": ok,
            "failed": sum(s.polls_failed for s in stats.values()),
            "expected_ok": len(stats) * math.ceil(args.duration / args.interval),
            "failures_by_fault": faults,
            "requests": sum(s.requests for s in stats.values()),
            "replies": sum(s.replies for s in stats.values()),
            "timeouts": sum(s.timeouts for s in stats.values()),
            "crc_errors": sum(s.crc_errors for s in stats.values()),
        },
        "cpu": {
            "user_s": round(user_s, 3),
            "system_s": round(system_s, 3),
            "us_per_poll": round(cpu_s / max(1, ok) * 1e6, 1),
            "pct_of_one_core": round(100 * cpu_s / (t1 - t0), 2),
        },
        "jitter_ms": {"all_units": jitter_summary(everything), "per_unit": per_unit},
        "peak_rss_mb": round(vm_hwm_mb(), 1),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="coffee-bench-buses-") as tmp:
        links = [str(Path(tmp) / f"rs485-{b}") for b in range(args.buses)]
        command = [sys.executable, str(Path(__file__).resolve()), "--units", str(args.units)]
        child = subprocess.Popen(
            [*command, "--simulate", *links],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        try:
            line = child.stdout.readline().strip()
            if line != READY:
                raise RuntimeError(f"simulator did not start: {line!r}")
            result = asyncio.run(poll_buses(args, links))
            # Closing its stdin (communicate does) tells the simulator to report and exit.
            out, _ = child.communicate(timeout=30)
            result["simulator"] = json.loads(out)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buses", type=int, default=2)
    parser.add_argument("--units", type=int, default=8, help="units per bus (addresses 1..N)")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval per unit, s")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of polling")
    parser.add_argument("--simulate", nargs="+", metavar="LINK", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The agent's warnings (a unit offline, a bus down) still reach stderr; pymodbus' do not.
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    if args.simulate:
        print(json.dumps(asyncio.run(simulate(args.simulate, args.units))), flush=True)
        return
    if not (1 <= args.units <= 247 and args.buses >= 1 and args.interval > 0):
        parser.error("need 1 <= --units <= 247, --buses >= 1, --interval > 0")

    bus, unit = BusSpec(port="-"), UnitSpec(name="-", address=1)
    result: dict[str, object] = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "params": {
            "buses": args.buses,
            "units_per_bus": args.units,
            "interval_s": args.interval,
            "duration_s": args.duration,
            "serial": f"{bus.serial.baudrate} 8{bus.serial.parity}{bus.serial.stopbits} (pty)",
            "min_gap_s": bus.min_gap_s,
            "timeout_s": bus.timeout_s,
            "retries": bus.retries,
            "slow_interval_s": unit.slow_interval_s,
        },
    }
    result.update(run(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
