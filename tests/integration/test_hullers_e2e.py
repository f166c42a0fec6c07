"""Hullers end to end: RTU units on a pty → the real agent process → real Mosquitto and InfluxDB.

A bag counter and an hour meter (Autonics CT units, ``simulators.rtu``) share one RS-485
bus on a pty; the agent runs as ``python -m coffee_telemetry.agent.cli run -c site.toml``
and polls them with pymodbus. ``coffee-telemetry maintenance done|status`` runs as its own
process while the agent runs, as an operator would run it on the box.

The first test follows a huller through a shift: ``huller`` readings on
``<prefix>/<site>/<huller>/reading`` and in InfluxDB, then a service recorded from the
command line arriving as a ``maintenance`` event on ``.../event``, while refused
commands write nothing. The second one wraps the counter, resets it from the front
panel, SIGKILLs the agent while it counts and replaces the unit while the agent is down:
the totals never go backwards and add up to the PVs each drop threw away plus the PV now.
The third records a service ahead of time (``--at``), which must not drag the huller's
later readings to that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from coffee_telemetry.agent.hullers.store import MaintenanceStore
from coffee_telemetry.drivers.counter_autonics_ct import Mode
from coffee_telemetry.simulators.pty import open_pty_port
from coffee_telemetry.simulators.rtu import CounterUnitSim, RtuBusSim, serve_rtu_bus
from tests.integration.harness import (
    ROOT,
    AgentProcess,
    MqttCollector,
    eventually,
    huller_toml,
    outbox_last_id,
    write_site_config,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

SITE = "ourofino"
ZONE = ZoneInfo("America/Sao_Paulo")  # the [site] default
HULLER = "desc-1"
STATION = "descascamento"
COUNTER_ADDR = 1  # as huller_toml configures them
TIMER_ADDR = 2
POLL_S = 0.25
#: Service tasks as (id, name, interval_h); warn_before_h stays at its default of 10 h.
TASKS = (("facas", "Troca das facas", 300.0), ("lubrificacao", "Lubrificação", 100.0))
#: Fields every ``huller`` reading has, and those it has once the hour meter was read.
BASE_FIELDS = {"running", "bags_total", "bags_today", "bags_per_hour", "counter_pv"}
HOUR_FIELDS = {"hours_total", "hours_today", "timer_pv"}


def write_huller_site(
    path: Path,
    *,
    data_dir: Path,
    bus_port: str,
    mqtt_port: int,
    prefix: str,
    influx_url: str,
    database: str,
    bags_per_pulse: float,
    tasks: Sequence[tuple[str, str, float]],
) -> Path:
    """The harness' site file (no ``[[devices]]``) plus one bus and one huller."""
    write_site_config(
        path,
        data_dir=data_dir,
        devices=[],
        mqtt_port=mqtt_port,
        prefix=prefix,
        influx_url=influx_url,
        database=database,
        site=SITE,
    )
    lines = huller_toml(
        bus_port,
        huller=HULLER,
        station=STATION,
        poll_interval_s=POLL_S,
        bags_per_pulse=bags_per_pulse,
        tasks=[{"id": t, "name": n, "interval_h": h} for t, n, h in tasks],
    )
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


@dataclass
class Rig:
    """The agent with one huller on a simulated bus, and what watches the sinks."""

    config: Path
    data_dir: Path
    agent: AgentProcess
    collector: MqttCollector
    events: MqttCollector  # subscribed to the huller's event topic only
    influx: InfluxServer
    database: str
    bus: RtuBusSim

    def context(self) -> str:
        return f"agent log tail:\n{self.agent.log_tail()}"

    def docs(self, measurement: str) -> list[dict[str, object]]:
        """The huller's documents of one measurement on MQTT, in sequence order."""
        return [d for d in self.collector.of(HULLER) if d["measurement"] == measurement]

    def resets(self) -> list[dict[str, object]]:
        """``counter_reset`` events from the event topic, one per reset, oldest first.

        A reset may be sent twice (a crash between accepting and marking it): the
        resend has the same time and fields and another ``seq``.
        """
        by_ts: dict[int, dict[str, object]] = {}
        for (_, _seq), doc in sorted(self.events.readings.items()):
            if doc["measurement"] == "counter_reset":
                previous = by_ts.setdefault(ts(doc), doc)
                assert fields(previous) == fields(doc), "a resent reset must be identical"
        return [by_ts[k] for k in sorted(by_ts)]

    def rows(self, measurement: str) -> list[dict[str, object]]:
        """The huller's points of one measurement in InfluxDB, in time order."""
        return self.influx.query(
            self.database, f'SELECT * FROM "{measurement}" WHERE "device" = \'{HULLER}\''
        )

    def last_huller(self) -> dict[str, object] | None:
        docs = self.docs("huller")
        return docs[-1] if docs else None

    async def online(self, *, after_ns: int = 0) -> None:
        """Wait for the huller's status to say online (``after_ns``: ignore older ones).

        After a restart the retained status of the killed process still says online.
        """

        def check() -> bool:
            status = self.collector.last_status(HULLER, after_ns=after_ns)
            return isinstance(status, dict) and status.get("state") == "online"

        await eventually(check, timeout_s=30, what=f"{HULLER} online", context=self.context)


def fields(doc: dict[str, object]) -> dict[str, object]:
    """A document's fields."""
    value = doc["fields"]
    assert isinstance(value, dict)
    return value


def num(doc: dict[str, object], key: str) -> float:
    """A numeric field of a document."""
    value = fields(doc)[key]
    assert not isinstance(value, bool), (key, value)
    assert isinstance(value, int | float), (key, value)
    return float(value)


def ts(doc: dict[str, object]) -> int:
    value = doc["ts"]
    assert isinstance(value, int)
    return value


def seq(doc: dict[str, object]) -> int:
    value = doc["seq"]
    assert isinstance(value, int)
    return value


@contextlib.asynccontextmanager
async def huller_rig(
    tmp_path: Path,
    *,
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    database: str,
    prefix: str,
    units: Sequence[CounterUnitSim],
    bags_per_pulse: float = 1.0,
    tasks: Sequence[tuple[str, str, float]] = (),
) -> AsyncIterator[Rig]:
    """Serve ``units`` on a pty bus, start the collectors and the agent; tear all down."""
    (tmp_path / "dev").mkdir()
    data_dir = tmp_path / "data"
    with open_pty_port(link=tmp_path / "dev" / "ttyRS485") as pty:
        config = write_huller_site(
            tmp_path / "site.toml",
            data_dir=data_dir,
            bus_port=pty.path,
            mqtt_port=mosquitto.port,
            prefix=prefix,
            influx_url=influxd.url,
            database=database,
            bags_per_pulse=bags_per_pulse,
            tasks=tasks,
        )
        collector = MqttCollector(port=mosquitto.port, prefix=prefix, client_id=f"c-{prefix}")
        # "<topic>/#" also matches "<topic>" itself: this one sees only the event topic.
        events = MqttCollector(
            port=mosquitto.port,
            prefix=f"{prefix}/{SITE}/{HULLER}/event",
            client_id=f"e-{prefix}",
        )
        agent = AgentProcess(config, tmp_path / "agent.log")
        async with serve_rtu_bus(pty, units) as bus:
            rig = Rig(config, data_dir, agent, collector, events, influxd, database, bus)
            collector.start()
            events.start()
            try:
                agent.start()
                await rig.online()
                yield rig
            finally:
                try:
                    if agent.alive:
                        agent.stop()
                finally:
                    collector.stop()
                    events.stop()


@dataclass(frozen=True)
class Cli:
    """What one ``coffee-telemetry`` command did."""

    code: int
    out: str
    err: str


async def cli(rig: Rig, *args: str) -> Cli:
    """Run ``coffee-telemetry ARGS`` (its entry point, as ``AgentProcess`` does) to the end.

    The event loop keeps serving the simulated bus meanwhile.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coffee_telemetry.agent.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"coffee-telemetry {' '.join(args)} did not finish") from None
    assert proc.returncode is not None
    return Cli(proc.returncode, out.decode(), err.decode())


async def maintenance_status(rig: Rig) -> dict[str, dict[str, object]]:
    """``maintenance status --json``: the huller's tasks by id (and ``_huller``)."""
    got = await cli(rig, "maintenance", "status", "-c", str(rig.config), "--json")
    assert got.code == 0, got.err
    doc = json.loads(got.out)
    assert doc["site"] == SITE
    (huller,) = doc["hullers"]
    assert huller["id"] == HULLER
    tasks: dict[str, dict[str, object]] = {t["task"]: t for t in huller["tasks"]}
    tasks["_huller"] = huller
    return tasks


def service_rows(rig: Rig) -> int:
    """Service records in the maintenance database."""
    with MaintenanceStore.open(rig.data_dir / "maintenance.sqlite3") as store:
        return len(store.services())


def same_local_day(docs: Sequence[dict[str, object]]) -> bool:
    """Whether the documents all fall on one local day (``*_today`` restart at midnight)."""
    return len({datetime.fromtimestamp(ts(d) / 1e9, ZONE).date() for d in docs}) == 1


def tags(doc: dict[str, object]) -> dict[str, object]:
    """A document's tags."""
    value = doc["tags"]
    assert isinstance(value, dict)
    return value


def check_points(docs: Sequence[dict[str, object]], rows: Sequence[dict[str, object]]) -> None:
    """Each MQTT document is one InfluxDB point: same time, fields and tags (by ``seq``)."""
    by_seq = {int(str(r["seq"])): r for r in rows}
    for doc in docs:
        row = by_seq.get(seq(doc))
        assert row is not None, f"seq {seq(doc)} is not in InfluxDB"
        assert row["time"] == ts(doc)
        for key, value in fields(doc).items():
            assert row[key] == value, (seq(doc), key, row[key], value)
        for key, value in tags(doc).items():
            assert row[key] == value, (seq(doc), key, row[key], value)


async def test_huller_readings_and_a_service_from_the_cli(
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    mqtt_prefix: str,
    tmp_path: Path,
) -> None:
    counter = CounterUnitSim(COUNTER_ADDR, pv=1000, rate_per_s=5)
    timer = CounterUnitSim(TIMER_ADDR, mode=Mode.TIMER, pv=95 * 3600)  # 95 h on the meter
    async with huller_rig(
        tmp_path,
        mosquitto=mosquitto,
        influxd=influxd,
        database=influx_db,
        prefix=mqtt_prefix,
        units=[counter, timer],
        bags_per_pulse=2.0,
        tasks=TASKS,
    ) as rig:
        # The huller runs: 5 pulses a second, 2 bags a pulse, one second a second on the meter.
        def ran_a_while() -> bool:
            docs = rig.docs("huller")
            return (
                len(docs) >= 2
                and ts(docs[-1]) - ts(docs[0]) >= 4_000_000_000
                and any(fields(d)["running"] is True for d in docs)
            )

        await eventually(
            ran_a_while, timeout_s=30, what="4 s of a running huller", context=rig.context
        )
        while_running = rig.docs("huller")[-1]
        # It stops: the PVs stand still, and once the meter stops moving it is not running.
        counter.set_running(False)
        timer.set_running(False)
        bags_pv, hours_pv = counter.pv, timer.pv

        def stopped() -> bool:
            last = rig.last_huller()
            return (
                last is not None
                and fields(last).get("counter_pv") == bags_pv
                and fields(last).get("timer_pv") == hours_pv
                and fields(last)["running"] is False
            )

        await eventually(stopped, timeout_s=20, what="the stopped huller", context=rig.context)
        hours = hours_pv / 3600
        docs = rig.docs("huller")

        # -- the huller readings, on <prefix>/<site>/<huller>/reading ------------------------
        first_hours = next(i for i, d in enumerate(docs) if "hours_total" in fields(d))
        assert first_hours <= 2, "the hour meter is read from the first polls on"
        for i, doc in enumerate(docs):
            assert doc["kind"] == "reading"
            assert tags(doc) == {"site": SITE, "device": HULLER, "station": STATION}
            keys = set(fields(doc))
            assert keys == (BASE_FIELDS | HOUR_FIELDS if i >= first_hours else BASE_FIELDS)
            assert isinstance(fields(doc)["running"], bool)
            assert isinstance(fields(doc)["counter_pv"], int)
            assert num(doc, "bags_total") == num(doc, "counter_pv") * 2.0
            assert num(doc, "bags_per_hour") >= 0.0
            if i >= first_hours:
                assert isinstance(fields(doc)["timer_pv"], int)
                assert num(doc, "hours_total") == pytest.approx(num(doc, "timer_pv") / 3600)
        assert fields(docs[0])["bags_per_hour"] == 0.0  # one sample is no rate
        assert fields(docs[0])["running"] is False  # advances are seen between two polls
        assert [ts(d) for d in docs] == sorted({ts(d) for d in docs})
        totals = [num(d, "bags_total") for d in docs]
        assert totals == sorted(totals)
        with_hours = docs[first_hours:]
        hour_totals = [num(d, "hours_total") for d in with_hours]
        assert hour_totals == sorted(hour_totals)
        if same_local_day(docs):
            # Today starts at the first PV the agent read (what was on the unit is history).
            assert {num(d, "bags_total") - num(d, "bags_today") for d in docs} == {totals[0]}
            starts = [num(d, "hours_total") - num(d, "hours_today") for d in with_hours]
            assert max(starts) - min(starts) < 1e-5
            assert 95.0 <= starts[0] <= hour_totals[0]
        # 5 pulses/s x 2 bags = 36000 bags/h, measured over the seconds the agent watched.
        assert num(while_running, "bags_per_hour") == pytest.approx(36_000, rel=0.3)
        assert num(docs[-1], "bags_total") == bags_pv * 2.0
        assert num(docs[-1], "hours_total") == pytest.approx(hours)

        # -- the same points in InfluxDB ----------------------------------------------------
        async def all_in_influx() -> bool:
            have = {int(str(r["seq"])) for r in rig.rows("huller")}
            return {seq(d) for d in docs} <= have

        await eventually(all_in_influx, timeout_s=20, what="huller points", context=rig.context)
        check_points(docs, rig.rows("huller"))

        # -- maintenance status before any service -----------------------------------------
        status = await maintenance_status(rig)
        assert status["_huller"]["hours_total"] == round(hours, 3)
        assert status["_huller"]["bags_total"] == bags_pv * 2.0
        lub, facas = status["lubrificacao"], status["facas"]
        # Never serviced: counts from hour 0, so 95 h of 100 h is within the 10 h warning.
        assert lub["state"] == "due"
        assert lub["hours_since"] == pytest.approx(hours, abs=1e-3)
        assert lub["last_service"] is None
        assert facas["state"] == "ok"
        assert facas["remaining_h"] == pytest.approx(300 - hours, abs=1e-3)

        # -- refused commands write nothing -------------------------------------------------
        refused = (
            (("desc-9", "facas"), "unknown huller 'desc-9'; hullers: desc-1"),
            (
                (HULLER, "polimento"),
                "huller 'desc-1' has no task 'polimento'; its tasks: facas, lubrificacao",
            ),
        )
        for args, message in refused:
            got = await cli(rig, "maintenance", "done", "-c", str(rig.config), *args, "--note", "x")
            assert got.code == 2, got
            assert message in got.err
            assert got.out == ""
        assert service_rows(rig) == 0

        # -- a service recorded while the agent runs ---------------------------------------
        note = "troca do óleo, graxa nos mancais"
        before = time.time_ns()
        got = await cli(
            rig,
            "maintenance",
            "done",
            "-c",
            str(rig.config),
            HULLER,
            "lubrificacao",
            "--note",
            note,
            "--by",
            "ana",
        )
        after = time.time_ns()
        assert got.code == 0, got
        assert "Recorded service #1: desc-1 / lubrificacao (Lubrificação)" in got.out
        assert f"at {hours:.1f} running hours, by ana." in got.out

        def service_events() -> list[dict[str, object]]:
            return [d for d in rig.events.readings.values() if d["measurement"] == "maintenance"]

        await eventually(
            lambda: bool(service_events()),
            timeout_s=20,
            what="the maintenance event on the event topic",
            context=rig.context,
        )
        (event,) = service_events()
        assert event["kind"] == "event"
        assert event["device"] == HULLER
        assert tags(event) == {"site": SITE, "device": HULLER, "task": "lubrificacao"}
        assert fields(event) == {
            "hours_at": pytest.approx(hours),
            "interval_h": 100.0,
            "note": note,
            "by": "ana",
            "service_id": 1,
        }
        assert before <= ts(event) <= after  # when it was done, not when it was published

        # Right after a service is picked up, the status of every task of the huller.
        def status_after() -> dict[str, dict[str, object]]:
            later = [d for d in rig.docs("maintenance_status") if seq(d) > seq(event)]
            return {str(tags(d)["task"]): d for d in later}

        await eventually(
            lambda: set(status_after()) == {"facas", "lubrificacao"},
            timeout_s=20,
            what="maintenance_status of both tasks",
            context=rig.context,
        )
        task_docs = status_after()
        assert fields(task_docs["lubrificacao"]) == {
            "hours_since": 0.0,  # stopped: no running hours since the service
            "interval_h": 100.0,
            "remaining_h": 100.0,
            "state": "ok",
            "due": False,
            "overdue": False,
        }
        assert fields(task_docs["facas"])["state"] == "ok"
        assert num(task_docs["facas"], "hours_since") == pytest.approx(hours, abs=1e-5)
        for task_id, doc in task_docs.items():
            assert doc["kind"] == "reading"
            assert tags(doc) == {"site": SITE, "device": HULLER, "task": task_id}

        status = await maintenance_status(rig)
        lub, facas = status["lubrificacao"], status["facas"]
        assert lub["state"] == "ok"
        assert lub["hours_since"] == 0.0
        assert lub["remaining_h"] == 100.0
        assert lub["last_service"] == {
            "id": 1,
            "done_at_ns": ts(event),
            "hours_at": round(hours, 3),
            "note": note,
            "by": "ana",
        }
        assert facas["state"] == "ok"
        assert facas["last_service"] is None

        async def events_in_influx() -> bool:
            return bool(rig.rows("maintenance")) and len(rig.rows("maintenance_status")) >= 2

        await eventually(events_in_influx, timeout_s=20, what="maintenance points")
        (row,) = rig.rows("maintenance")
        check_points([event], [row])
        check_points(list(task_docs.values()), rig.rows("maintenance_status"))

        # One service recorded, one event: nothing of the refused commands anywhere.
        assert service_rows(rig) == 1
        everything = list(rig.collector.readings.values())
        assert [d for d in everything if d["measurement"] == "maintenance"] == [event]
        assert {d["device"] for d in everything} == {HULLER}

        assert rig.agent.stop() == 0
        # Everything the agent accepted arrived once, in one sequence.
        await eventually(
            lambda: len(rig.collector.readings) == outbox_last_id(rig.data_dir),
            timeout_s=10,
            what="every accepted record on MQTT",
        )
        assert [seq(d) for d in rig.collector.of(HULLER)] == list(
            range(1, len(rig.collector.readings) + 1)
        )
        assert rig.collector.last_status("agent") == "offline"


@pytest.mark.slow
async def test_totals_survive_wrap_reset_sigkill_and_a_replaced_unit(
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    mqtt_prefix: str,
    tmp_path: Path,
) -> None:
    # Stopped 10 bags short of the wrap until the agent has read it.
    counter = CounterUnitSim(COUNTER_ADDR, pv=999_990, rate_per_s=20, running=False)
    timer = CounterUnitSim(TIMER_ADDR, mode=Mode.TIMER, pv=3600)
    async with huller_rig(
        tmp_path,
        mosquitto=mosquitto,
        influxd=influxd,
        database=influx_db,
        prefix=mqtt_prefix,
        units=[counter, timer],
    ) as rig:

        def pv_seen(check: Callable[[int], bool], *, after: int = 0) -> Callable[[], bool]:
            # A huller reading later than seq ``after`` whose counter PV passes ``check``.
            def seen() -> bool:
                return any(
                    seq(d) > after and check(int(num(d, "counter_pv"))) for d in rig.docs("huller")
                )

            return seen

        async def resets(n: int) -> list[dict[str, object]]:
            await eventually(
                lambda: len(rig.resets()) >= n,
                timeout_s=20,
                what=f"{n} counter_reset events",
                context=rig.context,
            )
            return rig.resets()

        await eventually(pv_seen(lambda pv: pv == 999_990), timeout_s=20, what="PV 999990")
        # The wrap after 999999.
        counter.set_running(True)
        (wrap,) = await resets(1)
        # A front-panel reset throws away what was counted since; it is seen as one when
        # that is more than what the unit counts until the next poll.
        await eventually(
            pv_seen(lambda pv: pv > 60, after=seq(wrap)), timeout_s=20, what="60 bags after wrap"
        )
        counter.front_panel_reset()
        wrap, panel = await resets(2)
        await eventually(
            pv_seen(lambda pv: pv > 20, after=seq(panel)), timeout_s=20, what="20 bags after reset"
        )

        # SIGKILL while it counts; the unit is replaced while the agent is down (the new
        # one starts near 0, below anything the old one showed).
        rig.agent.kill()
        killed = time.time_ns()
        replacement = CounterUnitSim(COUNTER_ADDR, pv=3, rate_per_s=20, running=False)
        rig.bus.units[COUNTER_ADDR] = replacement
        await asyncio.sleep(0.5)
        restarted = time.time_ns()
        rig.agent.start()
        await rig.online(after_ns=restarted)
        wrap, panel, replaced = await resets(3)
        replacement.set_running(True)
        await asyncio.sleep(1.0)
        replacement.set_running(False)
        final_pv = replacement.pv
        assert final_pv > 3
        await eventually(
            pv_seen(lambda pv: pv == final_pv, after=seq(replaced)),
            timeout_s=20,
            what=f"the new unit's PV {final_pv}",
            context=rig.context,
        )
        assert rig.agent.stop() == 0
        accepted = outbox_last_id(rig.data_dir)
        await eventually(
            lambda: len(rig.collector.readings) == accepted,
            timeout_s=10,
            what=f"all {accepted} accepted records on MQTT",
            context=rig.context,
        )

        # -- the resets ---------------------------------------------------------------------
        for doc in (wrap, panel, replaced):
            assert doc["kind"] == "event"
            assert tags(doc) == {"site": SITE, "device": HULLER, "station": STATION}
            assert fields(doc)["unit"] == "counter"
            assert num(doc, "pv") < num(doc, "previous_pv")
        assert num(wrap, "previous_pv") >= 999_990
        assert num(wrap, "pv") < 100
        assert num(panel, "previous_pv") > 60
        assert num(replaced, "pv") == 3
        drops = [int(num(d, "previous_pv")) for d in (wrap, panel, replaced)]
        # Each reset's offset is what every drop so far threw away.
        assert [num(d, "offset") for d in (wrap, panel, replaced)] == [
            sum(drops[:1]),
            sum(drops[:2]),
            sum(drops),
        ]

        # -- the totals on MQTT, in sequence order ------------------------------------------
        docs = rig.docs("huller")
        assert [seq(d) for d in rig.collector.of(HULLER)] == list(range(1, accepted + 1))
        before_kill = [d for d in docs if ts(d) < killed]
        after_restart = [d for d in docs if ts(d) > restarted]
        assert len(before_kill) + len(after_restart) == len(docs)
        assert before_kill
        assert after_restart
        # What the replacement's first poll threw away is at least what was last published.
        assert num(replaced, "previous_pv") >= num(before_kill[-1], "counter_pv")
        totals = [num(d, "bags_total") for d in docs]
        assert totals == sorted(totals), "bags_total went backwards"
        hours = [num(d, "hours_total") for d in docs if "hours_total" in fields(d)]
        assert hours == sorted(hours), "hours_total went backwards"
        assert num(docs[-1], "counter_pv") == final_pv
        assert totals[-1] == sum(drops) + final_pv  # bags_per_pulse = 1

        # -- and in InfluxDB ----------------------------------------------------------------
        async def all_in_influx() -> bool:
            return {int(str(r["seq"])) for r in rig.rows("huller")} == {seq(d) for d in docs}

        await eventually(all_in_influx, timeout_s=20, what="huller points", context=rig.context)
        rows = rig.rows("huller")  # in time order
        check_points(docs, rows)
        influx_totals = [float(str(r["bags_total"])) for r in rows]
        assert influx_totals == sorted(influx_totals), "bags_total went backwards in InfluxDB"
        assert influx_totals[-1] == sum(drops) + final_pv
        reset_rows = rig.rows("counter_reset")
        # A resent reset is the same point (same time and tags): one point per reset.
        assert [r["time"] for r in reset_rows] == [ts(d) for d in (wrap, panel, replaced)]
        for doc, row in zip((wrap, panel, replaced), reset_rows, strict=True):
            assert {k: row[k] for k in fields(doc)} == fields(doc)

        # The command line reads the same total from the store.
        status = await maintenance_status(rig)
        assert status["_huller"]["bags_total"] == sum(drops) + final_pv


async def test_a_service_recorded_ahead_keeps_readings_on_time(
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    mqtt_prefix: str,
    tmp_path: Path,
) -> None:
    # ``done --at`` may be up to AT_SKEW_S ahead (clock skew); the event keeps that time,
    # but the huller's readings after it must keep theirs (regression: they were stamped
    # one nanosecond apart after the service's time until the clock caught up).
    counter = CounterUnitSim(COUNTER_ADDR, pv=500, rate_per_s=5)
    timer = CounterUnitSim(TIMER_ADDR, mode=Mode.TIMER, pv=3600)
    async with huller_rig(
        tmp_path,
        mosquitto=mosquitto,
        influxd=influxd,
        database=influx_db,
        prefix=mqtt_prefix,
        units=[counter, timer],
        tasks=TASKS,
    ) as rig:
        ahead = datetime.now(ZONE).replace(microsecond=0, tzinfo=None) + timedelta(minutes=2)
        got = await cli(
            rig,
            "maintenance",
            "done",
            "-c",
            str(rig.config),
            HULLER,
            "facas",
            "--at",
            ahead.isoformat(),
        )
        assert got.code == 0, got

        def service_events() -> list[dict[str, object]]:
            return [d for d in rig.events.readings.values() if d["measurement"] == "maintenance"]

        await eventually(
            lambda: bool(service_events()), timeout_s=20, what="the event", context=rig.context
        )
        (event,) = service_events()
        assert ts(event) == int(ahead.replace(tzinfo=ZONE).timestamp()) * 1_000_000_000

        def later() -> list[dict[str, object]]:
            return [d for d in rig.collector.of(HULLER) if seq(d) > seq(event)]

        await eventually(lambda: len(later()) >= 5, timeout_s=20, what="readings after the event")
        now = time.time_ns()
        assert all(ts(d) <= now for d in later()), "readings stamped at the service's time"
