"""``coffee-telemetry run --once``: what each device says now, and nothing else.

    coffee-telemetry run --once -c site.toml [--device ID ...] [--timeout S] [--format F]

Theory of operation: each configured device (or each ``--device``) gets the loop
the agent would run for it (``agent.devices.factory``), with the same drivers,
stamping and tags, but its accept stage is a list in memory: nothing reaches the
outbox, a sink, the history or the lot store, and no file in ``data_dir`` is
opened. Each loop stops at its device's first reading or at the timeout,
whichever comes first; the readings go to stdout as line protocol (what the
InfluxDB sink would write) and JSON (what the MQTT sink would publish), one line
each. Exit 0 when every device gave a reading, 1 when some did not (named on
stderr), 2 for an unknown ``--device``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import TextIO

from coffee_telemetry.agent.accept import AcceptStage
from coffee_telemetry.agent.config import Config, DeviceConfig
from coffee_telemetry.agent.devices.factory import make_device_runner
from coffee_telemetry.agent.devices.ports import PortOpener, open_serial_port
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.readings import Reading, Stamper, encode_reading
from coffee_telemetry.agent.sinks.lineprotocol import encode_line

__all__ = ["FORMATS", "print_readings", "read_once"]

#: What ``--format`` takes: line protocol, JSON, or both (a line each).
FORMATS = ("both", "line", "json")


async def _first_readings(
    dev: DeviceConfig,
    *,
    site: str,
    stamper: Stamper,
    health: Health,
    timeout_s: float,
    open_port: PortOpener,
) -> list[Reading]:
    got: list[Reading] = []
    first = asyncio.Event()

    async def keep(readings: Sequence[Reading]) -> None:
        got.extend(readings)
        first.set()

    # The accept stage, with a commit that keeps the readings instead of the outbox.
    stage = AcceptStage(keep, stamper=stamper, health=health)
    runner = make_device_runner(
        dev, site=site, accept=stage.accept, health=health, open_port=open_port
    )
    task = asyncio.create_task(runner.run_loop(), name=f"once[{dev.id}]")
    try:
        async with asyncio.timeout(timeout_s):
            await first.wait()
    except TimeoutError:
        pass
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return got


async def read_once(
    cfg: Config,
    devices: Sequence[DeviceConfig],
    *,
    timeout_s: float,
    open_port: PortOpener = open_serial_port,
) -> dict[str, list[Reading]]:
    """The first readings of each of ``devices`` (empty: none within ``timeout_s``)."""
    stamper, health = Stamper(), Health()
    results = await asyncio.gather(
        *(
            _first_readings(
                dev,
                site=cfg.site.id,
                stamper=stamper,
                health=health,
                timeout_s=timeout_s,
                open_port=open_port,
            )
            for dev in devices
        )
    )
    return {dev.id: readings for dev, readings in zip(devices, results, strict=True)}


def print_readings(readings: Sequence[Reading], *, fmt: str, out: TextIO = sys.stdout) -> None:
    """Write ``readings`` to ``out`` as line protocol and/or JSON, one line each."""
    for reading in readings:
        if fmt in ("both", "line"):
            out.write(encode_line(reading) + "\n")
        if fmt in ("both", "json"):
            out.write(encode_reading(reading).decode() + "\n")
    out.flush()
