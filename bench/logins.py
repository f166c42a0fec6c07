"""Login benchmark: the agent's memory with logins in flight, and the pages during a flood.

Starts the real agent (``coffee-telemetry run``) as a child process with two dashboard
users (Argon2id, or with ``--scrypt`` the scrypt hashes of earlier releases, which are
upgraded at the first login) and the web server on 127.0.0.1; MQTT and InfluxDB are
off, so what is measured is the web server and the password worker. This process is
the browsers, each on its own loopback address (127.0.x.y), as clients on a LAN are.

1. ``idle``: the agent's RSS when ready.
2. ``two_in_flight``: ``--rounds`` times, two good logins sent at once (two users, two
   addresses); the agent's peak RSS (``VmHWM``) after them, against the unit's
   ``MemoryMax`` (256 MiB).
3. ``flood``: ``--flood`` wrong logins at once, each from another address (the worst
   case for the lockout: no address reaches its limit), while one client reads
   ``/api/warehouse`` in a loop: how the logins were answered (401 checked, 429
   locked out, 503 past the password worker's queue), hashes computed, the
   warehouse's latency during the flood (p50, max), and the RSS growth.

Usage: ``PYTHONPATH=. python bench/logins.py [--rounds 20] [--flood 300] [--scrypt]``.
Prints one JSON document. Not a test: numbers are recorded by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from coffee_telemetry.agent.passwords import hash_password
from tests.services.net import free_port, wait_for_port

PASSWORD = "cafe-bom-2026"
MEMORY_MAX = 256 * 2**20


def scrypt_hash(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt$14$8$1${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def write_config(tmp: Path, port: int, *, scrypt: bool) -> Path:
    hashes = [scrypt_hash(PASSWORD) if scrypt else hash_password(PASSWORD) for _ in range(2)]
    site = tmp / "site.toml"
    site.write_text(
        f'[site]\nid = "bench"\n[agent]\ndata_dir = "{tmp / "data"}"\n'
        "[mqtt]\nenabled = false\n[influx]\nenabled = false\n"
        f'[api]\nbind = "127.0.0.1"\nport = {port}\n'
        "max_connections = 2048\nmax_connections_per_address = 64\n"
        + "".join(
            f'[[api.users]]\nname = "{name}"\npassword_hash = "{h}"\n'
            for name, h in zip(("maria", "joao"), hashes, strict=True)
        )
    )
    return site


def session_from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(address, 0), limit=0),
        cookie_jar=aiohttp.CookieJar(unsafe=True),
    )


async def login(base: str, address: str, user: str, password: str) -> int:
    async with session_from(address) as s:
        body = json.dumps({"user": user, "password": password})
        async with s.post(base + "/api/login", data=body) as r:
            await r.read()
            return r.status


async def two_in_flight(base: str, pid: int, rounds: int) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    for i in range(rounds):
        got = await asyncio.gather(
            login(base, f"127.0.1.{2 * (i % 100) + 1}", "maria", PASSWORD),
            login(base, f"127.0.1.{2 * (i % 100) + 2}", "joao", PASSWORD),
        )
        statuses.update(got)
    return {
        "rounds": rounds,
        "statuses": dict(statuses),
        "peak_rss_mib": round(proc_kb(pid, "VmHWM") / 1024, 1),
        "rss_mib": round(proc_kb(pid, "VmRSS") / 1024, 1),
    }


async def flood(base: str, pid: int, n: int) -> dict[str, object]:
    rss_before = proc_kb(pid, "VmRSS")
    done = asyncio.Event()
    latencies: list[float] = []

    async def reader() -> None:
        async with aiohttp.ClientSession() as s:
            while not done.is_set():
                started = time.perf_counter()
                async with s.get(base + "/api/warehouse") as r:
                    await r.read()
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)

    reading = asyncio.create_task(reader())
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    statuses = await asyncio.gather(
        *(
            login(base, f"127.0.{2 + i // 250}.{1 + i % 250}", "maria", f"guess-{i}")
            for i in range(n)
        )
    )
    took = time.perf_counter() - started
    done.set()
    await reading
    async with aiohttp.ClientSession() as s, s.get(base + "/api/web") as r:
        auth = (await r.json())["auth"]
    return {
        "logins": n,
        "seconds": round(took, 2),
        "statuses": dict(Counter(statuses)),
        "hashes_computed": auth["hashes_computed"],
        "warehouse_during_ms": {
            "n": len(latencies),
            "p50": round(statistics.median(latencies) * 1000, 1),
            "max": round(max(latencies) * 1000, 1),
        },
        "rss_growth_mib": round((proc_kb(pid, "VmRSS") - rss_before) / 1024, 1),
        "peak_rss_mib": round(proc_kb(pid, "VmHWM") / 1024, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        site = write_config(Path(tmp), port, scrypt=args.scrypt)
        agent = subprocess.Popen(
            [sys.executable, "-m", "coffee_telemetry.agent.cli", "run", "-c", str(site)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        try:
            if not wait_for_port(port, timeout_s=30):
                raise RuntimeError("the agent did not start")
            await asyncio.sleep(1.0)
            base = f"http://127.0.0.1:{port}"
            idle = round(proc_kb(agent.pid, "VmRSS") / 1024, 1)
            both = await two_in_flight(base, agent.pid, args.rounds)
            flooded = await flood(base, agent.pid, args.flood)
        finally:
            agent.terminate()
            agent.wait(15)
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "hashes": "scrypt (upgraded at first login)" if args.scrypt else "argon2id",
        "memory_max_mib": MEMORY_MAX // 2**20,
        "idle_rss_mib": idle,
        "two_in_flight": both,
        "flood": flooded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--flood", type=int, default=300)
    parser.add_argument("--scrypt", action="store_true", help="users with old scrypt hashes")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
