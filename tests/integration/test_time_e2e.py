"""A box with a wrong wall clock: the real agent, real Mosquitto and InfluxDB, a pty meter.

The agent runs under a small ``LD_PRELOAD`` shim, built here with gcc, that shifts
``CLOCK_REALTIME`` (``clock_gettime``, ``gettimeofday``, ``time``) by an offset read
from a file, re-read while the agent runs, and answers ``adjtimex`` with the kernel's
NTP state written in the same file. The monotonic clock is left alone, as on a real Pi
whose clock is wrong: libfaketime cannot do that here (``time.sleep`` fails with
``EINVAL`` when it leaves the monotonic clock alone).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coffee_telemetry.agent.timekeeping import FLOOR_NS
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort
from tests.integration.harness import (
    AgentProcess,
    DeviceSpec,
    MqttCollector,
    eventually,
    outbox_last_id,
    points_by_seq,
    write_site_config,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <time.h>

static long long offset_s = 0;
static int synced = 0;
static long long read_at_ns = -1;

static int (*real_clock_gettime)(clockid_t, struct timespec *) = 0;

static void refresh(void) {
    if (!real_clock_gettime) real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    struct timespec now;
    real_clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = now.tv_sec * 1000000000LL + now.tv_nsec;
    if (read_at_ns >= 0 && ns - read_at_ns < 50000000LL) return;
    read_at_ns = ns;
    const char *path = getenv("FAKE_REALTIME_FILE");
    if (!path) return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    long long o; int s;
    if (fscanf(f, "%lld %d", &o, &s) == 2) { offset_s = o; synced = s; }
    fclose(f);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    if (!real_clock_gettime) real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    int r = real_clock_gettime(id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        refresh();
        ts->tv_sec += offset_s;
    }
    return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int r = clock_gettime(CLOCK_REALTIME, &ts);
    if (tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    return r;
}

time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}

int adjtimex(struct timex *buf) {
    refresh();
    return synced ? TIME_OK : TIME_ERROR;
}
"""

SITE = "ourofino"
NS = 1_000_000_000


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the wall-clock shim: apt-get install gcc"
    tmp = tmp_path_factory.mktemp("shim")
    (tmp / "realtime.c").write_text(SHIM_C)
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-o", str(tmp / "realtime.so"), str(tmp / "realtime.c")],
        check=True,
        capture_output=True,
    )
    return tmp / "realtime.so"


@dataclass
class Box:
    """A box whose wall clock the test sets: ``offset_s`` from true time, NTP synced or not."""

    clock_file: Path
    agent: AgentProcess
    collector: MqttCollector
    influx: InfluxServer
    database: str
    data_dir: Path
    sim: TicketMeterSim

    def set_clock(self, offset_s: int, *, synced: bool) -> None:
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(f"{offset_s} {int(synced)}\n")
        tmp.replace(self.clock_file)

    def points(self) -> dict[int, dict[str, object]]:
        rows = self.influx.query(self.database, 'SELECT * FROM "moisture"')
        return {k: dict(v) for k, v in points_by_seq(rows, "umid-1").items()}

    def context(self) -> str:
        return f"agent log tail:\n{self.agent.log_tail()}"

    async def emit(self, n: int) -> list[int]:
        """Print ``n`` tickets; returns the true time (ns) each was sent."""
        sent = []
        for i in range(n):
            got = await self.sim.emit(moisture_pct=round(11.0 + i / 10, 1))
            assert got is not None
            sent.append(time.time_ns())
            await _sleep(0.3)
        return sent


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@pytest.fixture
def make_box(
    tmp_path: Path,
    shim: Path,
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
) -> Iterator[Callable[..., Box]]:
    made: list[tuple[Box, PtyPort]] = []

    def make(*, offset_s: int, synced: bool, sources: str, timeout_min: float = 10.0) -> Box:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        (tmp_path / "dev").mkdir(exist_ok=True)
        link = tmp_path / "dev" / "umid-1"
        port = PtyPort(link=link)
        port.open()
        data_dir = tmp_path / "data"
        config = write_site_config(
            tmp_path / "site.toml",
            data_dir=data_dir,
            devices=[DeviceSpec("umid-1", "moisture.ticket", str(link), "recepcao")],
            mqtt_port=mosquitto.port,
            prefix=prefix,
            influx_url=influxd.url,
            database=influx_db,
            site=SITE,
        )
        text = config.read_text().replace(
            'time_sources = ["system"]',
            f"time_sources = {sources}\ntime_trust_timeout_min = {timeout_min}",
        )
        config.write_text(text)
        clock_file = tmp_path / "clock-offset"
        agent = AgentProcess(
            config,
            tmp_path / "agent.log",
            env={"LD_PRELOAD": str(shim), "FAKE_REALTIME_FILE": str(clock_file)},
        )
        collector = MqttCollector(port=mosquitto.port, prefix=prefix, client_id=f"c-{prefix}")
        box = Box(clock_file, agent, collector, influxd, influx_db, data_dir, TicketMeterSim(port))
        box.set_clock(offset_s, synced=synced)
        collector.start()
        agent.start()
        made.append((box, port))
        return box

    yield make
    for box, port in made:
        if box.agent.alive:
            box.agent.stop()
        box.collector.stop()
        port.close()


BOOT_1970 = -(int(time.time()) - 60)  # the wall clock says one minute past the epoch


async def _started(box: Box) -> None:
    def online() -> bool:
        status = box.collector.last_status("umid-1")
        return isinstance(status, dict) and status.get("state") == "online"

    await eventually(online, timeout_s=30, what="umid-1 online", context=box.context)


async def test_boot_in_1970_then_ntp_each_reading_arrives_once_with_its_true_time(
    make_box: Callable[..., Box],
) -> None:
    box: Box = make_box(offset_s=BOOT_1970, synced=False, sources='["ntp"]')
    await _started(box)
    sent = await box.emit(5)
    await eventually(
        lambda: outbox_last_id(box.data_dir) >= 5,
        timeout_s=15,
        what="5 readings accepted",
        context=box.context,
    )
    # Accepted, on disk, but held: no sink has a provisional reading.
    await _sleep(2)
    assert box.collector.count() == 0
    assert box.points() == {}
    box.set_clock(0, synced=True)  # NTP answers
    await eventually(
        lambda: len(box.points()) >= 5 and box.collector.count() >= 5,
        timeout_s=30,
        what="5 readings in InfluxDB and on MQTT",
        context=box.context,
    )
    points = box.points()
    assert sorted(points) == [1, 2, 3, 4, 5]
    assert box.collector.duplicates == 0
    for seq, true_ns in zip(range(1, 6), sent, strict=True):
        # Re-stamped with the trusted time: within a second of when the ticket was sent.
        assert abs(int(str(points[seq]["time"])) - true_ns) < NS, (seq, points[seq])
        doc = box.collector.readings[("umid-1", seq)]
        assert doc["ts"] == points[seq]["time"]
        assert "time_quality" not in doc
    assert points[1].get("time_quality") is None


async def test_boot_in_1970_and_no_source_readings_are_estimated_never_1970(
    make_box: Callable[..., Box],
) -> None:
    box: Box = make_box(offset_s=BOOT_1970, synced=False, sources='["ntp"]', timeout_min=0.1)
    await _started(box)
    await box.emit(3)
    await eventually(
        lambda: len(box.points()) >= 3,
        timeout_s=40,
        what="3 estimated readings in InfluxDB after the 6 s timeout",
        context=box.context,
    )
    points = box.points()
    assert sorted(points) == [1, 2, 3]
    for point in points.values():
        assert point["time_quality"] == "estimated"
        assert int(str(point["time"])) >= FLOOR_NS
    docs = box.collector.of("umid-1")
    assert [d["time_quality"] for d in docs] == ["estimated"] * 3


async def test_a_clock_stepped_back_an_hour_dates_nothing_an_hour_back(
    make_box: Callable[..., Box],
) -> None:
    box: Box = make_box(offset_s=0, synced=True, sources='["ntp"]')
    await _started(box)
    before = await box.emit(3)
    box.set_clock(-3600, synced=False)  # stepped by hand: the kernel is no longer synced
    await _sleep(1)
    after = await box.emit(3)
    await eventually(
        lambda: len(box.points()) >= 6,
        timeout_s=30,
        what="6 readings in InfluxDB",
        context=box.context,
    )
    points = box.points()
    times = [int(str(points[seq]["time"])) for seq in range(1, 7)]
    assert times == sorted(times)
    assert len(set(times)) == 6
    for got, true_ns in zip(times, before + after, strict=True):
        assert abs(got - true_ns) < NS
