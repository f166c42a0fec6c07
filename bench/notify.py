"""Notifications benchmark: from a wet-lot reading to the e-mail on the SMTP server.

The real agent (a subprocess, ``coffee-telemetry run``) with one ticket meter on a pty,
MQTT and InfluxDB off, ``[alerts.wet_lot] k = 1, n = 1``, and ``[notify]`` with one
contact by e-mail on a route without escalation. The SMTP server is aiosmtpd in this
process, on loopback, with STARTTLS (a certificate made for the run) and AUTH, as a
provider's port 587 would be. ``--tickets`` tickets, each with a new lot code at
14.0 % (threshold 12.5 %), paced at ``--rate`` per second: each fires one alert and so
one e-mail. ``latency_ms``: the SMTP server's receipt of the message (``DATA`` done)
minus the simulator's write of the ticket: parse, acceptance, the outbox commit, the
rule, the notifier's queue commit, the e-mail loop, TLS and AUTH on a new connection.
p50/p99/max, and how many arrived.

Usage: ``python bench/notify.py [--tickets 200] [--rate 5]``. Not a test: the number
goes in the README. The issue's target is p99 < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agent.notify.agent_rig import NotifyAgentRig
from tests.agent.notify.smtpd import SmtpServer, make_tls

NOTIFY = """
[notify]
[notify.email]
host = "127.0.0.1"
port = {port}
security = "starttls"
username = "alertas"
password_env = "BENCH_SMTP_PASSWORD"
sender = "Armazém <alertas@coop.example>"
ca_file = "{ca}"
[[notify.contacts]]
name = "João"
channels = {{ email = "joao@coop.example" }}
[[notify.routes]]
name = "plantao"
contacts = ["João"]
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(tickets: int, rate: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tls = make_tls(tmp)
        server = SmtpServer(tls=tls, users={"alertas": "pw"})
        await server.start()
        arrived: dict[str, int] = {}
        os.environ["BENCH_SMTP_PASSWORD"] = "pw"
        rig = NotifyAgentRig(tmp, NOTIFY.format(port=server.port, ca=tls.ca_file))
        written: dict[str, int] = {}
        try:
            await rig.start()
            for i in range(tickets):
                lot = f"L-{i:05d}"
                rig.sim.lot = lot
                sent = await rig.sim.emit(moisture_pct=14.0)
                assert sent is not None
                written[lot] = sent.ts_ns
                await asyncio.sleep(1 / rate)
                for r in server.received[len(arrived) :]:
                    arrived[str(r.mail["Subject"]).rsplit(" ", 1)[-1]] = r.at_ns
            deadline = time.monotonic() + 30
            while len(server.received) < tickets and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for r in server.received:
                arrived[str(r.mail["Subject"]).rsplit(" ", 1)[-1]] = r.at_ns
        finally:
            rig.close()
            await server.stop()
    latency = [(arrived[lot] - written[lot]) / 1e6 for lot in written if lot in arrived]
    if os.environ.get("BENCH_VERBOSE"):
        print(sorted(latency)[-15:], file=sys.stderr)
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "tickets": tickets,
        "rate_per_s": rate,
        "arrived": len(latency),
        "latency_ms": {
            "p50": round(statistics.median(latency), 1),
            "p90": round(pct(latency, 90), 1),
            "p99": round(pct(latency, 99), 1),
            "max": round(max(latency), 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.tickets, args.rate)), indent=2))


if __name__ == "__main__":
    main()
