"""The ``calibration_due`` and ``meter_disagreement`` rules, pure, on an injected clock."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.alerts import (
    DATA_FIELDS,
    Alert,
    AlertState,
    CalibrationDueRule,
    Engine,
    MeterDisagreementRule,
    Tick,
    build_rules,
    default_rules,
)
from coffee_telemetry.agent.config import AlertsConfig, parse_config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.evidence.meters import calibration_status
from coffee_telemetry.agent.readings import Reading

NS = 1_000_000_000
T0 = 1_793_707_200 * NS
FIRING, RESOLVED = AlertState.FIRING, AlertState.RESOLVED


def states(alerts: Sequence[Alert]) -> list[tuple[AlertState, bool]]:
    return [(a.state, a.notify) for a in alerts]


def status(days: int, *, device: str = "umid-1", seq: int = 1) -> Reading:
    return Reading(
        ts_ns=T0 + seq,
        seq=seq,
        device=device,
        measurement="calibration_status",
        fields={
            "days_left": days,
            "due": "2026-11-20",
            "certificate": "RBC-1234/26",
            "calibration": "cal-0123456789ab",
        },
        tags={"site": "s1", "device": device, "station": "recepcao"},
    )


def moisture(device: str, pct: float, at_s: float, *, lot: str = "L-0042") -> Reading:
    return Reading(
        ts_ns=T0 + round(at_s * NS),
        seq=round(at_s),
        device=device,
        measurement="moisture",
        fields={"moisture_pct": pct},
        tags={"site": "s1", "device": device, "station": "recepcao", "lot": lot},
    )


def test_both_rules_are_on_by_default_with_the_documented_settings() -> None:
    cal = next(r for r in default_rules() if isinstance(r, CalibrationDueRule))
    meters = next(r for r in default_rules() if isinstance(r, MeterDisagreementRule))
    assert cal.warn_days == 30
    assert (meters.tolerance_pp, meters.window_s) == (0.8, 3600.0)
    off = AlertsConfig.model_validate(
        {"calibration_due": {"enabled": False}, "meter_disagreement": {"enabled": False}}
    )
    names = {r.name for r in build_rules(off)}
    assert not names & {"calibration_due", "meter_disagreement"}


@pytest.mark.parametrize(
    "section",
    [
        {"calibration_due": {"warn_days": -1}},
        {"calibration_due": {"warn_days": 400}},
        {"meter_disagreement": {"tolerance_pp": 0}},
        {"meter_disagreement": {"tolerance_pp": "nan"}},
        {"meter_disagreement": {"window_s": 0}},
        {"meter_disagreement": {"colour": 1}},
    ],
)
def test_bad_settings_name_their_key(section: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"alerts\.(calibration_due|meter_disagreement)\."):
        parse_config({"site": {"id": "s1"}, "alerts": section})


# -- calibration_due -------------------------------------------------------------------------


def test_calibration_due_fires_within_the_warning_days_and_clears_on_a_new_one() -> None:
    engine = Engine([CalibrationDueRule()])
    assert engine.on_reading(status(31), T0) == []
    (alert,) = engine.on_reading(status(30, seq=2), T0 + NS)
    assert (alert.state, alert.notify, alert.subject) == (FIRING, True, "umid-1")
    assert alert.data["days_left"] == 30
    assert alert.data["calibration"] == "cal-0123456789ab"
    assert alert.message == (
        "ALERTA — Calibração vencendo: medidor umid-1, certificado RBC-1234/26: "
        "calibração vence em 2026-11-20 (em 30 dias)"
    )
    assert engine.on_reading(status(-3, seq=3), T0 + 2 * NS) == []  # still firing
    assert engine.messages(engine.alerts(T0 + 2 * NS)[0])["en"].endswith(
        "calibration OVERDUE since 2026-11-20 (3 days)"
    )
    assert states(engine.on_reading(status(340, seq=4), T0 + 3 * NS)) == [(RESOLVED, True)]


def test_calibration_due_repeats_weekly_until_acknowledged() -> None:
    engine = Engine([CalibrationDueRule()])
    engine.on_reading(status(10), T0)
    week = 7 * 86400 * NS
    assert engine.on_tick(Tick(), T0 + week - 1) == []
    (repeat,) = engine.on_tick(Tick(), T0 + week)
    assert repeat.repeat == 1


def test_status_readings_from_config_drive_the_rule() -> None:
    dev = parse_config(
        {
            "site": {"id": "s1"},
            "devices": [
                {
                    "id": "umid-1",
                    "driver": "moisture.ticket",
                    "port": "/dev/x",
                    "meter": {"calibration": {"date": "2026-01-10", "certificate": "C-1"}},
                }
            ],
        }
    ).devices[0]
    engine = Engine([CalibrationDueRule(warn_days=30)])
    for day, fired in ((datetime.date(2026, 12, 10), False), (datetime.date(2026, 12, 11), True)):
        (draft,) = calibration_status([dev], day)
        reading = Reading(
            ts_ns=T0, seq=1, device=draft.device, measurement=draft.measurement,
            fields=draft.fields, tags=draft.tags,
        )  # fmt: skip
        assert bool(engine.on_reading(reading, T0)) is fired, day


# -- meter_disagreement ----------------------------------------------------------------------


def test_two_meters_beyond_the_tolerance_fire_and_agreeing_again_clears() -> None:
    engine = Engine([MeterDisagreementRule()])
    assert engine.on_reading(moisture("umid-1", 11.0, 0), T0) == []
    assert engine.on_reading(moisture("umid-2", 11.5, 60), T0) == []  # 0.5 pp: within
    (alert,) = engine.on_reading(moisture("umid-2", 12.0, 120), T0)
    assert (alert.state, alert.subject) == (FIRING, "L-0042")
    assert alert.data["diff_pp"] == -1.0
    assert (alert.data["device"], alert.data["other_device"]) == ("umid-2", "umid-1")
    assert alert.message == (
        "ALERTA — Medidores discordam: lote L-0042: umid-2 12,0 % e umid-1 11,0 %, "
        "diferença 1,00 pp (tolerância 0,8 pp)"
    )
    assert engine.messages(alert)["en"].startswith("ALERT — Meters disagree: lot L-0042:")
    # Another lot's readings say nothing about this one.
    assert engine.on_reading(moisture("umid-1", 11.9, 130, lot="L-0043"), T0) == []
    assert states(engine.on_reading(moisture("umid-1", 11.9, 180), T0)) == [(RESOLVED, True)]


def test_readings_further_apart_than_the_window_are_not_compared() -> None:
    engine = Engine([MeterDisagreementRule(window_s=600)])
    engine.on_reading(moisture("umid-1", 11.0, 0), T0)
    assert engine.on_reading(moisture("umid-2", 13.0, 601), T0) == []
    (alert,) = engine.on_reading(moisture("umid-1", 11.0, 1000), T0)  # 399 s from umid-2
    assert alert.data["diff_pp"] == 2.0


def test_one_meter_alone_never_fires_and_a_lone_reading_keeps_an_open_alert() -> None:
    engine = Engine([MeterDisagreementRule()])
    for i in range(20):
        assert engine.on_reading(moisture("umid-1", 9.0 + i, i * 10), T0) == []
    engine.on_reading(moisture("umid-2", 40.0, 200), T0)
    assert engine.alerts(T0)
    # umid-1 reads again after umid-2's reading left the window: nothing to compare.
    assert engine.on_reading(moisture("umid-1", 28.0, 200 + 3601), T0) == []
    assert engine.alerts(T0)


def test_memory_survives_a_snapshot_and_is_swept_when_stale() -> None:
    rules = [MeterDisagreementRule()]
    engine = Engine(rules)
    engine.on_reading(moisture("umid-1", 11.0, 0), T0)
    restored = Engine.restore(rules, engine.snapshot())
    (alert,) = restored.on_reading(moisture("umid-2", 12.1, 30), T0)
    assert alert.data["other_pct"] == 11.0
    calm = Engine(rules)
    calm.on_reading(moisture("umid-1", 11.0, 0), T0)
    assert calm.state("meter_disagreement", "L-0042") is not None
    calm.on_tick(Tick(), T0 + 2 * 86400 * NS)
    calm.on_tick(Tick(), T0 + 4 * 86400 * NS)
    assert calm.state("meter_disagreement", "L-0042") is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.floats(min_value=5, max_value=30, allow_nan=False),
            st.integers(min_value=0, max_value=20_000),
        ),
        max_size=40,
    )
)
def test_fuzz_alert_data_keeps_its_types_and_tracks_the_rule(
    readings: list[tuple[str, float, int]],
) -> None:
    rule = MeterDisagreementRule()
    engine = Engine([rule])
    for device, pct, at in sorted(readings, key=lambda r: r[2]):
        for alert in engine.on_reading(moisture(device, pct, at), T0):
            for key, value in alert.data.items():
                assert isinstance(value, DATA_FIELDS[key]), key
            if alert.state is FIRING:
                diff = alert.data["diff_pp"]
                assert isinstance(diff, float)
                assert abs(diff) > rule.tolerance_pp
    state = engine.state(rule.name, "L-0042")
    if state is not None and state.memory is not None:
        assert len({d for d, _, _ in state.memory.latest}) == len(state.memory.latest)  # type: ignore[union-attr]
