"""The ``humid_storage`` alert rule on an injected clock: RH above the limit for hours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from coffee_telemetry.agent.alerts import (
    Alert,
    AlertState,
    Engine,
    HumidStorageRule,
    Tick,
    build_rules,
    default_rules,
)
from coffee_telemetry.agent.config import AlertsConfig, parse_config
from coffee_telemetry.agent.errors import ConfigError, RuleError
from coffee_telemetry.agent.readings import Reading, Stamper
from coffee_telemetry.drivers.events import FieldValue

S = 1_000_000_000
H = 3600 * S
T0 = 1_796_035_314 * S
PENDING, FIRING, RESOLVED = AlertState.PENDING, AlertState.FIRING, AlertState.RESOLVED


def climate(
    rh: FieldValue, at: int, device: str = "armazem-1-norte", **more: FieldValue
) -> Reading:
    return Stamper(clock_ns=lambda: at).stamp(
        device=device,
        measurement="climate",
        fields={"temperature_c": 24.5, "rh_pct": rh, **more},
        tags={"site": "s1", "device": device, "area": "armazem-1"},
    )


def states(alerts: Sequence[Alert]) -> list[tuple[AlertState, bool]]:
    return [(a.state, a.notify) for a in alerts]


def test_defaults() -> None:
    rule = HumidStorageRule()
    assert (rule.threshold_pct, rule.hysteresis_pct, rule.pending_s) == (70.0, 2.0, 21600.0)
    assert rule in default_rules()


def test_humid_for_six_hours_fires_once() -> None:
    engine = Engine([HumidStorageRule()])
    assert states(engine.on_reading(climate(72.0, T0), T0)) == [(PENDING, False)]
    at = T0 + 6 * H - S
    assert engine.on_reading(climate(74.5, at), at) == []
    assert engine.on_tick(Tick(), T0 + 6 * H - 1) == []
    (alert,) = engine.on_tick(Tick(), T0 + 6 * H)
    assert (alert.state, alert.notify, alert.subject) == (FIRING, True, "armazem-1-norte")
    assert alert.data["rh_pct"] == 74.5
    assert alert.data["area"] == "armazem-1"
    assert alert.message == (
        "ALERTA — Armazém úmido: área armazem-1, sensor armazem-1-norte: "
        "umidade relativa 74,5 % (limite 70,0 % por 6,0 h), 24,5 °C"
    )
    assert engine.messages(alert)["en"] == (
        "ALERT — Humid storage: area armazem-1, sensor armazem-1-norte: "
        "relative humidity 74.5 % (limit 70.0 % for 6.0 h), 24.5 °C"
    )
    later = T0 + 7 * H
    assert engine.on_reading(climate(73.0, later), later) == []


def test_a_dry_spell_while_pending_starts_the_wait_again() -> None:
    engine = Engine([HumidStorageRule()])
    engine.on_reading(climate(71.0, T0), T0)
    at = T0 + 3 * H
    assert states(engine.on_reading(climate(67.9, at), at)) == [(RESOLVED, False)]
    again = T0 + 4 * H
    assert states(engine.on_reading(climate(70.0, again), again)) == [(PENDING, False)]
    assert engine.on_tick(Tick(), T0 + 6 * H) == []  # six hours from the first, not enough
    assert states(engine.on_tick(Tick(), again + 6 * H)) == [(FIRING, True)]


def test_hysteresis_keeps_it_firing_until_below_the_clear_line() -> None:
    engine = Engine([HumidStorageRule(pending_s=0)])
    assert states(engine.on_reading(climate(70.0, T0), T0)) == [(FIRING, True)]
    assert engine.on_reading(climate(68.0, T0 + H), T0 + H) == []  # at the clear line: holds
    (alert,) = engine.on_reading(climate(67.9, T0 + 2 * H), T0 + 2 * H)
    assert (alert.state, alert.notify) == (RESOLVED, True)
    assert alert.message.startswith("RESOLVIDO — Armazém úmido: área armazem-1")


def test_below_the_threshold_other_sensors_and_bad_values_do_nothing() -> None:
    engine = Engine([HumidStorageRule()])
    assert engine.on_reading(climate(69.9, T0), T0) == []
    assert engine.on_reading(climate("wet", T0 + S), T0 + S) == []
    assert engine.on_reading(climate(float("nan"), T0 + 2 * S), T0 + 2 * S) == []
    (pending,) = engine.on_reading(climate(80.0, T0 + 3 * S, device="armazem-2"), T0 + 3 * S)
    assert pending.subject == "armazem-2"
    state = engine.state("humid_storage", "armazem-1-norte")
    assert state is None or not state.open


def test_other_measurements_are_not_read() -> None:
    engine = Engine([HumidStorageRule(pending_s=0)])
    moisture = Stamper(clock_ns=lambda: T0).stamp(
        device="umid-1", measurement="moisture", fields={"rh_pct": 99.0}, tags={"site": "s1"}
    )
    assert engine.on_reading(moisture, T0) == []


def test_config_section(tmp_path: Path) -> None:
    cfg = AlertsConfig.model_validate(
        {"humid_storage": {"threshold_pct": 65, "hysteresis_pct": 1, "pending_s": 7200}}
    )
    (rule,) = [r for r in build_rules(cfg) if isinstance(r, HumidStorageRule)]
    assert (rule.threshold_pct, rule.hysteresis_pct, rule.pending_s) == (65.0, 1.0, 7200.0)
    off = AlertsConfig.model_validate({"humid_storage": {"enabled": False}})
    assert not any(isinstance(r, HumidStorageRule) for r in build_rules(off))
    for bad in ({"threshold_pct": 0}, {"threshold_pct": 100.5}, {"pending_s": -1}):
        with pytest.raises(ConfigError, match=r"alerts\.humid_storage"):
            parse_config(
                {
                    "site": {"id": "s", "timezone": "UTC"},
                    "agent": {"data_dir": str(tmp_path)},
                    "alerts": {"humid_storage": bad},
                }
            )
    with pytest.raises(RuleError, match="threshold_pct"):
        HumidStorageRule(threshold_pct=-3.0)
