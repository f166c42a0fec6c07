"""Every check a site's config calls for, run side by side under one deadline.

``plan`` turns a ``Config`` into named checks (one per port, per server, per system
family); ``run_checks`` runs each on a daemon thread and waits for all of them until
the deadline. A check still running then is reported as a failure ("did not finish in
N s") and left behind: its thread cannot keep the process alive, so the technician
gets the report on time whatever hangs. A check that raises is reported, not raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coffee_telemetry.agent.config import Config
from coffee_telemetry.agent.doctor.backlog import check_outbox
from coffee_telemetry.agent.doctor.network import check_influx, check_mqtt
from coffee_telemetry.agent.doctor.result import Result, Status
from coffee_telemetry.agent.doctor.serialports import PortSpec, ServiceUser, check_port
from coffee_telemetry.agent.doctor.system import (
    check_clock,
    check_disk,
    check_storage,
    check_systemd,
)
from coffee_telemetry.agent.doctor.timesources import check_time_sources
from coffee_telemetry.agent.onboard.lineformat import LineSettings

__all__ = ["Check", "Options", "plan", "port_specs", "run_checks"]


@dataclass(frozen=True, slots=True)
class Check:
    """A named check: ``run`` returns its results; ``check``/``subject`` name it on failure."""

    check: str
    subject: str
    run: Callable[[], list[Result]]


@dataclass(frozen=True, slots=True)
class Options:
    """How thorough ``doctor`` is.

    Attributes:
        user: Whose access to the ports is checked.
        listen_s: Seconds to listen on each free port.
        guess_s: Seconds to look for a meter's settings when its bytes are unreadable.
        timeout_s: Each network request's timeout.
        unit: The systemd unit's name.
        ports: Check the serial ports at all.
    """

    user: ServiceUser
    listen_s: float = 3.0
    guess_s: float = 8.0
    timeout_s: float = 5.0
    unit: str = "coffee-telemetry"
    ports: bool = True


def port_specs(cfg: Config) -> list[PortSpec]:
    """Each enabled device's and each bus's port with its configured settings."""
    specs = []
    for owner in (*(d for d in cfg.devices if d.enabled), *cfg.buses):
        serial = owner.serial
        settings = LineSettings(serial.baudrate, serial.bytesize, serial.parity, serial.stopbits)
        specs.append(PortSpec(owner.id, owner.port, settings))
    return specs


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return None if get is None else str(get())


def plan(cfg: Config, opts: Options) -> list[Check]:
    """The checks ``cfg`` calls for, in the order they are reported."""
    checks: list[Check] = []
    if opts.ports:
        for spec in port_specs(cfg):
            checks.append(
                Check(
                    "serial",
                    spec.subject,
                    lambda spec=spec: check_port(  # type: ignore[misc]
                        spec, opts.user, listen_s=opts.listen_s, guess_s=opts.guess_s
                    ),
                )
            )
    if cfg.mqtt.enabled:
        password = _secret(cfg.mqtt_password)
        checks.append(
            Check("mqtt", "mqtt", lambda: check_mqtt(cfg.mqtt, password, timeout_s=opts.timeout_s))
        )
    if cfg.influx.enabled:
        checks.append(
            Check(
                "influx",
                "influx",
                lambda: check_influx(
                    cfg.influx,
                    password=_secret(cfg.influx_password),
                    token=_secret(cfg.influx_token),
                    timeout_s=opts.timeout_s,
                ),
            )
        )
    data_dir = cfg.agent.data_dir
    outbox_dir = cfg.outbox_path.parent
    checks += [
        Check("clock", "clock", lambda: [check_clock()]),
        Check(
            "time",
            "time",
            lambda: check_time_sources(cfg, listen=opts.ports, listen_s=opts.listen_s),
        ),
        Check("disk", "disk", lambda: [check_disk(data_dir, quota_mb=cfg.outbox.max_mb)]),
        Check(
            "disk",
            "disk",
            lambda: [check_storage(outbox_dir, synchronous=cfg.outbox.synchronous)],
        ),
        Check("outbox", "outbox", lambda: check_outbox(cfg.outbox_path)),
        Check("systemd", "systemd", lambda: [check_systemd(opts.unit)]),
    ]
    return checks


def run_checks(
    checks: Sequence[Check],
    *,
    deadline_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[Result]:
    """Run ``checks`` side by side; results in plan order, late ones as failures."""
    slots: list[list[Result] | None] = [None] * len(checks)

    def work(index: int, check: Check) -> None:
        try:
            slots[index] = check.run()
        except Exception as exc:  # a broken check is reported, not raised
            slots[index] = [
                Result(
                    check.check,
                    check.subject,
                    Status.FAIL,
                    "check_crashed",
                    "fix_report",
                    {"error": f"{type(exc).__name__}: {exc}"},
                )
            ]

    threads = [
        threading.Thread(target=work, args=(i, c), name=f"doctor[{c.subject}]", daemon=True)
        for i, c in enumerate(checks)
    ]
    for thread in threads:
        thread.start()
    end = clock() + deadline_s
    for thread in threads:
        thread.join(max(0.0, end - clock()))
    results: list[Result] = []
    for check, slot in zip(checks, slots, strict=True):
        if slot is None:
            slot = [
                Result(
                    check.check,
                    check.subject,
                    Status.FAIL,
                    "check_timeout",
                    "fix_report",
                    {"seconds": float(deadline_s)},
                )
            ]
        results.extend(slot)
    return results
