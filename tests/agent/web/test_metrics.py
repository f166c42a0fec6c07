"""``/metrics``, ``/healthz``, ``/readyz``: the collector, readiness, and who may read them.

The collector is checked on a ``Health`` built by hand, parsed back with
``prometheus_client``'s own text parser; the endpoints on a real aiohttp server on a
free loopback port, with the real outbox, history and alert service behind it
(``tests.agent.web.test_server``'s site). A client on another address is made by a
trusted proxy's ``X-Forwarded-For``, the way a real one reaches the box.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from coffee_telemetry.agent.config import IDENT, Config
from coffee_telemetry.agent.health import DeviceState, Health, InterfaceState
from coffee_telemetry.agent.history.store import HistoryStats
from coffee_telemetry.agent.outbox.stats import OutboxStats, SinkBacklog
from coffee_telemetry.agent.outbox.store import open_outbox
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.agent.web.api import WebDeps
from coffee_telemetry.agent.web.metrics import (
    MAX_REASONS,
    Snapshot,
    SnapshotSource,
    exposition,
    is_local,
    readiness,
)
from coffee_telemetry.agent.web.server import SECURITY_HEADERS, make_web_app, open_web
from tests.agent.web.test_server import TOKEN, Client, Site, _site, make_config
from tests.services.net import free_port

NS = 1_000_000_000


def samples(text: bytes | str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and labels."""
    body = text.decode() if isinstance(text, bytes) else text
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            assert isinstance(s, Sample)
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"{name}{labels} not among {sorted(k[0] for k in found)}"
    return found[key]


def health_of_a_site() -> Health:
    h = Health(clock_ns=lambda: 1_700_000_000 * NS)
    a = h.add_device("umid-1", driver="moisture.ticket", port="/dev/ttyUSB0", station="recepcao")
    h.add_device("bal-1", driver="scale.toledo", port="/dev/ttyUSB1", station="")
    h.set_device_state("umid-1", DeviceState.ONLINE)
    a.frames_ok, a.frames_discarded, a.readings = 40, 3, 38
    a.errors.update({"checksum": 2, "cut": 1})
    a.last_frame_ns = a.last_reading_ns = 1_700_000_100 * NS
    s = h.add_sink("mqtt")
    s.connected, s.delivered, s.failures = True, 37, 1
    s.last_delivery_ns = 1_700_000_101 * NS
    influx = h.add_sink("influx")
    influx.failures, influx.last_error = 4, "SinkUnavailable: connection refused"
    h.add_interface("mqtt")  # MQTT holds a connection, run as an interface of its name
    web = h.add_interface("web")
    web.state, web.failures = InterfaceState.RESTARTING, 2
    h.counters["notify"] = lambda: {
        "acknowledgements": 1,
        "channels": {"email": {"queued": 2, "sent": 5, "dead": 1, "expired": 0, "retries": 3}},
    }
    return h


def outbox_stats() -> OutboxStats:
    def backlog(sink: str, n: int, oldest: int | None) -> SinkBacklog:
        return SinkBacklog(
            sink=sink,
            cursor=100 - n,
            backlog=n,
            oldest_ns=oldest,
            delivered_total=100 - n,
            delivered_at_ns=None,
            dropped_total=7 if sink == "influx" else 0,
            dead_total=1,
        )

    return OutboxStats(
        path="o.db",
        records=60,
        bytes_held=30_000,
        max_bytes=1 << 20,
        last_id=100,
        dropped_total=7,
        sinks=(backlog("influx", 60, 1_700_000_050 * NS), backlog("mqtt", 0, None)),
    )


def snapshot(health: Health, **changes: Any) -> Snapshot:
    base = Snapshot(
        health=health,
        site="ourofino",
        version="1.2.3",
        started_ns=1_699_999_000 * NS,
        outbox=outbox_stats(),
        history=HistoryStats("h.db", 4096, 8192, 3, 5, 0),
        open_alerts=(
            {"rule": "wet_lot", "severity": "warning", "state": "firing"},
            {"rule": "wet_lot", "severity": "warning", "state": "firing"},
        ),
        alerts_enabled=True,
    )
    return dataclasses.replace(base, **changes)


# -- the collector -------------------------------------------------------------------


def test_collector_turns_health_and_stats_into_the_documented_metrics() -> None:
    found = samples(exposition(snapshot(health_of_a_site())))
    umid = {"device": "umid-1", "driver": "moisture.ticket", "station": "recepcao"}
    bal = {"device": "bal-1", "driver": "scale.toledo", "station": ""}
    p = "coffee_telemetry_"
    assert value(found, p + "agent_info", site="ourofino", version="1.2.3") == 1
    assert value(found, p + "agent_start_time_seconds") == 1_699_999_000
    assert value(found, p + "device_up", **umid) == 1
    assert value(found, p + "device_up", **bal) == 0
    assert value(found, p + "device_frames_total", **umid) == 40
    assert value(found, p + "device_frames_discarded_total", **umid) == 3
    assert value(found, p + "device_readings_total", **umid) == 38
    assert value(found, p + "device_reconnects_total", **umid) == 0
    assert value(found, p + "device_errors_total", **umid, reason="checksum") == 2
    assert value(found, p + "device_last_reading_timestamp_seconds", **umid) == 1_700_000_100
    assert (p + "device_last_reading_timestamp_seconds", frozenset(bal.items())) not in found
    assert value(found, p + "sink_connected", sink="mqtt") == 1
    assert (p + "sink_connected", frozenset({("sink", "influx")})) not in found  # HTTP only
    assert value(found, p + "sink_up", sink="mqtt") == 1
    assert value(found, p + "sink_up", sink="influx") == 0
    assert value(found, p + "sink_delivered_records_total", sink="mqtt") == 37
    assert value(found, p + "sink_failures_total", sink="influx") == 4
    assert value(found, p + "outbox_up") == 1
    assert value(found, p + "outbox_records") == 60
    assert value(found, p + "outbox_bytes") == 30_000
    assert value(found, p + "outbox_limit_bytes") == 1 << 20
    assert value(found, p + "outbox_accepted_records_total") == 100
    assert value(found, p + "outbox_backlog_records", sink="influx") == 60
    assert value(found, p + "outbox_dropped_records_total", sink="influx") == 7
    assert value(found, p + "outbox_dead_letters_total", sink="mqtt") == 1
    assert (
        value(found, p + "outbox_oldest_undelivered_timestamp_seconds", sink="influx")
        == 1_700_000_050
    )
    assert value(found, p + "history_bytes") == 4096
    assert value(found, p + "history_dropped_points_total", reason="disk_bound") == 5
    assert value(found, p + "alerts_open", rule="wet_lot", severity="warning", state="firing") == 2
    assert value(found, p + "notify_queued_messages", channel="email") == 2
    assert value(found, p + "notify_sent_messages_total", channel="email") == 5
    assert value(found, p + "notify_retries_total", channel="email") == 3
    assert value(found, p + "notify_acknowledgements_total") == 1
    assert value(found, p + "interface_up", interface="web") == 0
    assert value(found, p + "interface_failures_total", interface="web") == 2


def test_without_outbox_stats_the_scrape_says_so_and_still_shows_devices() -> None:
    found = samples(exposition(snapshot(health_of_a_site(), outbox=None, history=None)))
    assert value(found, "coffee_telemetry_outbox_up") == 0
    assert not any(name.startswith("coffee_telemetry_outbox_backlog") for name, _ in found)
    assert not any(name.startswith("coffee_telemetry_history") for name, _ in found)
    assert value(
        found, "coffee_telemetry_device_readings_total",
        device="umid-1", driver="moisture.ticket", station="recepcao",
    ) == 38  # fmt: skip


def test_a_notifier_that_raises_leaves_only_its_part_out() -> None:
    health = health_of_a_site()

    def broken() -> dict[str, object]:
        raise RuntimeError("bug")

    health.counters["notify"] = broken
    found = samples(exposition(snapshot(health)))
    assert not any(name.startswith("coffee_telemetry_notify") for name, _ in found)
    assert value(found, "coffee_telemetry_sink_connected", sink="mqtt") == 1


def test_device_reasons_are_capped_and_the_rest_summed_as_other() -> None:
    health = health_of_a_site()
    entry = health.devices["umid-1"]
    entry.errors.clear()
    entry.errors.update({f"code-{i:03}": i + 1 for i in range(100)})
    found = samples(exposition(snapshot(health)))
    errors = {
        dict(labels)["reason"]: v
        for (name, labels), v in found.items()
        if name == "coffee_telemetry_device_errors_total" and ("device", "umid-1") in labels
    }
    assert len(errors) == MAX_REASONS + 1
    assert sum(errors.values()) == sum(range(1, 101))
    assert errors["code-099"] == 100  # the biggest are kept by name
    assert "code-000" not in errors


def test_process_metrics_come_with_the_standard_names() -> None:
    from prometheus_client import ProcessCollector

    found = samples(exposition(snapshot(Health()), process=ProcessCollector(registry=None)))
    assert value(found, "process_resident_memory_bytes") > 0
    assert value(found, "process_open_fds") > 0
    assert "process_cpu_seconds_total" in {name for name, _ in found}


# Anything the config accepts as an id, and anything a device may send as a reason.
idents = st.from_regex(IDENT, fullmatch=True)
reasons = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    devices=st.dictionaries(
        idents,
        st.tuples(
            st.sampled_from(["moisture.ticket", "scale.toledo", "modbus.counter"]),
            st.one_of(st.just(""), idents),
            st.dictionaries(reasons, st.integers(1, 10**12), max_size=20),
        ),
        max_size=6,
    ),
    sinks=st.lists(idents, max_size=3, unique=True),
    interfaces=st.lists(st.text(max_size=30), max_size=3, unique=True),
    channel=st.text(max_size=20),
    rule=st.text(max_size=20),
)
def test_any_configured_names_and_device_reasons_give_valid_exposition_text(
    devices: dict[str, tuple[str, str, dict[str, int]]],
    sinks: list[str],
    interfaces: list[str],
    channel: str,
    rule: str,
) -> None:
    health = Health(clock_ns=lambda: 5 * NS)
    for device, (driver, station, errors) in devices.items():
        health.add_device(device, driver=driver, port="/dev/x", station=station)
        health.devices[device].errors.update(errors)
    for sink in sinks:
        health.add_sink(sink)
    for name in interfaces:
        health.add_interface(name)
    health.counters["notify"] = lambda: {"channels": {channel: {"queued": 1, "sent": 2}}}
    alerts = ({"rule": rule, "severity": "critical", "state": "firing"},)
    found = samples(exposition(snapshot(health, open_alerts=alerts)))
    for device, (driver, station, errors) in devices.items():
        labels = {"device": device, "driver": driver, "station": station}
        assert value(found, "coffee_telemetry_device_up", **labels) == 0
        shown = {
            dict(k)["reason"]: v
            for (n, k), v in found.items()
            if n == "coffee_telemetry_device_errors_total" and ("device", device) in k
        }
        assert sum(shown.values()) == sum(errors.values())
        if len(errors) <= MAX_REASONS:
            assert shown == {r: float(n) for r, n in errors.items()}
    for sink in sinks:
        # A sink with an interface of its name holds a connection, not connected yet.
        assert value(found, "coffee_telemetry_sink_up", sink=sink) == (sink not in interfaces)
    for name in interfaces:
        assert value(found, "coffee_telemetry_interface_up", interface=name) == 1
    assert value(found, "coffee_telemetry_notify_queued_messages", channel=channel) == 1
    assert (
        value(found, "coffee_telemetry_alerts_open", rule=rule, severity="critical", state="firing")
        == 1
    )


# -- readiness -----------------------------------------------------------------------


def test_not_ready_until_every_device_has_started_and_the_outbox_answers() -> None:
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/a")
    health.add_sink("mqtt")
    health.add_interface("mqtt")
    state = readiness(snapshot(health), configured=["umid-1", "bal-1"])
    assert not state.ready
    assert state.devices == {"umid-1": "starting", "bal-1": "starting"}
    assert state.reasons == ("devices not started: bal-1, umid-1",)
    health.add_device("bal-1", driver="scale.toledo", port="/dev/b")
    health.set_device_state("umid-1", DeviceState.ONLINE)
    health.set_device_state("bal-1", DeviceState.OFFLINE, error="PortError: gone")
    state = readiness(snapshot(health), configured=["umid-1", "bal-1"])
    assert state.ready, state
    assert state.devices == {"umid-1": "online", "bal-1": "offline"}
    # A sink down is shown, but the outbox keeps its records: still ready.
    assert state.sinks == {"mqtt": {"up": False, "connected": False, "last_error": None}}
    state = readiness(snapshot(health, outbox=None, outbox_error="no outbox"), configured=[])
    assert not state.ready
    assert state.reasons == ("no outbox",)


# -- the endpoints -------------------------------------------------------------------


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[Site]:
    """The site behind a reverse proxy on the box: its clients are who it says."""
    cfg = make_config(tmp_path, trusted_proxies=["127.0.0.1"])
    async for s in _site(tmp_path, cfg, TOKEN):
        yield s


async def get(base: str, path: str, **headers: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as session, session.get(base + path, headers=headers) as r:
        return r.status, await r.text(), r


async def test_metrics_on_loopback_need_no_login_and_keep_the_strict_headers(site: Site) -> None:
    status, text, r = await get(site.base, "/metrics")
    assert status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    for name, header in SECURITY_HEADERS.items():
        assert r.headers[name] == header
    found = samples(text)
    assert value(found, "coffee_telemetry_agent_info", site="s1", version=site.deps.version) == 1
    labels = {"device": "umid-1", "driver": "moisture.ticket", "station": "recepcao"}
    assert value(found, "coffee_telemetry_device_readings_total", **labels) == 0
    assert value(found, "coffee_telemetry_outbox_up") == 1
    assert value(found, "coffee_telemetry_outbox_backlog_records", sink="mqtt") == 0
    assert value(found, "coffee_telemetry_history_bytes") > 0
    assert value(found, "process_open_fds") > 0
    site.deps.health.devices["umid-1"].readings = 5
    _, text, _ = await get(site.base, "/metrics")
    assert value(samples(text), "coffee_telemetry_device_readings_total", **labels) == 5


async def test_healthz_answers_and_readyz_waits_for_the_devices(site: Site) -> None:
    status, text, _ = await get(site.base, "/healthz")
    assert status == 200
    assert '"ok":true' in text
    status, text, r = await get(site.base, "/readyz")
    assert status == 503, text
    assert r.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert '"devices not started: umid-1"' in text
    site.deps.health.set_device_state("umid-1", DeviceState.ONLINE)
    status, text, _ = await get(site.base, "/readyz")
    assert status == 200, text
    assert '"sinks":{"mqtt":{"up":true,"connected":null,"last_error":null}}' in text


async def test_readyz_is_503_once_the_outbox_is_closed(tmp_path: Path) -> None:
    cfg: Config = make_config(tmp_path)
    async with open_outbox(tmp_path / "closed.db", sinks=["mqtt"]) as outbox:
        pass
    health = Health()
    health.add_device("umid-1", driver="moisture.ticket", port="/dev/fake-1")
    health.set_device_state("umid-1", DeviceState.ONLINE)
    deps = WebDeps(cfg=cfg, health=health, outbox=outbox)
    port = free_port()
    app = make_web_app(deps, session_key=b"k" * 32)
    async with open_web(app, host="127.0.0.1", port=port):
        base = f"http://127.0.0.1:{port}"
        status, text, _ = await get(base, "/readyz")
        assert status == 503, text
        assert "outbox closed or unreadable" in text
        status, text, _ = await get(base, "/metrics")
        assert status == 200
        assert value(samples(text), "coffee_telemetry_outbox_up") == 0


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
async def test_another_address_needs_the_token_or_a_login(proxied: Site, path: str) -> None:
    far = {"X-Forwarded-For": "192.0.2.7"}
    status, text, r = await get(proxied.base, path, **far)
    assert status == 401, text
    assert r.headers["X-Frame-Options"] == "DENY"
    status, _, _ = await get(proxied.base, path, **far, Authorization="Bearer wrong")
    assert status == 401
    status, _, _ = await get(proxied.base, path, **far, Authorization=f"Bearer {TOKEN}")
    assert status in (200, 503)  # readyz: devices not started, but it was let in
    async with proxied.client() as session:
        browser = Client(proxied.base, session)
        assert (await browser.login())[0] == 200
        status, _ = await browser.request("GET", path, headers=far)
        assert status in (200, 503)
    # The proxy's own loopback requests are local.
    status, _, _ = await get(proxied.base, path)
    assert status in (200, 503)


async def test_a_loopback_request_through_an_untrusted_proxy_is_not_local(site: Site) -> None:
    status, _, _ = await get(site.base, "/metrics", **{"X-Forwarded-For": "192.0.2.7"})
    assert status == 401
    status, _, _ = await get(site.base, "/metrics", Forwarded="for=192.0.2.7")
    assert status == 401


async def test_metrics_public_opens_them_to_any_address(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, trusted_proxies=["127.0.0.1"], metrics_public=True)
    async for s in _site(tmp_path, cfg, TOKEN):
        status, _, _ = await get(s.base, "/metrics", **{"X-Forwarded-For": "192.0.2.7"})
        assert status == 200
        # The rest of the API keeps its own rules.
        status, _, _ = await get(s.base, "/api/health", **{"X-Forwarded-For": "192.0.2.7"})
        assert status == 200  # read_access = "open"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async for s in _site(tmp_path, make_config(tmp_path), TOKEN):
        yield s


async def test_scrapes_close_together_share_one_read_of_the_stores(tmp_path: Path) -> None:
    now = [100.0]
    stamper = Stamper()

    def reading() -> Reading:
        return stamper.stamp(
            device="umid-1", measurement="moisture", fields={"moisture_pct": 11.0}, tags={}
        )

    async with open_outbox(tmp_path / "o.db", sinks=["mqtt"]) as outbox:
        deps = WebDeps(cfg=make_config(tmp_path), outbox=outbox)
        source = SnapshotSource(deps, max_age_s=1.0, clock_s=lambda: now[0])
        await outbox.accept([reading()])
        first = await source.take()
        assert first.outbox is not None
        assert first.outbox.last_id == 1
        await outbox.accept([reading()])
        now[0] += 0.5
        shared = await source.take()
        assert shared.outbox is first.outbox  # not read again
        now[0] += 0.5
        fresh = await source.take()
        assert fresh.outbox is not None
        assert fresh.outbox.last_id == 2
        assert fresh.outbox.sinks[0].backlog == 2


class _Transport:
    """Just enough transport for ``request.remote``."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("peer", "headers", "local"),
    [
        ("127.0.0.1", {}, True),
        ("127.0.0.2", {}, True),  # all of 127/8 is loopback
        ("::1", {}, True),
        ("::ffff:127.0.0.1", {}, True),  # a dual-stack socket's IPv4 loopback
        ("192.168.1.5", {}, False),
        ("::ffff:192.168.1.5", {}, False),
        ("fe80::1%eth0", {}, False),
        ("127.0.0.1", {"X-Forwarded-For": "192.0.2.7"}, False),
        ("127.0.0.1", {"Forwarded": "for=192.0.2.7"}, False),
        ("127.0.0.1", {"X-Real-IP": "192.0.2.7"}, False),
    ],
)
def test_who_counts_as_local(peer: str, headers: dict[str, str], local: bool) -> None:
    request = make_mocked_request(
        "GET",
        "/metrics",
        headers=headers,
        transport=_Transport(peer),
    )
    assert is_local(request) is local
