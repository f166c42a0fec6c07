"""The digest's facts, gathered by ``agent.digestfacts`` from real stores in a temp dir.

``open_site`` is a site with something to tell in every section: history with lots
weighed today (one wet by its mean, one by an open alert, one dry, one from yesterday),
a huller with one task due and one overdue, a meter that never came online, a sink with
records to deliver. The stores are the ones the agent opens, filled the way the agent
fills them; the digest's end-to-end test (``test_digest_email``) uses the same site.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from coffee_telemetry.agent.alerts.service import AlertService
from coffee_telemetry.agent.cli.maintenance import print_status
from coffee_telemetry.agent.config import Config, parse_config
from coffee_telemetry.agent.digestfacts import digest_facts_provider
from coffee_telemetry.agent.health import DeviceState, Health
from coffee_telemetry.agent.history.service import AsyncHistory, open_history
from coffee_telemetry.agent.hullers.service import HullerService
from coffee_telemetry.agent.hullers.store import AsyncMaintenanceStore, open_maintenance_store
from coffee_telemetry.agent.hullers.tasks import HullerState
from coffee_telemetry.agent.notify.digest import DigestFactsProvider
from coffee_telemetry.agent.outbox.store import Outbox, open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.drivers.counter_autonics_ct import TotalState
from tests.fakes import stage

ZONE = ZoneInfo("America/Sao_Paulo")
NS = 1_000_000_000


def local_ns(text: str) -> int:
    """``2026-11-30 10:41`` in São Paulo time, as UTC ns."""
    return int(datetime.fromisoformat(text).replace(tzinfo=ZONE).timestamp()) * NS


#: When the digest is made: 10:00 site time.
NOW = local_ns("2026-11-30 10:00")


def site_config(tmp: Path) -> Config:
    """One bus, two hullers (desc-2's hours never read), conilon wet from 13 %."""
    return parse_config(
        {
            "site": {"id": "ourofino", "timezone": "America/Sao_Paulo"},
            "agent": {"data_dir": str(tmp / "data")},
            "buses": [{"id": "rs485", "port": str(tmp / "rs485")}],
            "hullers": [
                {
                    "id": "desc-1",
                    "name": "Descascador <1>",
                    "bus": "rs485",
                    "bag_counter": 1,
                    "hour_meter": 2,
                    "hour_meter_unit": "s",
                    "tasks": [
                        {"id": "oleo", "name": "Troca de óleo", "interval_h": 250},
                        {"id": "correia", "name": "Correia", "interval_h": 100},
                        {"id": "filtro", "name": "Filtro", "interval_h": 1000},
                    ],
                },
                {
                    "id": "desc-2",
                    "bus": "rs485",
                    "bag_counter": 3,
                    "tasks": [{"id": "limpeza", "interval_h": 8, "warn_before_h": 1}],
                },
            ],
            "alerts": {"wet_lot": {"k": 1, "n": 1, "thresholds_pct": {"conilon": 13.0}}},
        }
    )


def moisture(at: str, lot: str, pct: float, product: str = "arabica") -> Reading:
    ts = local_ns(at)
    return Reading(
        ts_ns=ts,
        seq=ts // NS,
        device="umid-1",
        measurement="moisture",
        fields={"moisture_pct": pct},
        tags={"site": "ourofino", "device": "umid-1", "station": "recepcao", "lot": lot,
              "product": product},
    )  # fmt: skip


@dataclass
class Site:
    """The open stores and services, and the provider made from them."""

    cfg: Config
    health: Health
    outbox: Outbox
    history: AsyncHistory
    maintenance: AsyncMaintenanceStore
    hullers: HullerService
    alerts: AlertService
    provider: DigestFactsProvider


@asynccontextmanager
async def open_site(tmp: Path) -> AsyncIterator[Site]:
    """The site of the module docstring, open for the duration."""
    cfg = site_config(tmp)
    cfg.agent.data_dir.mkdir(parents=True)
    health = Health(clock_ns=lambda: NOW)
    async with AsyncExitStack() as stack:
        outbox = await stack.enter_async_context(
            open_outbox(cfg.outbox_path, sinks=["influx", "mqtt"], clock_ns=lambda: NOW)
        )
        history = await stack.enter_async_context(
            open_history(cfg.history_path, clock_ns=lambda: NOW)
        )
        maintenance = await stack.enter_async_context(open_maintenance_store(cfg.maintenance_path))
        stamper = Stamper(clock_ns=lambda: NOW)
        accept = stage(outbox.accept, stamper)
        alerts = AlertService(
            cfg=cfg.alerts,
            site=cfg.site.id,
            state_path=tmp / "alerts.json",
            record=accept.record,
            outbox=outbox,
            health=health,
            clock_ns=lambda: NOW,
        )
        readings = [
            moisture("2026-11-29 17:00", "L-ONTEM", 20.0),  # yesterday: not today's
            moisture("2026-11-30 07:00", "L-SECO", 11.0),
            moisture("2026-11-30 07:05", "L-SECO", 11.6),
            moisture("2026-11-30 08:00", "L-CONILON", 13.2, "conilon"),
            moisture("2026-11-30 08:05", "L-CONILON", 12.8, "conilon"),
            moisture("2026-11-30 09:00", "L<&>", 10.0),
            moisture("2026-11-30 09:05", "L<&>", 14.0),  # mean 12 %, but the alert fired
        ]
        for reading in readings:
            history.add(reading)
        await history.flush()
        alerts.on_reading(readings[-1])
        # Three records committed; the MQTT sink has them all, InfluxDB none.
        ids = await outbox.accept(readings[-3:])
        await outbox.ack("mqtt", max(ids))
        health.add_sink("influx").last_error = "connection refused"
        health.add_sink("mqtt")
        health.add_device("umid-1", driver="moisture.ticket", port="/dev/umid-1")
        health.set_device_state("umid-1", DeviceState.ONLINE)
        health.add_device("umid-2", driver="moisture.ticket", port="/dev/umid-2", station="secador")
        # desc-1 ran 245 h: "oleo" (250 h) is due, "correia" (100 h, done at 100 h) overdue.
        await maintenance.save_state(
            "desc-1",
            HullerState(counter=TotalState(last_pv=10), timer=TotalState(last_pv=245 * 3600)),
            at_ns=NOW,
        )
        await maintenance.record_service(
            "desc-1", "correia", at_ns=local_ns("2026-10-01 09:00"), hours_at=100.0, by="Zé"
        )
        hullers = HullerService(
            cfg=cfg, store=maintenance, accept=accept.accept, health=health, clock_ns=lambda: NOW
        )
        await hullers.restore()
        for huller in ("desc-1", "desc-2"):  # their buses are not polled here
            health.set_device_state(huller, DeviceState.ONLINE)
        provider = digest_facts_provider(
            cfg=cfg, health=health, outbox=outbox, history=history, hullers=hullers,
            maintenance=maintenance, alerts=alerts,
        )  # fmt: skip
        yield Site(cfg, health, outbox, history, maintenance, hullers, alerts, provider)


async def test_the_provider_gathers_every_section_from_the_stores(tmp_path: Path) -> None:
    async with open_site(tmp_path) as site:
        facts = await site.provider(NOW)
    assert facts.lots is not None
    lots = {v.lot: v for v in facts.lots}
    assert set(lots) == {"L-SECO", "L-CONILON", "L<&>"}  # not yesterday's
    dry, conilon, alerted = lots["L-SECO"], lots["L-CONILON"], lots["L<&>"]
    assert (dry.count, dry.max_pct, dry.threshold_pct, dry.wet) == (2, 11.6, 12.5, False)
    assert dry.mean_pct == pytest.approx(11.3)
    assert (dry.station, dry.product) == ("recepcao", "arabica")
    # Conilon's own threshold (13 %): a mean of exactly 13 % is wet.
    assert (conilon.threshold_pct, conilon.wet) == (13.0, True)
    assert conilon.mean_pct == pytest.approx(13.0)
    # A mean under the threshold, but the wet-lot rule fired on it: wet, as on the page.
    assert alerted.mean_pct == pytest.approx(12.0)
    assert alerted.wet
    assert facts.tasks is not None
    tasks = {t.task: t for t in facts.tasks}
    assert set(tasks) == {"oleo", "correia"}  # "filtro" is fine; desc-2's hours unknown
    oleo, correia = tasks["oleo"], tasks["correia"]
    assert (oleo.huller, oleo.huller_name, oleo.name) == (
        "desc-1",
        "Descascador <1>",
        "Troca de óleo",
    )
    assert (oleo.overdue, oleo.last_done_ns) == (False, None)
    assert (oleo.hours_since, oleo.interval_h) == pytest.approx((245.0, 250.0))
    assert correia.overdue
    assert correia.hours_since == pytest.approx(145.0)
    assert correia.last_done_ns == local_ns("2026-10-01 09:00")
    assert facts.offline is not None
    assert [(d.device, d.station, d.last_seen_ns) for d in facts.offline] == [
        ("umid-2", "secador", None)
    ]
    assert facts.backlogs is not None
    assert [(b.sink, b.records, b.error) for b in facts.backlogs] == [
        ("influx", 3, "connection refused")  # mqtt delivered everything: not listed
    ]


async def test_the_tasks_agree_with_maintenance_status(tmp_path: Path) -> None:
    async with open_site(tmp_path) as site:
        facts = await site.provider(NOW)
    out = io.StringIO()
    assert print_status(site.cfg, out, as_json=True) == 0
    doc = json.loads(out.getvalue())
    due = {
        (h["id"], t["task"]): t["state"]
        for h in doc["hullers"]
        for t in h["tasks"]
        if t["state"] in ("due", "overdue")
    }
    assert facts.tasks is not None
    assert {(t.huller, t.task): "overdue" if t.overdue else "due" for t in facts.tasks} == due


async def test_a_store_that_fails_leaves_only_its_section_unavailable(tmp_path: Path) -> None:
    async with open_site(tmp_path) as site, open_history(tmp_path / "gone.sqlite3") as gone:
        pass
    # The site's stores are closed now; the health still answers.
    provider = digest_facts_provider(
        cfg=site.cfg, health=site.health, outbox=None, history=gone, hullers=site.hullers,
        maintenance=site.maintenance, alerts=None,
    )  # fmt: skip
    facts = await provider(NOW)
    assert facts.lots is None
    assert facts.tasks is None
    assert facts.backlogs is None  # no outbox
    assert facts.offline is not None
    assert [d.device for d in facts.offline] == ["umid-2"]


async def test_without_history_or_hullers(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "site": {"id": "s", "timezone": "America/Sao_Paulo"},
            "agent": {"data_dir": str(tmp_path / "data")},
        }
    )
    provider = digest_facts_provider(
        cfg=cfg, health=Health(), outbox=None, history=None, hullers=None, maintenance=None,
        alerts=None,
    )  # fmt: skip
    facts = await provider(NOW)
    assert facts.lots is None  # the history is off: unknown, not "nothing"
    assert facts.tasks == ()  # no hullers: nothing due
    assert facts.offline == ()
