"""Write-budget benchmark: bytes the agent writes to disk per accepted reading.

An SD card wears out by the bytes written to it, so this measures what the real agent
process writes at a warehouse's pace and says which settings change it.

Theory of operation
-------------------
One private Mosquitto and one influxd run on loopback (the fixtures the tests use); for
each *variant* (a set of site settings) a fresh data directory is made on a real disk
file system (``write_bytes`` of tmpfs is always 0; the bench refuses one) and the agent
runs against simulated devices on pseudo-terminals:

* ``--devices`` (10) meters, one reading every ``--interval`` s (2) each: moisture
  ticket printers, and ``--scales`` (2) of them MT-SICS balances whose load changes
  every interval (one stable weight each time);
* one huller (bag counter and hour meter) on a simulated RS-485 Modbus bus, polled
  every ``--interval`` s (``--no-huller`` leaves it out).

After a warm-up (ports open, stores created, first prune done) the bench reads the
agent's ``/proc/<pid>/io`` ``write_bytes`` and the outbox's last record id, lets
``--duration`` s pass (120; the README's figures use 300), and reads both again. The
difference of ``write_bytes`` is what the process made the kernel write to the disk
(pages it dirtied: SQLite's WAL frames, checkpoints into the database files, JSON state
files, and its log); the log file's growth is reported apart and left out of
``store_bytes``. Amortised per accepted record (every reading, huller poll, status and
alert record the outbox accepted in the window) and extrapolated to a day at that rate.
Stopping the agent (its last checkpoint) is outside the window.

Per store (``--split``): ``write_bytes`` counts per process, not per file, so during
the window ``strace -f`` records every ``write``/``pwrite64`` the agent makes, with the
file behind each descriptor; the bytes each store's files (database, ``-wal``; JSON state
files) were written by those calls, and each store's share of them, are reported, and
``write_bytes`` is split in those shares (``split_write_bytes_per_reading``). What the
calls miss: the ``-shm`` index is a shared memory map (written back by the kernel, no
call), and the page granularity of ``write_bytes`` (a 100-byte append dirties a 4 KiB
page). Tracing slows the agent's calls a little, so ``--split`` runs are not mixed with
untraced ones in one table. Difference variants are there too, as a cross-check:
``no-history``, ``no-alerts`` and ``no-huller`` turn one store off each, ``outbox-only``
all three (turning the alerts off also stops their periodic outbox statistics, which
write pending cursors). The file sizes of every store at the end are printed too
(growth, not traffic: a WAL file is reused).

Usage::

    python bench/writes.py                        # the default settings, 120 s
    python bench/writes.py --duration 300 --variant default --variant sd-card
    python bench/writes.py --split                # per store (strace)
    python bench/writes.py --variant default --set outbox.sync_interval_s=5
    python bench/writes.py --variant sd-timing --variant sd-timing+page-512

Variants: see ``VARIANTS``; ``sd-timing`` is the ``sd-card`` profile's timing settings
alone, and each ``sd-timing+...`` adds one of its other settings to them. Prints one
JSON document. Not a test: numbers go in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pipeline import with_settings, without_features  # noqa: E402
from coffee_telemetry.agent.outbox.stats import read_stats  # noqa: E402
from coffee_telemetry.drivers.counter_autonics_ct import Mode  # noqa: E402
from coffee_telemetry.simulators.moisture import TicketMeterSim  # noqa: E402
from coffee_telemetry.simulators.pty import PtyPort  # noqa: E402
from coffee_telemetry.simulators.rtu import CounterUnitSim, serve_rtu_bus  # noqa: E402
from coffee_telemetry.simulators.scales import MtSicsBalanceSim  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    AgentProcess,
    DeviceSpec,
    huller_toml,
    write_site_config,
)
from tests.services.influxd import InfluxServer  # noqa: E402
from tests.services.mosquitto import MosquittoServer  # noqa: E402

#: Named variants: site settings (``section.key=value``) and features turned off.
VARIANTS: dict[str, tuple[tuple[str, ...], str, bool]] = {
    # name: (settings, features off, huller)
    "default": ((), "", True),
    "sd-card": (('agent.storage_profile="sd-card"',), "", True),
    "full": (('outbox.synchronous="full"',), "", True),
    "sync-5s": (("outbox.sync_interval_s=5",), "", True),
    "sync-30s": (("outbox.sync_interval_s=30",), "", True),
    "sync-10s": (("outbox.sync_interval_s=10",), "", True),
    "commit-1s": (("outbox.commit_delay_s=1",), "", True),
    "cursor-10s": (("outbox.cursor_flush_s=10",), "", True),
    "history-10s": (("history.flush_interval_s=10",), "", True),
    "history-60s": (("history.flush_interval_s=60",), "", True),
    "no-history": ((), "history", True),
    "no-alerts": ((), "alerts", True),
    "no-huller": ((), "", False),
    "outbox-only": ((), "history,alerts", False),
}

#: The ``sd-card`` profile's timing settings alone (what it set before page sizes,
#: packing and checkpoint spacing): each of the others is measured on top of these.
SD_TIMING = (
    "outbox.sync_interval_s=10",
    "outbox.commit_delay_s=1",
    "outbox.cursor_flush_s=10",
    "history.flush_interval_s=60",
)
VARIANTS.update(
    {
        "sd-timing": (SD_TIMING, "", True),
        "sd-timing+page-512": ((*SD_TIMING, "outbox.page_size=512"), "", True),
        "sd-timing+compress": ((*SD_TIMING, "outbox.compress=true"), "", True),
        "sd-timing+checkpoint-60s": ((*SD_TIMING, "outbox.checkpoint_interval_s=60"), "", True),
        "sd-timing+prune-60s": ((*SD_TIMING, "outbox.prune_interval_s=60"), "", True),
        "sd-timing+history-page-1k": ((*SD_TIMING, "history.page_size=1024"), "", True),
        "sd-timing+lots-10s": ((*SD_TIMING, "lots.flush_interval_s=10"), "", True),
    }
)

WRITE_CALLS = ("write", "pwrite64", "writev", "pwritev", "pwritev2")
#: ``strace`` lines: ``TID call(FD</path>, ...) = N``, or split in two across threads.
_CALL = re.compile(r"^(\d+)\s+(\w+)\((\d+)<([^>]*)>.*?(?:\)\s+=\s+(-?\d+)|<unfinished \.\.\.>)")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>.*\)\s+=\s+(-?\d+)")

DAY_S = 86_400


def write_bytes(pid: int) -> int:
    """Bytes the process (all its threads) caused to be written to storage."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def ident(variant: str) -> str:
    """The variant's MQTT prefix and InfluxDB database: letters and digits only."""
    return "w" + re.sub(r"[^a-z0-9]", "", variant)


def store_of(path: str, data_dir: Path, log_path: Path) -> str | None:
    """The store a written file belongs to (``None``: not the agent's disk files)."""
    if path == str(log_path):
        return "log"
    if not path.startswith(f"{data_dir}/"):
        return None
    name = Path(path).name
    if ".sqlite3" in name:
        return name.split(".sqlite3")[0]
    if name.startswith("alerts"):
        return "alerts"
    return name


def traced_bytes(trace: Path, data_dir: Path, log_path: Path) -> dict[str, int]:
    """Bytes written by ``write``-family calls per store, from an ``strace -y`` log."""
    out: dict[str, int] = {}
    unfinished: dict[str, str] = {}
    for line in trace.read_text(errors="replace").splitlines():
        resumed = _RESUMED.match(line)
        if resumed:
            tid, _, ret = resumed.groups()
            path = unfinished.pop(tid, None)
        else:
            call = _CALL.match(line)
            if not call:
                continue
            tid, _, _, path, ret = call.groups()
            if ret is None:
                unfinished[tid] = path
                continue
        store = None if path is None else store_of(path, data_dir, log_path)
        if store is not None and int(ret) > 0:
            out[store] = out.get(store, 0) + int(ret)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


#: Every thread of the process, descriptors shown with their files, the writes only.
STRACE = ["strace", "-f", "-y", "-s", "0", "-qq", "-e", "trace=" + ",".join(WRITE_CALLS)]


@contextlib.asynccontextmanager
async def tracing(pid: int, trace: Path) -> AsyncIterator[None]:
    """``strace`` on ``pid`` while in use."""
    tracer = subprocess.Popen(
        [*STRACE, "-p", str(pid), "-o", str(trace)], stderr=subprocess.DEVNULL
    )
    try:
        await asyncio.sleep(1.0)  # attached
        yield
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)


def fs_type(path: Path) -> str:
    """The file system type of ``path`` (``df --output=fstype``)."""
    out = subprocess.run(
        ["df", "--output=fstype", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return out.split()[-1]


def file_sizes(data_dir: Path) -> dict[str, int]:
    """Every file of the data directory and its size in bytes."""
    return {
        str(p.relative_to(data_dir)): p.stat().st_size
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
    }


@dataclass
class Rig:
    """The services shared by every variant."""

    tmp: Path
    broker: MosquittoServer
    influx: InfluxServer


async def ticket_meter(sim: TicketMeterSim, interval_s: float, until: float, phase: float) -> None:
    """One ticket every ``interval_s`` until ``until`` (monotonic)."""
    await asyncio.sleep(phase)
    next_at = time.monotonic()
    i = 0
    while time.monotonic() < until:
        await sim.emit(moisture_pct=round(10.0 + (i % 40) / 10, 1), sample_id=f"{i:06d}")
        i += 1
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def balance_loads(
    sim: MtSicsBalanceSim, interval_s: float, until: float, phase: float
) -> None:
    """A new load every ``interval_s``, settled at once: one stable weight each time."""
    await asyncio.sleep(phase)
    next_at = time.monotonic()
    i = 0
    while time.monotonic() < until:
        sim.load(round(1.0 + (i % 37) * 0.25, 2))
        sim.settle()
        i += 1
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


@contextlib.asynccontextmanager
async def running_balances(sims: Sequence[MtSicsBalanceSim]) -> AsyncIterator[None]:
    """Serve the balances' commands while in use."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(sim.run(), name=f"balance[{i}]") for i, sim in enumerate(sims)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


def site_file(
    args: argparse.Namespace,
    rig: Rig,
    work: Path,
    name: str,
    ports: dict[str, PtyPort],
    bus: PtyPort | None,
) -> Path:
    """The site file of one variant."""
    settings, features, _ = VARIANTS[name]
    meters = [
        DeviceSpec(
            dev, "scale.mtsics", port.path, f"st{i % 3}", extra="[devices.mtsics]\npoll_s = 1.0"
        )
        if dev.startswith("b")
        else DeviceSpec(dev, "moisture.ticket", port.path, f"st{i % 3}")
        for i, (dev, port) in enumerate(ports.items())
    ]
    config = write_site_config(
        work / "site.toml",
        data_dir=work / "data",
        devices=meters,
        mqtt_port=rig.broker.port,
        prefix=ident(name),
        influx_url=rig.influx.url,
        database=ident(name),
        flush_interval_s=1.0,
    )
    text = config.read_text().replace('log_level = "debug"', 'log_level = "warning"')
    # The agent's default status interval, not the harness's quiet one.
    text = text.replace("status_interval_s = 3600", "status_interval_s = 60")
    text = with_settings(without_features(text, features), [*settings, *args.set])
    if bus is not None:
        text += "\n".join(
            huller_toml(
                bus.path,
                huller="desc1",
                station="st0",
                poll_interval_s=args.interval,
                tasks=[{"id": "oleo", "name": "Troca de óleo", "interval_h": 250}],
            )
        )
        text += "\n"
    config.write_text(text)
    return config


async def run_variant(args: argparse.Namespace, rig: Rig, name: str) -> dict[str, object]:
    """One agent run with the variant's settings; its write figures."""
    _, _, with_huller = VARIANTS[name]
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=rig.tmp))
    (work / "dev").mkdir()
    rig.influx.create_database(ident(name))
    scales = min(args.scales, args.devices)
    names = [f"m{i}" for i in range(args.devices - scales)] + [f"b{i}" for i in range(scales)]
    ports = {dev: PtyPort(link=work / "dev" / dev) for dev in names}
    bus = PtyPort(link=work / "dev" / "rs485") if with_huller else None
    for port in [*ports.values(), *([bus] if bus else [])]:
        port.open()
    config = site_file(args, rig, work, name, ports, bus)
    data_dir = work / "data"
    log_path = work / "agent.log"
    tickets = [TicketMeterSim(p, seed=i) for i, (d, p) in enumerate(ports.items()) if d[0] == "m"]
    balances = [
        MtSicsBalanceSim(p, capacity_kg=30.0, seed=i)
        for i, (d, p) in enumerate(ports.items())
        if d[0] == "b"
    ]
    units = [
        CounterUnitSim(1, pv=1000, rate_per_s=0.5),
        CounterUnitSim(2, mode=Mode.TIMER, pv=3600),
    ]
    agent = AgentProcess(config, log_path)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if bus is not None:
                await stack.enter_async_context(serve_rtu_bus(bus, units))
            await stack.enter_async_context(running_balances(balances))
            agent.start()
            assert agent.proc is not None
            pid = agent.proc.pid
            until = time.monotonic() + args.warmup + args.duration
            n = len(tickets) + len(balances)
            feeders = [
                asyncio.create_task(ticket_meter(sim, args.interval, until, i * args.interval / n))
                for i, sim in enumerate(tickets)
            ] + [
                asyncio.create_task(
                    balance_loads(sim, args.interval, until, (len(tickets) + i) * args.interval / n)
                )
                for i, sim in enumerate(balances)
            ]
            await asyncio.sleep(args.warmup)
            if not agent.alive:
                raise SystemExit(f"{name}: the agent exited:\n{agent.log_tail()}")
            trace = work / "strace.log"
            async with tracing(pid, trace) if args.split else contextlib.nullcontext():
                w0, log0 = write_bytes(pid), log_path.stat().st_size
                id0, t0 = read_stats(data_dir / "outbox.sqlite3").last_id, time.monotonic()
                await asyncio.sleep(args.duration)
                w1, log1 = write_bytes(pid), log_path.stat().st_size
                id1, t1 = read_stats(data_dir / "outbox.sqlite3").last_id, time.monotonic()
            sizes = file_sizes(data_dir)
            await asyncio.gather(*feeders)
            if not agent.alive:
                raise SystemExit(f"{name}: the agent exited:\n{agent.log_tail()}")
            agent.stop()
    finally:
        if agent.alive:
            agent.stop()
        for port in [*ports.values(), *([bus] if bus else [])]:
            port.close()
    elapsed = t1 - t0
    accepted = id1 - id0
    total = w1 - w0
    logged = log1 - log0
    stores = max(0, total - logged)
    split: dict[str, object] = {}
    if args.split:
        traced = traced_bytes(work / "strace.log", data_dir, log_path)
        traced.pop("log", None)
        all_traced = sum(traced.values()) or 1
        split = {
            "traced_bytes_per_reading": {k: round(v / max(1, accepted)) for k, v in traced.items()},
            "split_write_bytes_per_reading": {
                k: round(stores * v / all_traced / max(1, accepted)) for k, v in traced.items()
            },
        }
    return {
        "settings": list(VARIANTS[name][0]) + list(args.set),
        "off": VARIANTS[name][1] or None,
        "huller": with_huller,
        "seconds": round(elapsed, 1),
        "accepted": accepted,
        "accepted_per_s": round(accepted / elapsed, 2),
        "write_bytes": total,
        "log_bytes": logged,
        "store_bytes": stores,
        "store_bytes_per_s": round(stores / elapsed),
        "bytes_per_reading": round(stores / max(1, accepted)),
        "mb_per_day": round(stores / elapsed * DAY_S / 1e6, 1),
        **split,
        "files_at_end": sizes,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring")
    parser.add_argument("--devices", type=int, default=10, help="meters (tickets + balances)")
    parser.add_argument("--scales", type=int, default=2, help="how many meters are balances")
    parser.add_argument("--interval", type=float, default=2.0, help="s between readings")
    parser.add_argument(
        "--variant", action="append", default=[], choices=sorted(VARIANTS), help="repeatable"
    )
    parser.add_argument(
        "--split", action="store_true", help="per store, from the agent's write calls (strace)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a site setting for every variant, e.g. outbox.sync_interval_s=5",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=ROOT / "artifacts" / "bench-writes",
        help="where the data directories go (a real disk, not tmpfs)",
    )
    args = parser.parse_args()
    variants = list(dict.fromkeys(args.variant or ["default"]))
    if args.split and not shutil.which("strace"):
        raise SystemExit("--split needs strace (apt-get install strace)")
    args.dir.mkdir(parents=True, exist_ok=True)
    fstype = fs_type(args.dir)
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{args.dir} is on {fstype}: write_bytes would be 0; use --dir")
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="writes-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        with contextlib.ExitStack() as cleanup:
            broker = MosquittoServer(tmp / "mosquitto")
            broker.start()
            cleanup.callback(broker.stop)
            (tmp / "influxd").mkdir()
            influx = InfluxServer(tmp / "influxd")
            influx.start()
            cleanup.callback(influx.stop)
            rig = Rig(tmp, broker, influx)
            for name in variants:
                results[name] = await run_variant(args, rig, name)
                print(
                    f"{name}: {results[name]['bytes_per_reading']} B/reading,"
                    f" {results[name]['mb_per_day']} MB/day",
                    file=sys.stderr,
                )
    doc: dict[str, object] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "kernel": platform.release(),
            "fs": fstype,
            "python": platform.python_version(),
        },
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": {"bytes_per_reading": 2048, "mb_per_day": 1000},
        "variants": results,
    }
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    os.sync()


if __name__ == "__main__":
    asyncio.run(main())
