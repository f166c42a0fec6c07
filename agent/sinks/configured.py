"""The sinks a site file configures: what makes each one, and opening it.

Each sink is named by the cursor the outbox keeps for it (``mqtt``, ``influx``, a
webhook's name, ``nats``). ``sink_specs`` lists them with the settings that make
them, secrets included, so a reload can tell which sinks a new file adds, removes
or changes by comparing specs; ``open_sink`` makes one, its resources on a stack the
caller closes (an InfluxDB or webhook HTTP session; the MQTT and NATS connections
are closed by their own ``close``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, runtime_checkable

from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.health import Health
from coffee_telemetry.agent.outbox.sink import Sink
from coffee_telemetry.agent.sinks.influx import open_influx_v1, open_influx_v2
from coffee_telemetry.agent.sinks.mqtt import MqttSink
from coffee_telemetry.agent.sinks.webhook import open_webhook
from coffee_telemetry.agent.tls import client_context, report_tls

if TYPE_CHECKING:  # nats-py is optional (the "central" extra)
    from coffee_telemetry.agent.sinks.nats import NatsSink

__all__ = [
    "ConnectedSink",
    "MqttSettings",
    "SinkSpec",
    "lane_parts",
    "make_mqtt",
    "mqtt_settings",
    "open_nats",
    "open_sink",
    "set_epoch",
    "sink_specs",
]

SinkKind = Literal["mqtt", "influx", "webhook", "nats"]


@dataclass(frozen=True)
class SinkSpec:
    """One configured sink: its cursor's name, its kind, and what makes it."""

    name: str
    kind: SinkKind
    #: Every setting the sink is made from (secrets compare by value).
    settings: tuple[object, ...]


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return None if get is None else str(get())


def sink_specs(cfg: Config) -> dict[str, SinkSpec]:
    """The sinks ``cfg`` configures, by name, in the order they are opened."""
    specs: list[SinkSpec] = []
    if cfg.mqtt.enabled:
        specs.append(SinkSpec("mqtt", "mqtt", (cfg.mqtt, cfg.site.id, _secret(cfg.mqtt_password))))
    if cfg.influx.enabled:
        secrets = (_secret(cfg.influx_password), _secret(cfg.influx_token))
        specs.append(SinkSpec("influx", "influx", (cfg.influx, *secrets)))
    if cfg.alerts.enabled:
        for hook in cfg.alerts.webhooks:
            headers = cfg.webhook_secret_headers.get(hook.name, {})
            secret = tuple(sorted((k, v.get_secret_value()) for k, v in headers.items()))
            specs.append(SinkSpec(hook.name, "webhook", (hook, secret)))
    nats = cfg.sinks.nats
    if nats is not None and nats.enabled:
        specs.append(SinkSpec("nats", "nats", (nats, cfg.site.id, _secret(cfg.nats_password))))
    return {spec.name: spec for spec in specs}


class MqttSettings(TypedDict):
    """``MqttSink``'s connection keywords (also ``reconnect_with``'s)."""

    host: str
    port: int
    prefix: str
    site: str
    client_id: str | None
    username: str | None
    password: str | None
    tls: bool
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_insecure: bool
    keepalive_s: int
    batch_size: int
    publish_timeout_s: float
    reconnect_max_s: float


def mqtt_settings(cfg: Config) -> MqttSettings:
    """The MQTT connection ``[mqtt]`` describes."""
    m = cfg.mqtt
    tls = m.tls
    return MqttSettings(
        host=m.host,
        port=m.port,
        prefix=m.prefix,
        site=cfg.site.id,
        client_id=m.client_id,
        username=m.username,
        password=_secret(cfg.mqtt_password),
        tls=tls is not None,
        tls_ca_file=str(tls.ca_file) if tls and tls.ca_file else None,
        tls_cert_file=str(tls.cert_file) if tls and tls.cert_file else None,
        tls_key_file=str(tls.key_file) if tls and tls.key_file else None,
        tls_insecure=bool(tls and tls.insecure),
        keepalive_s=m.keepalive_s,
        batch_size=m.batch_size,
        publish_timeout_s=m.publish_timeout_s,
        reconnect_max_s=m.reconnect_max_s,
    )


def make_mqtt(cfg: Config, health: Health) -> MqttSink:
    """The MQTT sink of ``[mqtt]`` (not connected: run its ``connection_loop``)."""
    return MqttSink(health=health, **mqtt_settings(cfg))


def open_nats(cfg: Config, health: Health) -> NatsSink | None:
    """The JetStream sink of ``[sinks.nats]``, if enabled (nats-py is imported only then).

    Raises:
        ConfigError: nats-py is not installed.
    """
    n = cfg.sinks.nats
    if n is None or not n.enabled:
        return None
    try:
        from coffee_telemetry.agent.sinks.nats import NatsSink
    except ImportError as exc:  # nats-py comes with the "central" extra
        raise ConfigError(
            [("sinks.nats", f"needs nats-py: pip install 'coffee-telemetry[central]' ({exc})")]
        ) from exc
    if n.tls is not None:
        report_tls(health, "nats", insecure=n.tls.insecure)
    return NatsSink(
        servers=n.servers,
        site=cfg.site.id,
        health=health,
        prefix=n.subject_prefix,
        stream=n.stream,
        username=n.username,
        password=_secret(cfg.nats_password),
        creds_file=n.creds_file,
        ssl_context=None if n.tls is None else client_context(n.tls),
        batch_size=n.batch_size,
        publish_timeout_s=n.publish_timeout_s,
        reconnect_max_s=n.reconnect_max_s,
        status_bucket=n.status_bucket,
        heartbeat_s=n.heartbeat_s,
    )


async def open_sink(
    cfg: Config, spec: SinkSpec, stack: AsyncExitStack, health: Health, *, epoch: str | None = None
) -> Sink | None:
    """Open the sink ``spec`` names, its HTTP session on ``stack``.

    MQTT and NATS sinks come back unconnected (run their ``connection_loop``); ``None``
    when ``spec`` is not in ``cfg``. ``epoch``: the outbox's, for NATS message ids.

    Raises:
        ConfigError: NATS is configured but nats-py is not installed.
    """
    if spec.kind == "mqtt":
        return make_mqtt(cfg, health)
    if spec.kind == "nats":
        nats = open_nats(cfg, health)
        if nats is not None and epoch is not None:
            set_epoch([nats], epoch)
        return nats
    if spec.kind == "influx":
        i = cfg.influx
        ssl_context = None if i.tls is None else client_context(i.tls)
        if i.tls is not None:
            report_tls(health, "influx", insecure=i.tls.insecure)
        if i.api == "v1":
            v1 = await stack.enter_async_context(
                open_influx_v1(
                    url=i.url,
                    database=i.database,
                    retention_policy=i.retention_policy,
                    username=i.username,
                    password=_secret(cfg.influx_password),
                    token=_secret(cfg.influx_token),
                    timeout_s=i.timeout_s,
                    batch_size=i.batch_size,
                    flush_interval_s=i.flush_interval_s,
                    gzip=i.gzip,
                    ssl_context=ssl_context,
                )
            )
            if i.create_database:
                await v1.ensure_database()
            return v1
        assert i.org is not None
        assert i.bucket is not None
        return await stack.enter_async_context(
            open_influx_v2(
                url=i.url,
                org=i.org,
                bucket=i.bucket,
                token=_secret(cfg.influx_token) or "",
                timeout_s=i.timeout_s,
                batch_size=i.batch_size,
                flush_interval_s=i.flush_interval_s,
                ssl_context=ssl_context,
            )
        )
    hook = next((h for h in cfg.alerts.webhooks if h.name == spec.name), None)
    if hook is None:
        return None
    headers = dict(hook.headers)
    for header, secret in cfg.webhook_secret_headers.get(hook.name, {}).items():
        headers[header] = secret.get_secret_value()
    return await stack.enter_async_context(
        open_webhook(url=hook.url, headers=headers, timeout_s=hook.timeout_s, name=hook.name)
    )


@runtime_checkable
class ConnectedSink(Protocol):
    """A sink that holds a connection of its own (MQTT, NATS)."""

    name: str

    async def connection_loop(self) -> None:
        """Stay connected until closed."""

    async def close(self) -> None:
        """Disconnect; ``connection_loop`` then returns."""


def lane_parts(
    sink: Sink, stack: AsyncExitStack
) -> tuple[dict[str, Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]:
    """The loops ``sink`` needs besides delivery, by interface name, and what closes it.

    Closing disconnects a connected sink and closes ``stack`` (its HTTP session).
    """
    loops: dict[str, Callable[[], Awaitable[None]]] = {}
    connected = sink if isinstance(sink, ConnectedSink) else None
    if connected is not None:
        loops[sink.name] = connected.connection_loop

    async def close() -> None:
        if connected is not None:
            await connected.close()
        await stack.aclose()

    return loops, close


@runtime_checkable
class _Epoched(Protocol):
    epoch: str | None


def set_epoch(sinks: Iterable[Sink], epoch: str) -> None:
    """Give the sinks whose message ids name the outbox's life (NATS) its ``epoch``."""
    for sink in sinks:
        if isinstance(sink, _Epoched):
            sink.epoch = epoch
