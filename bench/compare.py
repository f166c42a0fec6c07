"""Side by side: the agent and a Node-RED flow on the same serial load, one table.

The comparison harness lives outside this repository (a Node-RED 4.1 flow that a
cooperative's technician would build instead: serial in → parse → MQTT QoS 1 +
InfluxDB; a pseudo-terminal load generator printing Portuguese tickets; and
``tools/measure.py``, which measures any serial → MQTT system on that load). This
script copies that harness to a scratch folder (it writes run data next to itself),
runs Node-RED and the agent in turn on each load, ``--reps`` times, and prints one
markdown table of medians with the agent/Node-RED ratio per metric.

Usage::

    python bench/compare.py --peers ../shared/peers [--reps 3] [--loads 8x1,8x50,16x200]
        [--duration 30] [--out results.json]

Needs the harness's ``node-red/setup.sh`` to have run once (it installs Node-RED from the
npm registry). Nothing else may run on the machine meanwhile: the figures are CPU times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMES = " \u00d7 "  # the multiplication sign, as the README's tables write loads

#: (label, path in the result JSON, lower is better)
METRICS = (
    ("lost at the port", ("lost",)),
    ("p50 ms", ("latency_ms", "p50")),
    ("p99 ms", ("latency_ms", "p99")),
    ("CPU s", ("node_cpu_seconds",)),
    ("CPU µs/reading", ("cpu_us_per_line",)),
    ("peak RSS MB", ("rss_peak_mb",)),
    ("influxd CPU s", ("detail", "influxd_cpu_seconds")),
)


def value(doc: dict[str, object], path: tuple[str, ...]) -> float:
    node: object = doc
    for key in path:
        assert isinstance(node, dict), path
        node = node[key]
    assert isinstance(node, int | float), path
    return float(node)


def run_one(script: Path, args: list[str], env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [str(script), *args], capture_output=True, text=True, env=env, timeout=900, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{script.name} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


def _system_clock_cli(tmp: Path, cli: str) -> Path:
    """The agent's command, taking this machine's clock as it is ([agent] time_sources).

    The harness writes its own site file. A benchmark machine (a container, a VM) is
    kept on time by its host, which its kernel cannot vouch for, so by default the agent
    would hold every reading as provisional; the test harness says the same in its files.
    """
    wrapper = tmp / "coffee-telemetry"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "args = sys.argv[1:]\n"
        "if '-c' in args:\n"
        "    path = args[args.index('-c') + 1]\n"
        "    text = open(path, encoding='utf-8').read()\n"
        "    if 'time_sources' not in text:\n"
        "        text = text.replace('[agent]\\n', '[agent]\\ntime_sources = [\"system\"]\\n', 1)\n"
        "        open(path, 'w', encoding='utf-8').write(text)\n"
        f"os.execv({cli!r}, [{cli!r}, *args])\n"
    )
    wrapper.chmod(0o755)
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=Path, default=ROOT.parent / "shared" / "peers")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--loads", default="8x1,8x50,16x200", help="NxR: N ports, R tickets/s")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--out", type=Path, help="also write every run's JSON here")
    args = parser.parse_args()
    if not (args.peers / "node-red" / "bench.sh").exists():
        raise SystemExit(f"no comparison harness in {args.peers} (node-red/bench.sh)")
    cli = shutil.which("coffee-telemetry", path=str(Path(sys.executable).parent))
    if cli is None:
        raise SystemExit("coffee-telemetry is not installed in this environment")
    runs: dict[tuple[str, str], list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        env = dict(os.environ, COFFEE_CLI=str(_system_clock_cli(Path(tmp), cli)))
        peers = Path(tmp) / "peers"
        shutil.copytree(args.peers, peers, symlinks=True)
        systems = {
            "node-red": (peers / "node-red" / "bench.sh", ["-f", "ticket"]),
            "coffee-telemetry": (peers / "coffee-telemetry" / "bench_agent.sh", []),
        }
        for load in args.loads.split(","):
            n, r = load.split("x")
            for rep in range(args.reps):
                # Alternate, so a drift of the machine hits both alike.
                for name, (script, extra) in systems.items():
                    doc = run_one(script, [*extra, n, r, str(args.duration)], env)
                    runs.setdefault((load, name), []).append(doc)
                    print(
                        f"{load} {name} run {rep + 1}: p99 {value(doc, ('latency_ms', 'p99'))} ms,"
                        f" {value(doc, ('cpu_us_per_line',))} µs/reading",
                        file=sys.stderr,
                    )
    if args.out:
        args.out.write_text(json.dumps({f"{k[0]} {k[1]}": v for k, v in runs.items()}, indent=1))
    print(
        f"| load ({args.duration} s, medians of {args.reps}) | metric | Node-RED |"
        " coffee-telemetry | ratio |"
    )
    print("|---|---|---|---|---|")
    for load in args.loads.split(","):
        for label, path in METRICS:
            peer = statistics.median(value(d, path) for d in runs[(load, "node-red")])
            ours = statistics.median(value(d, path) for d in runs[(load, "coffee-telemetry")])
            ratio = f"{ours / peer:.2f}" if peer else "—"
            shown = load.replace("x", TIMES)
            print(f"| {shown}/s | {label} | {peer:g} | {ours:g} | {ratio} |")


if __name__ == "__main__":
    main()
