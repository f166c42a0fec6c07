"""TLS for every client the agent and its commands open: one reading of ``[*.tls]``.

``[mqtt.tls]`` and ``[influx.tls]`` (``TlsConfig``) say which CA to trust, which
client certificate to show, and whether to check the server at all. Every client
builds its ``ssl.SSLContext`` here (the InfluxDB sinks, ``coffee-telemetry alerts
ack``, notifiers to come), so a setting means the same thing everywhere.

``insecure = true`` turns certificate and host name checks off: anyone on the
path can then read and change the traffic. It is for a test bench, never for a
site; so it is said loudly: one warning in the log when the client starts, and
``tls.<client>.certificates_checked = false`` in ``GET /api/health`` for as long
as the agent runs.
"""

from __future__ import annotations

import logging
import ssl

from coffee_telemetry.agent.config import TlsConfig
from coffee_telemetry.agent.health import Health

__all__ = ["TlsStates", "client_context", "report_tls"]

log = logging.getLogger(__name__)


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    """The context a client connects with: the system's CAs unless ``ca_file``; checks on.

    Raises:
        OSError: A file cannot be read.
        ssl.SSLError: A file is not a certificate or key.
    """
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        ctx.load_cert_chain(
            str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
        )
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TlsStates:
    """Each TLS client's settings as shown in health (``counters.tls``)."""

    def __init__(self) -> None:
        self.clients: dict[str, dict[str, object]] = {}

    def __call__(self) -> dict[str, object]:
        return dict(sorted(self.clients.items()))


def report_tls(health: Health | None, client: str, *, insecure: bool) -> None:
    """Record that ``client`` speaks TLS; if ``insecure``, warn (once per call) and show it."""
    if insecure:
        log.warning(
            "TLS to %s does not check the server's certificate ([%s.tls] insecure = true):"
            " anyone on the network path can read and change this traffic",
            client,
            client,
        )
    if health is None:
        return
    states = health.counters.get("tls")
    if not isinstance(states, TlsStates):
        states = TlsStates()
        health.counters["tls"] = states
    states.clients[client] = {"tls": True, "certificates_checked": not insecure}
