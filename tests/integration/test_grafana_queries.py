"""The Grafana dashboards' InfluxQL against what the real agent writes.

``dashboards/grafana/json/*.json`` hold raw InfluxQL (``rawQuery``) with Grafana's
macros (``$timeFilter``, ``$__interval``) and template variables (``$site``,
``$station``, ``$lot``, ``$huller``, ``$host``, ``$scale``). Two checks:

1. Statically, every panel target and template-variable query names only
   measurements, tags and fields of ``SCHEMA`` (the README's "InfluxDB schema" table).
2. End to end, the real agent process runs for a few seconds with a ticket moisture
   meter, a Toledo indicator, a huller on a simulated RS-485 bus and a storage T/RH
   sensor on a second bus, writing into the session's influxd. What it wrote
   (``SHOW TAG KEYS``/``SHOW FIELD KEYS``) must be in ``SCHEMA`` and must hold every
   name the dashboards use; then every variable query and every panel query runs, with
   the macros and variables substituted as Grafana would, and must return rows. The
   events a short run would not see are caused on purpose: a
   wet lot (two tickets of one lot at or above 12.5 %) makes an ``alert``, a front-panel
   reset a ``counter_reset``, ``coffee-telemetry maintenance done`` a ``maintenance``
   event (and a fresh ``maintenance_status``), a print on the indicator a ``weighment``;
   the ``agent`` measurement comes every ``status_interval_s``, set to 1 s here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coffee_telemetry.agent.alerts.model import DATA_FIELDS
from coffee_telemetry.drivers.counter_autonics_ct import Mode
from coffee_telemetry.simulators.climate import ClimateUnitSim, serve_climate_bus
from coffee_telemetry.simulators.moisture import TicketMeterSim
from coffee_telemetry.simulators.pty import PtyPort, open_pty_port
from coffee_telemetry.simulators.rtu import CounterUnitSim, serve_rtu_bus
from coffee_telemetry.simulators.scales import ToledoStreamSim
from tests.integration.harness import (
    ROOT,
    AgentProcess,
    DeviceSpec,
    MqttCollector,
    eventually,
    huller_toml,
    write_site_config,
)
from tests.services.influxd import InfluxServer
from tests.services.mosquitto import MosquittoServer

pytestmark = pytest.mark.integration

DASHBOARDS = ROOT / "dashboards" / "grafana" / "json"
SITE = "ourofino"
METER = "umid-armazem"
SCALE = "balanca-rodoviaria"
HULLER = "desc-1"
CLIMATE = "armazem-1-norte"
WET_LOT = "L-WET"
DRY_LOT = "L-0001"

#: Every key of an alert's "data" (``agent.alerts.model.DATA_FIELDS``, one type each): the README
#: leaves them to the rule, naming wet_lot's lot, station, count, mean/max %.
#: The device an alert is about is written as ``source_device`` (``device`` is the tag).
RULE_DATA = (frozenset(DATA_FIELDS) - {"device"}) | {"source_device"}
assert {"lot", "station", "count", "mean_pct", "max_pct"} <= RULE_DATA

#: The README's "InfluxDB schema": measurement → (tags, fields). ``<sink>`` stands for a
#: sink's name. ``seq`` is on every record the agent writes (each device's sequence number,
#: the dedupe key of the README's "MQTT topics"), although the table names it for
#: ``moisture`` only.
SCHEMA: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "moisture": (
        frozenset({"site", "device", "station", "product", "lot"}),
        frozenset(
            {
                "moisture_pct",
                "temperature_c",
                "bulk_density_kg_hl",
                "sample_mass_g",
                "sample_id",
                "meter_time",
                "lot_rejected",
                "seq",
                "audit",
            }
        ),
    ),
    "scale": (
        frozenset({"site", "device", "station", "unit_raw"}),
        frozenset({"weight_kg", "tare_kg", "stable", "net", "quality", "seq"}),
    ),
    "weighment": (
        frozenset({"site", "device", "station", "unit_raw", "trigger", "lot"}),
        frozenset({"weight_kg", "tare_kg", "net", "stable", "seq"}),
    ),
    "huller": (
        frozenset({"site", "device", "station"}),
        frozenset(
            {
                "running",
                "bags_total",
                "bags_today",
                "bags_per_hour",
                "hours_total",
                "hours_today",
                "counter_pv",
                "timer_pv",
                "seq",
            }
        ),
    ),
    "counter_reset": (
        frozenset({"site", "device", "station"}),
        frozenset({"unit", "previous_pv", "pv", "offset", "seq"}),
    ),
    "climate": (
        frozenset({"site", "device", "area"}),
        frozenset({"temperature_c", "rh_pct", "seq"}),
    ),
    "maintenance_status": (
        frozenset({"site", "device", "task"}),
        frozenset({"hours_since", "interval_h", "remaining_h", "state", "due", "overdue", "seq"}),
    ),
    "maintenance": (
        frozenset({"site", "device", "task"}),
        frozenset({"hours_at", "interval_h", "note", "by", "service_id", "seq"}),
    ),
    "alert": (
        frozenset({"site", "device", "rule", "subject", "state"}),
        frozenset(
            {
                "message",
                "severity",
                "notify",
                "since_ns",
                "repeat",
                "acked_by",
                "seq",
                # The rule's data: the README names lot, station, count, mean/max %.
                *RULE_DATA,
            }
        ),
    ),
    "lot_assignment": (
        frozenset({"site", "device", "station", "lot"}),
        frozenset({"action", "lot_code", "by", "source", "change_id", "seq"}),
    ),
    "agent": (
        frozenset({"site", "device", "host"}),
        frozenset(
            {
                "uptime_s",
                "rss_bytes",
                "devices_online",
                "devices_total",
                "outbox_last_id",
                "outbox_dropped_total",
                "interface_failures",
                "backlog_<sink>",
                "delivered_<sink>",
                "rejected_<sink>",
                "seq",
            }
        ),
    ),
}


# -- the dashboards' queries --------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One InfluxQL query of a dashboard: a panel target or a template variable."""

    dashboard: str
    where: str  # "panel <title> [<refId>]" or "variable <name>"
    text: str
    variable: str | None = None  # the variable's name, for variable queries

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.where}"


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file, by file name."""
    found = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARDS.glob("*.json")}
    # The cooperative overview reads what only the central recorders write (agent_status):
    # tests/integration/test_central_overview.py runs its queries.
    del found["cooperative-overview.json"]
    assert set(found) == {
        "warehouse-moisture.json",
        "hullers-maintenance.json",
        "devices-agent.json",
    }
    return found


def _panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    panels = doc.get("panels", [])
    assert isinstance(panels, list)
    for panel in panels:
        yield panel
        yield from _panels(panel)  # rows hold their collapsed panels


def _variables(doc: dict[str, Any]) -> list[dict[str, Any]]:
    templating = doc["templating"]
    assert isinstance(templating, dict)
    variables = templating["list"]
    assert isinstance(variables, list)
    return variables


def queries() -> list[Query]:
    """Every InfluxQL query: variable queries first (in order), then panel targets."""
    out: list[Query] = []
    for name, doc in sorted(dashboards().items()):
        for var in _variables(doc):
            if var["type"] == "query":
                out.append(
                    Query(name, f"variable {var['name']}", str(var["query"]), str(var["name"]))
                )
        for panel in _panels(doc):
            for target in panel.get("targets", []):
                where = f"panel {panel['title']!r} [{target['refId']}]"
                out.append(Query(name, where, str(target["query"])))
    return out


_QUOTED = re.compile(r'"([^"]+)"')
_ALIAS = re.compile(r'\bAS\s+"([^"]+)"', re.IGNORECASE)
_FROM = re.compile(r'\bFROM\s+"([^"]+)"', re.IGNORECASE)
_REGEX_FIELD = re.compile(r"\(\s*/([^/]+)/\s*\)")
_TAG_KEY = re.compile(r'\bKEY\s*=\s*"([^"]+)"', re.IGNORECASE)


@dataclass(frozen=True)
class Names:
    """The measurement, tags and fields a query names."""

    measurement: str
    tags: frozenset[str]
    fields: frozenset[str]
    field_patterns: frozenset[str]  # regex field selectors, e.g. max(/^backlog_/)


def names(query: Query) -> Names:
    """Split a query's identifiers into tags and fields of its (one) measurement."""
    measurements = _FROM.findall(query.text)
    assert len(measurements) == 1, f'{query}: one FROM "measurement" expected: {query.text}'
    (measurement,) = measurements
    assert measurement in SCHEMA, f"{query}: {measurement!r} is not a measurement the agent writes"
    tags, fields = SCHEMA[measurement]
    named = set(_QUOTED.findall(query.text)) - {measurement} - set(_ALIAS.findall(query.text))
    used_tags = frozenset(named & tags)
    used_fields = frozenset(named - tags)
    unknown = {f for f in used_fields if f not in fields}
    assert not unknown, f"{query}: {sorted(unknown)} are neither tags nor fields of {measurement}"
    if query.variable is not None:
        assert set(_TAG_KEY.findall(query.text)) <= tags, f"{query}: KEY must be a tag"
    return Names(measurement, used_tags, used_fields, frozenset(_REGEX_FIELD.findall(query.text)))


def field_matches(pattern: str, fields: frozenset[str] | set[str]) -> set[str]:
    """The fields (``<sink>`` read as a sink's name) that a regex field selector picks."""
    return {f for f in fields if re.search(pattern, f.replace("<sink>", "influx"))}


def test_dashboards_name_only_documented_measurements_and_fields() -> None:
    uids: set[str] = set()
    for name, doc in dashboards().items():
        assert doc["schemaVersion"] == 39, name
        uid = doc["uid"]
        assert isinstance(uid, str), name
        assert uid, name
        assert uid not in uids, name
        uids.add(uid)
        # The data source is a variable whose default is the provisioned one; nothing else
        # names a data source uid.
        (ds_var,) = [v for v in _variables(doc) if v["type"] == "datasource"]
        assert ds_var["name"] == "datasource"
        assert ds_var["current"]["value"] == "coffee-influxdb"
        text = json.dumps(doc)
        ds_uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {uid}
        assert ds_uids <= {"${datasource}", "-- Grafana --"}, (name, ds_uids)
        for panel in _panels(doc):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
            defaults = panel["fieldConfig"]["defaults"]
            assert "unit" in defaults or "mappings" in defaults, (name, panel["title"])
            targets = panel["targets"]
            assert isinstance(targets, list), (name, panel["title"])
            assert targets, (name, panel["title"])
            for target in targets:
                assert target["rawQuery"] is True, (name, panel["title"])
                assert "$timeFilter" in target["query"], (name, panel["title"])
                if "GROUP BY time(" in target["query"]:
                    assert "GROUP BY time($__interval)" in target["query"], (name, panel["title"])
    used: dict[str, set[str]] = {}
    for query in queries():
        got = names(query)
        for pattern in got.field_patterns:
            assert field_matches(pattern, SCHEMA[got.measurement][1]), (str(query), pattern)
        used.setdefault(got.measurement, set()).update(got.fields)
    # The dashboards cover what the brief asks of them.
    assert set(used) >= {
        "moisture",
        "huller",
        "maintenance_status",
        "maintenance",
        "counter_reset",
        "agent",
        "alert",
        "scale",
        "weighment",
        "climate",
    }


# -- the real agent writes them -----------------------------------------------------------


def write_site(
    tmp: Path,
    *,
    meter: PtyPort,
    scale: PtyPort,
    bus: PtyPort,
    climate_bus: PtyPort,
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    database: str,
    prefix: str,
) -> Path:
    """The harness' site file, the agent's status every second, plus a bus and a huller."""
    config = write_site_config(
        tmp / "site.toml",
        data_dir=tmp / "data",
        devices=[
            DeviceSpec(METER, "moisture.ticket", meter.path, "armazem", "cafe-verde"),
            # Only the print request makes a weighment (see test_scales_e2e).
            DeviceSpec(
                SCALE,
                "scale.toledo_continuous",
                scale.path,
                "recepcao",
                extra="[devices.toledo]\nweighment_stable_s = 30.0",
            ),
        ],
        mqtt_port=mosquitto.port,
        prefix=prefix,
        influx_url=influxd.url,
        database=database,
        site=SITE,
    )
    text = config.read_text(encoding="utf-8")
    assert "status_interval_s = 3600" in text
    text = text.replace("status_interval_s = 3600", "status_interval_s = 1")
    text += "\n".join(
        huller_toml(
            bus.path,
            huller=HULLER,
            station="descascamento",
            poll_interval_s=0.25,
            tasks=[
                {"id": "facas", "name": "Troca das facas", "interval_h": 300.0},
                {"id": "lubrificacao", "name": "Lubrificação", "interval_h": 100.0},
            ],
        )
    )
    # A storage-area T/RH sensor on a bus of its own (XY-MD02 defaults, 8N1).
    text += "\n" + "\n".join(
        [
            "[[buses]]",
            'id = "rs485-armazem"',
            f'port = "{climate_bus.path}"',
            "timeout_s = 0.3",
            "[[climate]]",
            f'id = "{CLIMATE}"',
            'bus = "rs485-armazem"',
            "unit = 1",
            'area = "armazem-1"',
            "poll_interval_s = 0.5",
        ]
    )
    config.write_text(text + "\n", encoding="utf-8")
    return config


@contextlib.contextmanager
def ptys(tmp: Path) -> Iterator[tuple[PtyPort, PtyPort, PtyPort, PtyPort]]:
    (tmp / "dev").mkdir()
    with (
        open_pty_port(link=tmp / "dev" / METER) as meter,
        open_pty_port(link=tmp / "dev" / SCALE) as scale,
        open_pty_port(link=tmp / "dev" / "ttyRS485") as bus,
        open_pty_port(link=tmp / "dev" / "ttyRS485-armazem") as climate_bus,
    ):
        yield meter, scale, bus, climate_bus


async def run_cli(*args: str) -> tuple[int, str]:
    """``coffee-telemetry ARGS`` as its own process; the event loop keeps serving the sims."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coffee_telemetry.agent.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def feed_scale(scale: ToledoStreamSim) -> None:
    """The indicator streams; one load is weighed and printed."""
    await scale.hold(1.0)
    await scale.weigh(1234.5, motion_s=0.5, stable_s=1.0, rest_s=0.3)
    while True:
        await scale.hold(1.0)


def substitute(text: str, values: dict[str, str], *, everything: bool) -> str:
    """Grafana's macros and variables: one value each, or ``All`` (``.*``) for ``everything``."""
    text = text.replace("$timeFilter", "time > now() - 1h").replace("$__interval", "10s")
    for name, value in values.items():
        regex = ".*" if everything else re.escape(value)
        text = text.replace(f"/^${name}$/", f"/^{regex}$/").replace(f"${name}", value)
    assert not re.search(r"\$\w", text), f"a variable was left in: {text}"
    return text


def schema_keys(influxd: InfluxServer, db: str, measurement: str) -> tuple[set[str], set[str]]:
    """The tag keys and field keys a measurement has in the database."""
    tags = {str(r["tagKey"]) for r in influxd.query(db, f'SHOW TAG KEYS FROM "{measurement}"')}
    fields = {
        str(r["fieldKey"]) for r in influxd.query(db, f'SHOW FIELD KEYS FROM "{measurement}"')
    }
    return tags, fields


def documented(field: str, fields: frozenset[str]) -> bool:
    """Whether a written field is in the schema (``backlog_mqtt`` is ``backlog_<sink>``)."""
    return (
        field in fields
        or re.sub(r"^(backlog|delivered|rejected)_\w+$", r"\1_<sink>", field) in fields
    )


async def test_every_dashboard_query_returns_rows_from_a_real_run(
    mosquitto: MosquittoServer,
    influxd: InfluxServer,
    influx_db: str,
    mqtt_prefix: str,
    tmp_path: Path,
) -> None:
    counter = CounterUnitSim(1, pv=1000, rate_per_s=5)
    timer = CounterUnitSim(2, mode=Mode.TIMER, pv=95 * 3600)
    with ptys(tmp_path) as (meter_pty, scale_pty, bus_pty, climate_pty):
        config = write_site(
            tmp_path,
            meter=meter_pty,
            scale=scale_pty,
            bus=bus_pty,
            climate_bus=climate_pty,
            mosquitto=mosquitto,
            influxd=influxd,
            database=influx_db,
            prefix=mqtt_prefix,
        )
        meter = TicketMeterSim(meter_pty, product="CAFE")
        scale = ToledoStreamSim(scale_pty, rate_hz=10.0, auto_weighment_s=30.0, seed=5)
        collector = MqttCollector(
            port=mosquitto.port, prefix=mqtt_prefix, client_id=f"g-{mqtt_prefix}"
        )
        agent = AgentProcess(config, tmp_path / "agent.log")

        def context() -> str:
            return f"agent log tail:\n{agent.log_tail()}"

        def online(device: str) -> bool:
            status = collector.last_status(device)
            return isinstance(status, dict) and status.get("state") == "online"

        async with (
            serve_rtu_bus(bus_pty, [counter, timer]),
            serve_climate_bus(climate_pty, [ClimateUnitSim(1, temperature_c=24.5, rh_pct=66.0)]),
        ):
            collector.start()
            scale_task: asyncio.Task[None] | None = None
            try:
                agent.start()
                for device in (METER, SCALE, HULLER, CLIMATE):
                    await eventually(
                        lambda d=device: online(d),
                        timeout_s=30,
                        what=f"{device} online",
                        context=context,
                    )
                scale_task = asyncio.create_task(feed_scale(scale), name="sim[toledo]")
                # A dry lot and a wet one: two of the wet lot's last three ≥ 12.5 % fire wet_lot.
                for lot, value in (
                    (DRY_LOT, 11.2),
                    (DRY_LOT, 11.6),
                    (WET_LOT, 13.0),
                    (WET_LOT, 13.2),
                ):
                    assert await meter.emit(moisture_pct=value, lot=lot) is not None
                    await asyncio.sleep(0.3)
                code, out = await run_cli(
                    "maintenance", "done", "-c", str(config), HULLER, "facas",
                    "--by", "maria", "--note", "facas trocadas",
                )  # fmt: skip
                assert code == 0, out
                await asyncio.sleep(2.0)  # some huller readings with the counter advancing
                counter.front_panel_reset()

                # Every measurement but lot_assignment (no dashboard reads it; lots here come
                # from the tickets, not from a station's lot being set), and the wet lot's alert.
                async def all_written() -> bool:
                    have = {str(r["name"]) for r in influxd.query(influx_db, "SHOW MEASUREMENTS")}
                    if not have >= set(SCHEMA) - {"lot_assignment"}:
                        return False
                    wet = influxd.query(
                        influx_db,
                        f'SELECT * FROM "alert" WHERE "rule" = \'wet_lot\' '
                        f"AND \"subject\" = '{WET_LOT}' AND \"state\" = 'firing'",
                    )
                    return bool(wet)

                await eventually(
                    all_written, timeout_s=25, what="every measurement", context=context
                )
                # Let rates and totals build up (~15 s of readings in all).
                await asyncio.sleep(5.0)
                assert agent.alive, context()
            finally:
                if scale_task is not None:
                    scale_task.cancel()
                    await asyncio.wait({scale_task})
                try:
                    if agent.alive:
                        agent.stop()
                finally:
                    collector.stop()

    # What the run wrote is what the README documents, and holds what the dashboards use.
    written: dict[str, tuple[set[str], set[str]]] = {}
    for measurement, (tags, fields) in SCHEMA.items():
        got_tags, got_fields = schema_keys(influxd, influx_db, measurement)
        written[measurement] = (got_tags, got_fields)
        assert got_tags <= tags, (measurement, sorted(got_tags - tags))
        undocumented = {f for f in got_fields if not documented(f, fields)}
        assert not undocumented, (measurement, sorted(undocumented))
    assert {f for f in written["agent"][1] if f.startswith("backlog_")} == {
        "backlog_influx",
        "backlog_mqtt",
    }

    values: dict[str, str] = {}
    for query in queries():
        got = names(query)
        w_tags, w_fields = written[got.measurement]
        assert got.tags <= w_tags, (str(query), sorted(got.tags - w_tags))
        assert got.fields <= w_fields, (str(query), sorted(got.fields - w_fields))
        for pattern in got.field_patterns:
            assert field_matches(pattern, w_fields), (str(query), pattern)
        for everything in (False, True):
            text = substitute(query.text, values, everything=everything)
            rows = influxd.query(influx_db, text)
            assert rows, f"{query}: no rows for\n{text}"
            if query.variable is not None and not everything:
                options = sorted(str(r["value"]) for r in rows)
                values[query.variable] = WET_LOT if WET_LOT in options else options[0]
    assert values == {
        "site": SITE,
        "station": "armazem",
        "lot": WET_LOT,
        "huller": HULLER,
        "host": values["host"],
        "scale": SCALE,
    }
