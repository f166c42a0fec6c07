"""``coffee-telemetry alerts``: the open alerts, and acknowledging one.

    coffee-telemetry alerts list -c site.toml [--json]
    coffee-telemetry alerts ack -c site.toml RULE SUBJECT [--by B] [--timeout S]

``list`` reads the alert state the agent saves (``data_dir/alerts.json``); ``ack`` goes
through the agent, as any operator command does: it publishes
``cmd/ack/<rule>/<subject>`` with the site's MQTT settings (credentials and
``[mqtt.tls]``, as the agent uses them) and waits for the reply.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import ssl
import sys
import threading
import time

from coffee_telemetry.agent.cli._common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    Subcommands,
    add_config_command,
    load,
)
from coffee_telemetry.agent.config import Config

__all__ = ["add_parser", "cmd_alerts"]


def cmd_alerts(args: argparse.Namespace) -> int:
    """List open alerts (from the agent's saved state) or acknowledge one over MQTT."""
    cfg = load(args.config)
    if args.action == "list":
        return _alerts_list(cfg, as_json=args.json)
    return _alerts_ack(cfg, args.rule, args.subject, by=args.by, timeout_s=args.timeout)


def _alerts_list(cfg: Config, *, as_json: bool) -> int:
    from coffee_telemetry.agent.alerts.engine import Engine
    from coffee_telemetry.agent.alerts.formats import alert_payload
    from coffee_telemetry.agent.alerts.kinds import build_rules

    path = cfg.agent.data_dir / "alerts.json"
    try:
        engine = Engine.restore(build_rules(cfg.alerts), path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        engine = Engine(build_rules(cfg.alerts))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    alerts = engine.alerts(time.time_ns())
    if as_json:
        print(json.dumps([alert_payload(a) for a in alerts], indent=2, ensure_ascii=False))
        return EXIT_OK
    if not alerts:
        print("no open alerts")
    for alert in alerts:
        acked = f" (acknowledged by {alert.acked_by})" if alert.acked_by else ""
        print(f"{alert.state.value:<13} {alert.rule}/{alert.subject}{acked}: {alert.message}")
    return EXIT_OK


def _alerts_ack(cfg: Config, rule: str, subject: str, *, by: str | None, timeout_s: float) -> int:
    """Publish cmd/ack/<rule>/<subject> with the site's MQTT settings and wait for the reply."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.reasoncodes import ReasonCode

    from coffee_telemetry.agent.commands import CommandRefused, check_level, escape_level

    m = cfg.mqtt
    base = f"{m.prefix}/{cfg.site.id}"
    try:
        levels = [
            check_level(escape_level(v), what=w) for v, w in ((rule, "rule"), (subject, "subject"))
        ]
    except CommandRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    topic = f"{base}/cmd/ack/{levels[0]}/{levels[1]}"
    replies: list[bytes] = []
    got = threading.Event()
    subscribed = threading.Event()
    pending: set[int] = set()
    refused: list[str] = []
    lock = threading.Lock()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"coffee-cli-{os.getpid()}")
    if m.username:
        password = cfg.mqtt_password.get_secret_value() if cfg.mqtt_password else None
        client.username_pw_set(m.username, password)
    if m.tls is not None:
        # The agent's own settings, through the same code (agent.tls): CA, client
        # certificate, and insecure (said loudly) mean here what they mean there.
        from coffee_telemetry.agent.tls import client_context

        try:
            context = client_context(m.tls)
            context.sslsocket_class = _ClosingSSLSocket
            client.tls_set_context(context)
        except (OSError, ValueError) as exc:
            print(f"error: [mqtt.tls]: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if m.tls.insecure:
            print(
                "warning: [mqtt.tls] insecure = true: the broker's certificate is not checked",
                file=sys.stderr,
            )
            client.tls_insecure_set(True)

    def on_message(c: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        replies.append(bytes(msg.payload))
        got.set()

    def on_subscribe(
        c: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: object,
    ) -> None:
        with lock:
            refused.extend(str(code) for code in reason_codes if code.is_failure)
            pending.discard(mid)
            if not pending:
                subscribed.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    try:
        client.connect(m.host, m.port, keepalive=30)
    except OSError as exc:
        print(f"error: cannot reach the MQTT broker {m.host}:{m.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    client.loop_start()
    try:
        # The reply can come at once: publish only once the broker has confirmed
        # (SUBACK) both subscriptions, so it cannot arrive before them.
        with lock:
            for reply_topic in (f"{topic}/reply", f"{base}/cmd/reply"):
                rc, mid = client.subscribe(reply_topic, qos=1)
                if rc != paho.MQTT_ERR_SUCCESS or mid is None:
                    print(f"error: cannot subscribe to {reply_topic}: {rc}", file=sys.stderr)
                    return EXIT_FAILURE
                pending.add(mid)
        if not subscribed.wait(timeout_s):
            print("error: the MQTT broker did not confirm the subscription", file=sys.stderr)
            return EXIT_FAILURE
        if refused:
            print(
                f"error: the MQTT broker refused the reply subscription: {', '.join(refused)}",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        payload = json.dumps({"by": by or getpass.getuser()}).encode()
        client.publish(topic, payload, qos=1).wait_for_publish(timeout=timeout_s)
        if not got.wait(timeout_s):
            print("error: no reply from the agent (is it running?)", file=sys.stderr)
            return EXIT_FAILURE
    finally:
        client.loop_stop()
        client.disconnect()
    reply = json.loads(replies[0])
    if not reply.get("ok"):
        print(f"error: {reply.get('error')}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"acknowledged {rule}/{subject} as {reply.get('by')}")
    return EXIT_OK


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails.

    paho leaves the socket of a failed handshake (a certificate it must refuse) open
    until the garbage collector finds it; this closes it where it failed.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def add_parser(sub: Subcommands) -> None:
    """Add ``alerts list`` and ``alerts ack`` to the command's subparsers."""
    alerts = sub.add_parser("alerts", help="open alerts; acknowledge one")
    actions = alerts.add_subparsers(dest="action", required=True)
    alert_list = add_config_command(
        actions, "list", summary="open alerts (pending, firing, acked)", run=cmd_alerts
    )
    alert_list.add_argument("--json", action="store_true", help="machine-readable output")
    alert_ack = add_config_command(
        actions, "ack", summary="acknowledge a firing alert (via MQTT)", run=cmd_alerts
    )
    alert_ack.add_argument("rule", help="e.g. wet_lot")
    alert_ack.add_argument("subject", help="e.g. the lot code")
    alert_ack.add_argument("--by", help="who (default: your login name)")
    alert_ack.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
