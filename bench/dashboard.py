"""Dashboard benchmark: web API latency over a generated 30-day history, and its size on disk.

Generates the history of ``--devices`` (16) moisture meters at one reading per
second for ``--days`` (30) days with ``bench.history.build`` (raw points for the
last ``--raw-days``, 30 by default: 41.5 M rows; plus the 1-minute, hourly and
``lot_1h`` rollups, in the store's own schema), then tops it up to the current
second through ``History.add``/``flush`` (the agent's own write path), since
the API's ranges end at the server's "now". With ``--keep DIR`` the database
stays in ``DIR`` and a later run reuses it (only the top-up runs) as long as
the parameters match and it is less than a day old.

The real web app (``agent.web.server.make_web_app``/``open_web``) is then served on
127.0.0.1 by a child process, as the agent would serve it, over the history
opened with ``open_configured_history``; this process is the browser. With one aiohttp
session (at most ``--connections`` (6) connections, a browser's HTTP/1.1
limit), sequential requests, ``--repeats`` (50) each after 3 warm-ups, it
times request to last body byte (JSON parsing not included):

* ``series_1h`` / ``series_24h`` / ``series_30d``: ``GET /api/series`` of one device;
* ``panel_1h`` / ``panel_24h`` / ``panel_30d``: the same for all devices at once
  (``asyncio.gather``), timed as one;
* ``warehouse``: ``GET /api/warehouse`` (latest values, today's lots, alerts).

Each with answer bytes and points. ``direct`` times the same queries on
``History`` without HTTP (``bench.history.measure``), which tells the API's
own cost apart, and is what is left when the server cannot be served (the
failure is reported under ``server.error``). Also reported: generation time,
database size on disk (file + WAL), ``History.stats().used_bytes``, and the
RSS of the server process (and of this one).

Usage: ``PYTHONPATH=. python bench/dashboard.py [--devices 16] [--days 30]
[--raw-days 30] [--repeats 50] [--keep DIR]``. Prints one JSON document. Not a
test: numbers are recorded by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
import tomllib
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import psutil

from bench.history import build, measure, value
from coffee_telemetry.agent.alerts.service import AlertService
from coffee_telemetry.agent.config import parse_config
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.history.schema import DAY_NS, HOUR_NS, NS
from coffee_telemetry.agent.history.service import open_configured_history
from coffee_telemetry.agent.history.store import History
from coffee_telemetry.agent.lots.service import LotService
from coffee_telemetry.agent.lots.store import LotStore
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from tests.fakes import stage
from tests.services.net import free_port

DB_NAME = "history.sqlite3"
META_NAME = "dashboard-bench.json"
#: Bound for the generated store: 30 raw days of 16 meters do not fit the default
#: ``[history] max_mb`` of 1024, and a prune over the bound would delete raw hours.
MAX_MB = 64 * 1024
#: A kept database older than this is generated again rather than topped up.
MAX_TOPUP_S = 86_400
RANGES = {"1h": HOUR_NS, "24h": DAY_NS, "30d": 30 * DAY_NS}
WARMUPS = 3
MIB = 2**20


# -- the history -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Generated:
    """What ``--keep DIR`` remembers of a generated database (``META_NAME``)."""

    devices: int
    days: int
    raw_days: int
    #: Raw points, readings included, reach up to (not including) this time.
    end_ns: int
    rows: dict[str, int]
    build_s: float


def _read_meta(path: Path) -> Generated | None:
    try:
        return Generated(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def top_up(h: History, devices: int, start_s: int, end_s: int) -> int:
    """Add the readings of ``[start_s, end_s)`` through ``add``/``flush``; return rows written."""
    written = 0
    for chunk in range(start_s, end_s, 600):
        for s in range(chunk, min(chunk + 600, end_s)):
            for d in range(devices):
                h.add(
                    Reading(
                        ts_ns=s * NS,
                        seq=s,
                        device=f"umid-{d}",
                        measurement="moisture",
                        fields={"moisture_pct": value(d, s)},
                        tags={"station": "recepcao", "lot": f"L-{d}", "product": "cafe"},
                    )
                )
        written += h.flush()
    return written


def prepare(data_dir: Path, *, devices: int, days: int, raw_days: int) -> dict[str, object]:
    """Generate (or reuse) the history in ``data_dir`` and bring it up to now."""
    db = data_dir / DB_NAME
    meta_path = data_dir / META_NAME
    meta = _read_meta(meta_path)
    now_s = time.time_ns() // NS
    reused = (
        meta is not None
        and (meta.devices, meta.days, meta.raw_days) == (devices, days, raw_days)
        and db.exists()
        and now_s - meta.end_ns // NS <= MAX_TOPUP_S
    )
    if meta is None or not reused:
        meta_path.unlink(missing_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        end_ns = now_s * NS - now_s * NS % HOUR_NS
        h = History.open(db, max_mb=MAX_MB)
        t = time.perf_counter()
        rows = build(h, devices, days, raw_days, end_ns)
        build_s = round(time.perf_counter() - t, 1)
        h.close()
        meta = Generated(devices, days, raw_days, end_ns, rows, build_s)
    h = History.open(db, max_mb=MAX_MB)
    t = time.perf_counter()
    now_s = time.time_ns() // NS
    written = top_up(h, devices, meta.end_ns // NS, now_s)
    topup_s = time.perf_counter() - t
    h.close()
    meta = dataclasses.replace(meta, end_ns=now_s * NS)
    meta_path.write_text(json.dumps(dataclasses.asdict(meta)))
    return {
        "reused": reused,
        "rows": meta.rows,
        "build_s": meta.build_s,
        "topup_rows": written,
        "topup_s": round(topup_s, 2),
    }


def disk_bytes(db: Path) -> dict[str, int]:
    wal = Path(f"{db}-wal")
    return {"file": db.stat().st_size, "wal": wal.stat().st_size if wal.exists() else 0}


def site_toml(data_dir: Path, devices: int) -> str:
    """A site file for the generated meters (ports are never opened)."""
    lines = [
        "[site]",
        'id = "bench"',
        "[agent]",
        f"data_dir = {json.dumps(str(data_dir))}",
        "[history]",
        f"max_mb = {MAX_MB}",
    ]
    for d in range(devices):
        lines += [
            "[[devices]]",
            f'id = "umid-{d}"',
            'driver = "moisture.ticket"',
            f'port = "/dev/bench/umid-{d}"',
            'station = "recepcao"',
            'product = "cafe"',
        ]
    return "\n".join(lines) + "\n"


# -- the server (child process) ----------------------------------------------


def serve_process(cfg_text: str, conn: Connection) -> None:
    """Child process: serve the web app until told to stop (see ``_serve``)."""
    asyncio.run(_serve(cfg_text, conn))


def wet_readings(devices: int, now_ns: int) -> list[Reading]:
    """Each lot's peak reading, three times: the wet lots' alerts fire (k of n)."""
    return [
        Reading(
            ts_ns=now_ns - (3 - i) * NS,
            seq=i,
            device=f"umid-{d}",
            measurement="moisture",
            fields={"moisture_pct": value(d, 599)},
            tags={"station": "recepcao", "lot": f"L-{d}", "product": "cafe"},
        )
        for d in range(devices)
        for i in range(3)
    ]


async def _serve(cfg_text: str, conn: Connection) -> None:
    """Serve; send ``{"port", "open_s"}`` when ready, the history stats when stopped.

    Wires the app as ``agent.app`` does (health, lots, alerts, history, outbox),
    without devices or sinks. Anything that goes wrong is sent as
    ``{"error": traceback}`` instead.
    """
    try:
        # The modules under test, imported here so that a broken one is reported, not fatal.
        from coffee_telemetry.agent.web.api import WebDeps
        from coffee_telemetry.agent.web.server import make_web_app, open_web

        cfg = parse_config(tomllib.loads(cfg_text))
        async with contextlib.AsyncExitStack() as stack:
            health = Health()
            for dev in cfg.devices:
                health.add_device(dev.id, driver=dev.driver, port=dev.port, station=dev.station)
            t = time.perf_counter()
            history = await stack.enter_async_context(open_configured_history(cfg))
            # open_history's loop starts with a prune; have it done before timing anything.
            await history.prune(time.time_ns())
            open_s = time.perf_counter() - t
            store = LotStore.open(cfg.agent.data_dir / "lots.sqlite3")
            stack.callback(store.close)
            stamper = Stamper()
            outbox = await stack.enter_async_context(open_outbox(cfg.outbox_path, sinks=["bench"]))
            lots = LotService(
                store=store,
                stations={d.station for d in cfg.devices if d.station},
                site=cfg.site.id,
                record=stage(outbox.accept, stamper).record,
            )
            await lots.refresh()
            alerts = AlertService(
                cfg=cfg.alerts,
                site=cfg.site.id,
                state_path=cfg.agent.data_dir / "alerts.json",
                record=stage(outbox.accept, stamper).record,
                outbox=outbox,
                health=health,
            )
            for reading in wet_readings(len(cfg.devices), time.time_ns()):
                alerts.on_reading(reading)
            deps = WebDeps(
                cfg=cfg, health=health, lots=lots, alerts=alerts, history=history, outbox=outbox
            )
            port = free_port()
            await stack.enter_async_context(
                open_web(make_web_app(deps), host="127.0.0.1", port=port)
            )
            conn.send({"port": port, "open_s": round(open_s, 2)})
            await asyncio.to_thread(conn.recv)
            stats = await history.stats()
            conn.send({"used_bytes": stats.used_bytes, "max_bytes": stats.max_bytes})
    except Exception:
        conn.send({"error": traceback.format_exc()})


def _cpu_s(ours: list[psutil.Process]) -> tuple[float, float]:
    """CPU seconds used so far by the whole machine (steal included), and by ``ours``."""
    t = psutil.cpu_times()
    busy = t.user + t.system + sum(getattr(t, k, 0.0) for k in ("nice", "irq", "softirq", "steal"))
    own = sum(sum(p.cpu_times()[:2]) for p in ours)
    return busy, own


def _rss(pid: int) -> dict[str, float]:
    """Resident set size now and at its peak (VmHWM), MiB."""
    proc = psutil.Process(pid)
    peak = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return {"rss_mib": round(proc.memory_info().rss / MIB, 1), "peak_rss_mib": round(peak / MIB, 1)}


# -- the browser ---------------------------------------------------------------


def summary(times_ms: list[float]) -> dict[str, float]:
    """p50/p95/max as ``bench.history.measure`` computes them."""
    times = sorted(times_ms)
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 3),
        "max_ms": round(times[-1], 3),
    }


async def get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: {resp.status} {body[:300]!r}")
        return body


async def timed(fetch: Callable[[], Awaitable[list[bytes]]], repeats: int) -> dict[str, object]:
    """Time ``fetch`` after ``WARMUPS`` calls; describe its answers (bytes, points)."""
    times: list[float] = []
    first_ms = 0.0
    bodies: list[bytes] = []
    for i in range(WARMUPS + repeats):
        t = time.perf_counter()
        bodies = await fetch()
        ms = (time.perf_counter() - t) * 1000
        if i == 0:
            first_ms = ms
        elif i >= WARMUPS:
            times.append(ms)
    docs = [json.loads(b) for b in bodies]
    out: dict[str, object] = {"answers": len(bodies), "bytes": sum(len(b) for b in bodies)}
    if all(isinstance(d, dict) and "t" in d for d in docs):
        out["points"] = sum(len(d["t"]) for d in docs)
        out["resolution"] = sorted({str(d.get("resolution")) for d in docs})
    elif len(docs) == 1 and isinstance(docs[0], dict):
        doc = docs[0]
        out |= {k: len(v) for k, v in doc.items() if isinstance(v, list)}
    return out | {"first_ms": round(first_ms, 3)} | summary(times)


async def browse(port: int, devices: int, repeats: int, connections: int) -> dict[str, object]:
    base = f"http://127.0.0.1:{port}"

    def series_url(device: int, rng: str) -> str:
        return (
            f"{base}/api/series?measurement=moisture&device=umid-{device}"
            f"&field=moisture_pct&range={rng}"
        )

    res: dict[str, object] = {}
    connector = aiohttp.TCPConnector(limit_per_host=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        for rng in RANGES:

            async def one(rng: str = rng) -> list[bytes]:
                return [await get(session, series_url(0, rng))]

            res[f"series_{rng}"] = await timed(one, repeats)
        for rng in RANGES:

            async def panel(rng: str = rng) -> list[bytes]:
                return list(
                    await asyncio.gather(
                        *(get(session, series_url(d, rng)) for d in range(devices))
                    )
                )

            res[f"panel_{rng}"] = await timed(panel, repeats)

        async def warehouse() -> list[bytes]:
            return [await get(session, f"{base}/api/warehouse")]

        res["warehouse"] = await timed(warehouse, repeats)
    return res


def direct(db: Path, devices: int, repeats: int) -> dict[str, object]:
    """The dashboard's queries on ``History`` itself: no HTTP, no JSON."""
    h = History.open(db, max_mb=MAX_MB)
    res: dict[str, object] = {}
    try:

        def query(dev: int, span: int) -> list[tuple[int, float]]:
            now = time.time_ns()
            return h.series("moisture", f"umid-{dev}", "moisture_pct", now - span, now)

        for name, span in RANGES.items():
            res[f"series_{name}"] = {
                "points": len(query(0, span)),
                **measure(functools.partial(query, 0, span), repeats),
            }
        for name, span in RANGES.items():

            def panel(span: int = span) -> None:
                for d in range(devices):
                    query(d, span)

            res[f"panel_{name}"] = measure(panel, repeats)
        res["latest"] = measure(lambda: h.latest("moisture"), repeats)
        now = time.time_ns()
        # Since UTC midnight: the server uses local midnight, which only moves the partial hour.
        since = now - now % DAY_NS
        res["lots_today"] = {
            "lots": len(h.lots_today(since)),
            **measure(lambda: h.lots_today(since), repeats),
        }
    finally:
        h.close()
    return res


# -- main ----------------------------------------------------------------------


def _recv(conn: Connection, timeout_s: float) -> dict[str, object]:
    """The server's next message, or ``{"error": ...}`` if it died or stayed silent."""
    try:
        if conn.poll(timeout_s):
            msg: dict[str, object] = conn.recv()
            return msg
    except EOFError:
        return {"error": "the server process exited without a word"}
    return {"error": f"no word from the server in {timeout_s:g} s"}


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, object]:
    db = data_dir / DB_NAME
    history = prepare(data_dir, devices=args.devices, days=args.days, raw_days=args.raw_days)
    history["disk_bytes_generated"] = disk_bytes(db)
    # Others' load around the timed part: its numbers mean little on a busy machine.
    machine: dict[str, object] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": os.getloadavg(),
    }
    out: dict[str, object] = {
        "machine": machine,
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "history": history,
    }
    server: dict[str, object] = {}
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve_process, args=(site_toml(data_dir, args.devices), child))
    proc.start()
    child.close()  # so that a dead server reads as EOF here
    pid = proc.pid
    assert pid is not None
    stopped = False
    try:
        ready = _recv(parent, 600)
        if "error" in ready:
            server["error"] = ready["error"]
        else:
            port = ready["port"]
            assert isinstance(port, int)
            server |= {"open_s": ready["open_s"], "ready": _rss(pid)}
            server["history_disk_bytes_serving"] = disk_bytes(db)
            ours = [psutil.Process(), psutil.Process(pid)]
            before = _cpu_s(ours), time.perf_counter()
            try:
                out["api"] = asyncio.run(browse(port, args.devices, args.repeats, args.connections))
            except Exception:
                server["error"] = traceback.format_exc()
            after = _cpu_s(ours), time.perf_counter()
            machine["other_cpu_cores_during_api"] = round(
                (after[0][0] - before[0][0] - (after[0][1] - before[0][1]))
                / (after[1] - before[1]),
                2,
            )
            server["after_run"] = _rss(pid)
            server["history_disk_bytes_serving_after"] = disk_bytes(db)
            parent.send("stop")
            stopped = True
            done = _recv(parent, 120)
            if "error" in done:
                server["stats_error"] = done["error"]
            else:
                server["history_stats"] = done
    finally:
        if not stopped and proc.is_alive():
            parent.send("stop")
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()
    out["server"] = server
    out["direct"] = direct(db, args.devices, args.repeats)
    history["disk_bytes_closed"] = disk_bytes(db)
    out["bench_process"] = _rss(os.getpid())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--raw-days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--connections", type=int, default=6)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        out = run(args, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = run(args, Path(tmp))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
