"""Alert rules: fire/clear boundaries per rule, the lifecycle, persistence, outputs.

Everything runs on explicit ``now_ns`` values; no clock, no sleeps.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.alerts import (
    DATA_FIELDS,
    Alert,
    AlertState,
    CalibrationDueRule,
    DeviceSilentRule,
    DeviceSnapshot,
    Engine,
    ErrorMemory,
    HullerFaultRule,
    HumidStorageRule,
    JamMemory,
    Lang,
    LotMemory,
    MeterDisagreementRule,
    Rule,
    RuleError,
    RuleState,
    ServiceRule,
    Severity,
    SinkBacklogRule,
    SinkSnapshot,
    Tick,
    WetLotRule,
    WiringMemory,
    acknowledge,
    alert_payload,
    alert_point,
    alert_topic,
    build_rules,
    default_rules,
    evaluate,
    from_json,
    to_json,
)
from coffee_telemetry.agent.config import AlertsConfig, parse_config
from coffee_telemetry.agent.errors import ConfigError
from coffee_telemetry.agent.health import DeviceHealth, DeviceState
from coffee_telemetry.agent.readings import Reading

S = 1_000_000_000
#: 2026-11-30 10:41:54 UTC.
T0 = 1_796_035_314 * S

FIRING = AlertState.FIRING
RESOLVED = AlertState.RESOLVED
PENDING = AlertState.PENDING
ACKED = AlertState.ACKNOWLEDGED


def moisture(
    lot: str | None,
    pct: object,
    *,
    product: str = "CAFE",
    station: str = "recepcao",
    measurement: str = "moisture",
) -> Reading:
    tags = {"site": "ourofino", "device": "umid-1", "station": station, "product": product}
    if lot is not None:
        tags["lot"] = lot
    return Reading(
        ts_ns=T0,
        seq=1,
        device="umid-1",
        measurement=measurement,
        fields={"moisture_pct": pct},  # type: ignore[dict-item]
        tags=tags,
    )


def huller(running: bool, bags: float, hours: float | None = None) -> Reading:
    fields: dict[str, float | bool] = {"running": running, "bags_total": bags}
    if hours is not None:
        fields["hours_total"] = hours
    return Reading(
        ts_ns=T0,
        seq=1,
        device="desc-1",
        measurement="huller",
        fields=fields,
        tags={"site": "ourofino", "device": "desc-1", "station": "beneficio"},
    )


def status(task_state: str | None, *, remaining_h: float = 5.0) -> Reading:
    fields: dict[str, float | bool | str] = {
        "hours_since": 250.0 - remaining_h,
        "interval_h": 250.0,
        "remaining_h": remaining_h,
        "due": task_state in ("due", "overdue"),
        "overdue": task_state == "overdue",
    }
    if task_state is not None:
        fields["state"] = task_state
    return Reading(
        ts_ns=T0,
        seq=1,
        device="desc-1",
        measurement="maintenance_status",
        fields=fields,
        tags={"site": "ourofino", "device": "desc-1", "task": "oleo"},
    )


def device_tick(
    *,
    driver: str = "moisture.tesma",
    device: str = "umid-1",
    last_frame_ns: int | None = T0,
    since_ns: int = T0,
    online: bool = True,
    errors: int = 0,
) -> Tick:
    snap = DeviceSnapshot(
        driver=driver,
        online=online,
        since_ns=since_ns,
        last_frame_ns=last_frame_ns,
        errors=errors,
        last_error="counter: no response" if errors else None,
        station="recepcao",
    )
    return Tick(devices={device: snap})


def sink_tick(backlog: int, last_delivery_ns: int | None = T0, since_ns: int = T0) -> Tick:
    snap = SinkSnapshot(backlog=backlog, last_delivery_ns=last_delivery_ns, since_ns=since_ns)
    return Tick(sinks={"influx": snap})


def feed_lot(engine: Engine, values: Sequence[float], *, lot: str = "L-1") -> list[list[Alert]]:
    """One reading a second; the events of each reading."""
    return [engine.on_reading(moisture(lot, v), T0 + i * S) for i, v in enumerate(values)]


def first_index(per_reading: list[list[Alert]], state: AlertState) -> int | None:
    for i, alerts in enumerate(per_reading):
        if any(a.state is state for a in alerts):
            return i
    return None


def states(alerts: Sequence[Alert]) -> list[tuple[AlertState, bool]]:
    return [(a.state, a.notify) for a in alerts]


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: WetLotRule(k=4, n=3), "k"),
        (lambda: WetLotRule(k=0), "k"),
        (lambda: WetLotRule(n=0), "n"),
        (lambda: WetLotRule(hysteresis_pct=-0.1), "hysteresis_pct"),
        (lambda: WetLotRule(default_threshold_pct=math.nan), "default_threshold_pct"),
        (lambda: WetLotRule(thresholds_pct={"natural": 0.0}), "thresholds_pct.natural"),
        (lambda: WetLotRule(mean_min_readings=0), "mean_min_readings"),
        (lambda: WetLotRule(name="Wet Lot"), "name"),
        (lambda: WetLotRule(name="a/b"), "name"),
        (lambda: DeviceSilentRule(pending_s=-1), "pending_s"),
        (lambda: DeviceSilentRule(repeat_s=0), "repeat_s"),
        (lambda: DeviceSilentRule(silent_s_by_device={"x": 0.0}), "silent_s_by_device.x"),
        (lambda: HullerFaultRule(error_count=0), "error_count"),
        (lambda: HullerFaultRule(jam_s=math.inf), "jam_s"),
        (lambda: SinkBacklogRule(min_backlog=0), "min_backlog"),
    ],
)
def test_invalid_rules_are_refused_naming_the_key(make: Callable[[], Rule], key: str) -> None:
    with pytest.raises(RuleError) as info:
        make()
    assert info.value.key == key
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("alerts", "key"),
    [
        ({"wet_lot": {"k": 4, "n": 3}}, "alerts.wet_lot.k"),
        (
            {"wet_lot": {"thresholds_pct": {"natural": 0.0}}},
            "alerts.wet_lot.thresholds_pct.natural",
        ),
        ({"wet_lot": {"repeat_s": math.inf}}, "alerts.wet_lot.repeat_s"),
        ({"wet_lot": {"mean_min_readings": 2}}, "alerts.wet_lot.mean_min_readings"),  # code only
        (
            {"device_silent": {"silent_s_by_device": {"x": 0.0}}},
            "alerts.device_silent.silent_s_by_device.x",
        ),
        ({"huller_fault": {"jam_s": math.inf}}, "alerts.huller_fault.jam_s"),
        ({"service": {"overdue_repeat_s": 0}}, "alerts.service.overdue_repeat_s"),
        ({"sink_backlog": {"undelivered_s": math.nan}}, "alerts.sink_backlog.undelivered_s"),
    ],
)
def test_rule_settings_in_the_site_file_are_refused_naming_the_key(
    alerts: dict[str, object], key: str
) -> None:
    # The same declarations as the rules' own: nothing the rule would refuse gets past.
    with pytest.raises(ConfigError) as info:
        parse_config({"site": {"id": "s1"}, "alerts": alerts})
    assert key in dict(info.value.problems)


def test_rules_take_their_section_settings() -> None:
    cfg = AlertsConfig.model_validate(
        {
            "wet_lot": {"thresholds_pct": {"Natural": 13}, "k": 1, "n": 1, "pending_s": 5},
            "device_silent": {"silent_s_by_device": {"umid-1": 20}, "repeat_s": 60},
            "huller_fault": {"offline_s": 5, "jam_s": 90},
            "service": {"overdue_repeat_s": 600},
            "sink_backlog": {"undelivered_s": 30},
            "humid_storage": {"threshold_pct": 75, "pending_s": 3600},
            "calibration_due": {"warn_days": 45},
            "meter_disagreement": {"tolerance_pp": 0.5, "window_s": 600},
        }
    )
    wet, silent, fault, due, overdue, backlog, humid, calibration, meters = build_rules(cfg)
    assert wet == WetLotRule(thresholds_pct={"Natural": 13.0}, k=1, n=1, pending_s=5.0)
    assert wet.threshold_for("NATURAL") == 13.0
    assert silent == DeviceSilentRule(silent_s_by_device={"umid-1": 20.0}, repeat_s=60.0)
    assert fault == HullerFaultRule(offline_s=5.0, jam_s=90.0)
    assert due == ServiceRule()
    assert overdue == ServiceRule(
        name="service_overdue", level="overdue", severity=Severity.CRITICAL, repeat_s=600.0
    )
    assert backlog == SinkBacklogRule(undelivered_s=30.0)
    assert humid == HumidStorageRule(threshold_pct=75.0, pending_s=3600.0)
    assert calibration == CalibrationDueRule(warn_days=45)
    assert meters == MeterDisagreementRule(tolerance_pp=0.5, window_s=600.0)
    assert tuple(build_rules(AlertsConfig())) == default_rules()
    with pytest.raises(TypeError, match="not built from"):
        WetLotRule.from_config(cfg.sink_backlog)


def test_rule_names_must_be_unique() -> None:
    with pytest.raises(RuleError, match="two rules"):
        Engine([WetLotRule(), WetLotRule(thresholds_pct={"x": 13.0})])


def test_readings_visit_only_the_rules_of_their_measurement() -> None:
    engine = Engine(default_rules())
    assert [r.name for r in engine.rules_for("moisture")] == ["wet_lot", "meter_disagreement"]
    assert [r.name for r in engine.rules_for("huller")] == ["huller_fault"]
    assert [r.name for r in engine.rules_for("maintenance_status")] == [
        "service_due",
        "service_overdue",
    ]
    assert engine.rules_for("scale") == ()
    assert engine.on_reading(moisture("L-1", 20.0, measurement="scale"), T0) == []


# -- wet_lot -------------------------------------------------------------------------------

#: (readings, index of the reading that fires it or None); threshold 12.5, k=2, n=3.
WET_FIRES = [
    ([12.4, 12.4, 12.4], None),
    ([12.49, 12.49, 12.49, 12.49], None),
    ([12.5], 0),  # the mean of one reading, at the threshold
    ([11.0, 12.5], None),  # 1 of 2 at or above; mean 11.75
    ([11.0, 12.5, 12.6], 2),  # 2 of the last 3
    ([10.0, 12.5, 10.0, 12.5], 3),  # window 12.5, 10.0, 12.5
    ([10.0, 12.5, 10.0, 10.0, 12.5], None),  # window 10.0, 10.0, 12.5; mean 11.0
    ([12.3, 12.3, 12.9], 2),  # mean 12.5 exactly
]


@pytest.mark.parametrize(("values", "fires_at"), WET_FIRES)
def test_wet_lot_fire_boundary(values: list[float], fires_at: int | None) -> None:
    per_reading = feed_lot(Engine([WetLotRule()]), values)
    assert first_index(per_reading, FIRING) == fires_at


#: (readings, index of the reading that resolves it or None); fired by the first reading.
#: Clear below 12.0 (threshold 12.5 - hysteresis 0.5).
WET_CLEARS = [
    ([12.5, 12.0, 12.0, 12.0], None),  # at the clear line is not below it
    ([12.5, 12.4, 12.1, 12.3, 12.0], None),  # in the band nothing changes
    ([12.5, 11.9, 11.9], None),  # 1 of 3 at or above 12.0, but mean 12.1
    ([12.5, 11.0], 1),  # 1 of 2 at or above 12.0; mean 11.75
    ([13.0, 13.0, 11.0, 11.0, 11.0], 4),  # at 3: mean 12.0 holds; at 4: mean 11.8
    ([13.0, 12.4, 11.5, 11.0], 3),  # window 12.4, 11.5, 11.0; mean 11.975
]


@pytest.mark.parametrize(("values", "resolves_at"), WET_CLEARS)
def test_wet_lot_clear_boundary(values: list[float], resolves_at: int | None) -> None:
    per_reading = feed_lot(Engine([WetLotRule()]), values)
    assert first_index(per_reading, FIRING) == 0
    assert first_index(per_reading, RESOLVED) == resolves_at


def test_wet_lot_thresholds_per_product_ignore_case() -> None:
    rule = WetLotRule(thresholds_pct={"Natural": 13.0}, k=1, n=1)
    assert rule.threshold_for("NATURAL") == 13.0
    assert rule.threshold_for("CAFE") == 12.5
    engine = Engine([rule])
    assert engine.on_reading(moisture("L-1", 12.9, product="natural"), T0) == []
    assert states(engine.on_reading(moisture("L-1", 13.0, product="natural"), T0 + S)) == [
        (FIRING, True)
    ]
    assert states(engine.on_reading(moisture("L-2", 12.5, product="arabica"), T0)) == [
        (FIRING, True)
    ]


def test_wet_lot_mean_waits_for_enough_readings() -> None:
    rule = WetLotRule(k=3, n=3, mean_min_readings=2)
    per_reading = feed_lot(Engine([rule]), [13.0, 12.0])
    assert states(per_reading[0]) == []
    assert states(per_reading[1]) == [(FIRING, True)]  # mean 12.5 counts from 2 readings


@pytest.mark.parametrize(
    "reading",
    [
        moisture(None, 14.0),
        moisture("", 14.0),
        moisture("L-1", True),
        moisture("L-1", "14.0"),
        moisture("L-1", math.nan),
        moisture("L-1", 14.0, measurement="scale"),
        dataclasses.replace(moisture("L-1", 14.0), fields={"temperature_c": 30.0}),
    ],
)
def test_wet_lot_ignores_readings_without_a_lot_or_a_moisture(reading: Reading) -> None:
    engine = Engine([WetLotRule(k=1, n=1)])
    assert engine.on_reading(reading, T0) == []
    assert engine.state("wet_lot", "L-1") is None


def test_wet_lot_carries_lot_station_count_max_mean() -> None:
    engine = Engine([WetLotRule()])
    per_reading = feed_lot(engine, [12.0, 12.6, 12.7])
    (alert,) = per_reading[2]
    assert alert.rule == "wet_lot"
    assert alert.subject == "L-1"
    assert alert.severity is Severity.CRITICAL
    assert alert.since_ns == alert.at_ns == T0 + 2 * S
    assert alert.data["lot"] == "L-1"
    assert alert.data["station"] == "recepcao"
    assert alert.data["count"] == 3
    assert alert.data["max_pct"] == 12.7
    assert alert.data["mean_pct"] == pytest.approx(12.433333)
    assert alert.data["threshold_pct"] == 12.5
    assert alert.data["clear_below_pct"] == 12.0


def test_wet_lot_one_alert_per_lot_and_data_follows_readings() -> None:
    engine = Engine([WetLotRule(repeat_s=None)])
    assert states(engine.on_reading(moisture("L-1", 13.0), T0)) == [(FIRING, True)]
    assert states(engine.on_reading(moisture("L-2", 13.0), T0)) == [(FIRING, True)]
    for i in range(5):
        assert engine.on_reading(moisture("L-1", 13.5), T0 + (i + 1) * S) == []
    state = engine.state("wet_lot", "L-1")
    assert state is not None
    assert state.data["count"] == 6
    assert state.data["max_pct"] == 13.5


def test_wet_lot_is_forgotten_after_a_quiet_spell() -> None:
    engine = Engine([WetLotRule(forget_after_s=3600.0, repeat_s=None)])
    engine.on_reading(moisture("L-1", 13.0), T0)
    assert engine.on_tick(Tick(), T0 + 3599 * S) == []
    (alert,) = engine.on_tick(Tick(), T0 + 3600 * S)
    assert (alert.state, alert.notify, alert.data["forgotten"]) == (RESOLVED, True, True)
    assert "lote esquecido" in alert.message
    assert engine.state("wet_lot", "L-1") is None
    # A dry lot is freed by the hourly sweep; a reading later starts afresh either way.
    engine.on_reading(moisture("L-2", 11.0), T0 + 3600 * S)
    engine.on_tick(Tick(), T0 + 2 * 3600 * S)
    engine.on_tick(Tick(), T0 + 3 * 3600 * S)
    assert engine.state("wet_lot", "L-2") is None
    (alert,) = engine.on_reading(moisture("L-1", 13.0), T0 + 4 * 3600 * S)
    assert alert.data["count"] == 1


def test_wet_lot_forgotten_on_a_reading_before_any_tick() -> None:
    engine = Engine([WetLotRule(forget_after_s=60.0, repeat_s=None)])
    engine.on_reading(moisture("L-1", 13.0), T0)
    alerts = engine.on_reading(moisture("L-1", 13.0), T0 + 60 * S)
    assert [(a.state, a.data.get("forgotten"), a.data["count"]) for a in alerts] == [
        (RESOLVED, True, 1),
        (FIRING, None, 1),
    ]


def test_a_closed_lot_is_forgotten_on_its_next_reading_without_a_sweep() -> None:
    engine = Engine([WetLotRule(forget_after_s=60.0)])
    engine.on_reading(moisture("L-1", 12.4), T0)
    engine.on_reading(moisture("L-1", 12.4), T0 + S)
    (alert,) = engine.on_reading(moisture("L-1", 12.5), T0 + 61 * S)
    assert alert.data["count"] == 1  # without the forgetting: 3, mean 12.43, no alert


# Hysteresis: readings hovering at the threshold never flap.

dry = st.floats(min_value=8.0, max_value=11.9)
band = st.floats(min_value=12.0, max_value=13.0)  # [threshold - hysteresis, threshold + it]
anywhere = st.floats(min_value=8.0, max_value=14.0)


@settings(max_examples=80, deadline=None)
@given(
    prefix=st.lists(dry, max_size=5),
    hover=st.lists(band, min_size=1, max_size=30),
    suffix=st.lists(dry, max_size=10),
    k=st.integers(min_value=1, max_value=3),
    extra=st.integers(min_value=0, max_value=2),
)
def test_hovering_in_the_band_gives_at_most_one_fire_resolve_pair(
    prefix: list[float], hover: list[float], suffix: list[float], k: int, extra: int
) -> None:
    engine = Engine([WetLotRule(k=k, n=k + extra, repeat_s=None)])
    alerts = [a for batch in feed_lot(engine, prefix + hover + suffix) for a in batch]
    assert [a.state for a in alerts] in ([], [FIRING], [FIRING, RESOLVED])
    # While hovering, once firing it stays firing.
    hover_alerts = feed_lot(engine, hover, lot="L-2")
    assert RESOLVED not in [a.state for batch in hover_alerts for a in batch]


@settings(max_examples=80, deadline=None)
@given(values=st.lists(anywhere, max_size=40))
def test_every_transition_crosses_the_whole_band(values: list[float]) -> None:
    engine = Engine([WetLotRule(repeat_s=None)])
    crossed_up = crossed_down = False
    for batch, value in zip(feed_lot(engine, values), values, strict=True):
        crossed_up |= value >= 12.5
        crossed_down |= value < 12.0
        for alert in batch:
            if alert.state is FIRING:
                assert crossed_up, "fired without a reading at or above the threshold"
                crossed_down = False
            else:
                assert alert.state is RESOLVED
                assert crossed_down, "resolved without a reading below threshold - hysteresis"
                crossed_up = False


# -- device_silent -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "driver", "last_frame_age_s", "since_age_s", "fires"),
    [
        (DeviceSilentRule(), "moisture.tesma", 9.999, 0, False),
        (DeviceSilentRule(), "moisture.tesma", 10.0, 0, True),
        (DeviceSilentRule(), "scale.toledo_continuous", 29.9, 0, False),
        (DeviceSilentRule(), "scale.toledo_continuous", 30.0, 0, True),
        (DeviceSilentRule(), "scale.mtsics", 30.0, 0, True),
        (DeviceSilentRule(), "moisture.ticket", 1e6, 0, False),  # tickets: not watched
        (DeviceSilentRule(), "counter.autonics_ct", 1e6, 0, False),  # huller_fault's job
        (DeviceSilentRule(silent_s_by_device={"d": 3600.0}), "moisture.ticket", 3600.0, 0, True),
        (DeviceSilentRule(silent_s_by_device={"d": None}), "moisture.tesma", 1e6, 0, False),
        (
            DeviceSilentRule(silent_s_by_driver={"moisture.tesma": 60.0}),
            "moisture.tesma",
            59,
            0,
            False,
        ),
        (DeviceSilentRule(silent_s_by_driver={"scale.ascii": None}), "scale.ascii", 1e6, 0, False),
        (DeviceSilentRule(), "moisture.tesma", None, 9.0, False),  # no frame yet: since_ns
        (DeviceSilentRule(), "moisture.tesma", None, 10.0, True),
    ],
)
def test_device_silent_boundary(
    rule: DeviceSilentRule,
    driver: str,
    last_frame_age_s: float | None,
    since_age_s: float,
    fires: bool,
) -> None:
    now = T0 + 10**6 * S
    last = None if last_frame_age_s is None else now - round(last_frame_age_s * S)
    tick = device_tick(
        driver=driver, device="d", last_frame_ns=last, since_ns=now - round(since_age_s * S)
    )
    alerts = Engine([rule]).on_tick(tick, now)
    assert states(alerts) == ([(FIRING, True)] if fires else [])


def test_device_silent_clears_when_frames_return_not_on_a_restart() -> None:
    engine = Engine([DeviceSilentRule()])
    (alert,) = engine.on_tick(device_tick(last_frame_ns=T0), T0 + 10 * S)
    assert alert.subject == "umid-1"
    assert alert.data["silent_s"] == 10.0
    assert alert.data["limit_s"] == 10.0
    assert alert.data["last_frame_ns"] == T0
    # The agent restarts: the health registry knows no frame yet. Still silent.
    restarted = device_tick(last_frame_ns=None, since_ns=T0 + 20 * S)
    assert engine.on_tick(restarted, T0 + 21 * S) == []
    # A frame arrives.
    (alert,) = engine.on_tick(device_tick(last_frame_ns=T0 + 22 * S), T0 + 22 * S)
    assert (alert.state, alert.notify) == (RESOLVED, True)
    assert "voltou a enviar dados" in alert.message


def test_a_device_missing_from_a_tick_is_removed_and_none_means_unknown() -> None:
    engine = Engine([DeviceSilentRule()])
    engine.on_tick(device_tick(last_frame_ns=T0), T0 + 10 * S)
    assert engine.on_tick(Tick(), T0 + 11 * S) == []  # devices=None: says nothing
    (alert,) = engine.on_tick(Tick(devices={}), T0 + 12 * S)
    assert (alert.state, alert.data["removed"]) == (RESOLVED, True)
    assert "não está mais configurado" in alert.message
    assert engine.state("device_silent", "umid-1") is None


# -- huller_fault --------------------------------------------------------------------------


def test_huller_comms_offline_boundary_and_recovery() -> None:
    engine = Engine([HullerFaultRule()])

    def tick(online: bool, since_ns: int) -> Tick:
        return device_tick(
            driver="counter.autonics_ct", device="desc-1", online=online, since_ns=since_ns
        )

    assert engine.on_tick(tick(False, T0), T0 + 29 * S) == []
    (alert,) = engine.on_tick(tick(False, T0), T0 + 30 * S)
    assert (alert.subject, alert.data["fault"], alert.data["online"]) == (
        "desc-1/comms",
        "comms",
        False,
    )
    assert "sem comunicação há 30 s" in alert.message
    (alert,) = engine.on_tick(tick(True, T0 + 40 * S), T0 + 40 * S)
    assert (alert.state, alert.notify) == (RESOLVED, True)


#: (seconds after T0, error count at that tick, alert state emitted or None); window 60 s.
COMMS_ERRORS = [
    (0, 0, None),
    (10, 2, None),  # 2 new errors: below error_count 3
    (20, 3, FIRING),  # 3 within the window
    (79, 3, None),  # the 1 error at 20 s is still within the window: holds
    (81, 3, RESOLVED),  # none within the last 60 s
    (90, 0, None),  # the counter restarted (agent restart): not new errors
    (95, 2, None),
]


def test_huller_comms_error_window() -> None:
    engine = Engine([HullerFaultRule()])
    for at_s, errors, expected in COMMS_ERRORS:
        tick = device_tick(driver="counter.autonics_ct", device="desc-1", errors=errors)
        alerts = engine.on_tick(tick, T0 + at_s * S)
        assert [a.state for a in alerts] == ([] if expected is None else [expected]), at_s


def test_huller_jam_boundary_and_clears() -> None:
    engine = Engine([HullerFaultRule(jam_s=600.0, repeat_s=None)])
    assert engine.on_reading(huller(True, 10.0), T0) == []
    assert engine.on_reading(huller(True, 10.0), T0 + 599 * S) == []
    (alert,) = engine.on_reading(huller(True, 10.0), T0 + 600 * S)
    assert (alert.subject, alert.state, alert.data["idle_s"]) == ("desc-1/jam", FIRING, 600.0)
    assert "embuchamento" in alert.message
    (alert,) = engine.on_reading(huller(True, 11.0), T0 + 610 * S)  # a bag
    assert alert.state is RESOLVED
    engine.on_reading(huller(True, 11.0), T0 + 1210 * S)
    (alert,) = engine.on_reading(huller(False, 11.0), T0 + 1212 * S)  # motor stopped
    assert alert.state is RESOLVED
    # Stopped for a long time, then running: the idle time counts from the start.
    assert engine.on_reading(huller(True, 11.0), T0 + 5000 * S) == []


def test_huller_wiring_boundary_and_clears() -> None:
    step = 1 / 64  # hours per reading, exact in binary; 3 steps < 0.05 h <= 4 steps
    engine = Engine([HullerFaultRule(wiring_h=0.05, repeat_s=None)])
    hours = 100.0
    assert engine.on_reading(huller(False, 0.0, hours), T0) == []
    for i in range(1, 4):
        hours += step
        assert engine.on_reading(huller(False, 0.0, hours), T0 + i * 10 * S) == []
    hours += step
    (alert,) = engine.on_reading(huller(False, 0.0, hours), T0 + 40 * S)
    assert (alert.subject, alert.state, alert.data["gain_h"]) == ("desc-1/wiring", FIRING, 0.0625)
    assert "verificar a fiação" in alert.message
    # Hours stop, or rise across a gap longer than max_gap_s: still firing.
    assert engine.on_reading(huller(False, 0.0, hours), T0 + 50 * S) == []
    hours += 1.0
    assert engine.on_reading(huller(False, 0.0, hours), T0 + 500 * S) == []
    # The input is on while the hours rise: they agree.
    hours += step
    (alert,) = engine.on_reading(huller(True, 0.0, hours), T0 + 510 * S)
    assert alert.state is RESOLVED


def test_huller_wiring_ignores_a_motor_stopping_between_polls() -> None:
    engine = Engine([HullerFaultRule(wiring_h=0.05)])
    engine.on_reading(huller(True, 0.0, 100.0), T0)
    # On, then off: the rise in between belongs to the run that just ended.
    assert engine.on_reading(huller(False, 0.0, 100.5), T0 + 10 * S) == []
    assert engine.on_reading(huller(False, 0.0, 100.5), T0 + 20 * S) == []


def test_huller_readings_without_their_fields_are_ignored() -> None:
    engine = Engine([HullerFaultRule()])
    reading = dataclasses.replace(huller(True, 1.0), fields={"counter_pv": 3})
    assert engine.on_reading(reading, T0) == []
    assert engine.state("huller_fault", "desc-1/jam") is None
    assert engine.state("huller_fault", "desc-1/wiring") is None


def test_huller_comms_watches_only_huller_devices() -> None:
    engine = Engine([HullerFaultRule()])
    tick = device_tick(driver="moisture.tesma", online=False, since_ns=T0)
    assert engine.on_tick(tick, T0 + 3600 * S) == []


# -- service_due / service_overdue ---------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "task_state", "fires"),
    [
        ("due", "ok", False),
        ("due", "due", True),
        ("due", "overdue", True),
        ("overdue", "ok", False),
        ("overdue", "due", False),
        ("overdue", "overdue", True),
    ],
)
def test_service_levels(level: str, task_state: str, fires: bool) -> None:
    rule = ServiceRule(name=f"service_{level}", level="due" if level == "due" else "overdue")
    engine = Engine([rule])
    alerts = engine.on_reading(status(task_state), T0)
    assert states(alerts) == ([(FIRING, True)] if fires else [])
    if fires:
        assert alerts[0].subject == "desc-1/oleo"
        assert alerts[0].data["task_state"] == task_state
        (alert,) = engine.on_reading(status("ok", remaining_h=250.0), T0 + S)
        assert (alert.state, alert.notify) == (RESOLVED, True)
        assert "em dia" in alert.message


def test_service_state_falls_back_to_the_bool_fields() -> None:
    engine = Engine(default_rules())
    alerts = engine.on_reading(status(None, remaining_h=-3.0), T0)
    # state missing, due and overdue false: ok. Now with the flags only:
    assert alerts == []
    reading = dataclasses.replace(
        status(None, remaining_h=-3.0),
        fields={"due": True, "overdue": True, "remaining_h": -3.0, "hours_since": 253.0},
    )
    alerts = engine.on_reading(reading, T0 + S)
    assert [(a.rule, a.data["task_state"]) for a in alerts] == [
        ("service_due", "overdue"),
        ("service_overdue", "overdue"),
    ]
    assert "ATRASADA há 3,0 h" in alerts[1].message
    assert alerts[1].severity is Severity.CRITICAL


# -- sink_backlog --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "backlog", "age_s", "fires"),
    [
        (SinkBacklogRule(), 0, 10_000, False),  # nothing waits
        (SinkBacklogRule(), 1, 599.9, False),
        (SinkBacklogRule(), 1, 600, True),
        (SinkBacklogRule(min_backlog=100), 99, 10_000, False),
        (SinkBacklogRule(min_backlog=100), 100, 10_000, True),
    ],
)
def test_sink_backlog_boundary(
    rule: SinkBacklogRule, backlog: int, age_s: float, fires: bool
) -> None:
    now = T0 + 10**5 * S
    alerts = Engine([rule]).on_tick(sink_tick(backlog, now - round(age_s * S)), now)
    assert states(alerts) == ([(FIRING, True)] if fires else [])


def test_sink_backlog_clears_on_delivery_or_empty_not_on_restart() -> None:
    engine = Engine([SinkBacklogRule()])
    (alert,) = engine.on_tick(sink_tick(500), T0 + 600 * S)
    assert (alert.subject, alert.data["backlog"], alert.data["undelivered_s"]) == (
        "influx",
        500,
        600.0,
    )
    # Restarted: no delivery yet in this process, the records still wait.
    assert engine.on_tick(sink_tick(500, None, T0 + 700 * S), T0 + 701 * S) == []
    (alert,) = engine.on_tick(sink_tick(400, T0 + 702 * S), T0 + 702 * S)
    assert (alert.state, alert.data["backlog"]) == (RESOLVED, 400)
    engine.on_tick(sink_tick(400, T0 + 702 * S), T0 + 1302 * S)
    (alert,) = engine.on_tick(sink_tick(0, T0 + 702 * S), T0 + 1303 * S)
    assert alert.state is RESOLVED


def test_never_delivered_counts_from_since() -> None:
    engine = Engine([SinkBacklogRule()])
    assert engine.on_tick(sink_tick(5, None, T0), T0 + 599 * S) == []
    assert states(engine.on_tick(sink_tick(5, None, T0), T0 + 600 * S)) == [(FIRING, True)]


# -- lifecycle -----------------------------------------------------------------------------


def test_pending_delay() -> None:
    engine = Engine([WetLotRule(pending_s=60.0)])
    (alert,) = engine.on_reading(moisture("L-1", 13.0), T0)
    assert (alert.state, alert.notify, alert.since_ns) == (PENDING, False, T0)
    assert "PENDENTE" in alert.message
    assert engine.on_tick(Tick(), T0 + 59 * S) == []
    (alert,) = engine.on_tick(Tick(), T0 + 60 * S)
    assert (alert.state, alert.notify, alert.since_ns, alert.at_ns) == (
        FIRING,
        True,
        T0,
        T0 + 60 * S,
    )


def test_pending_that_clears_is_resolved_without_notice() -> None:
    engine = Engine([WetLotRule(pending_s=60.0, k=1, n=1)])
    engine.on_reading(moisture("L-1", 13.0), T0)
    (alert,) = engine.on_reading(moisture("L-1", 10.0), T0 + 10 * S)
    assert (alert.state, alert.notify) == (RESOLVED, False)
    assert engine.on_tick(Tick(), T0 + 100 * S) == []


def test_pending_delay_elapses_on_the_next_evaluation_too() -> None:
    engine = Engine([WetLotRule(pending_s=60.0)])
    engine.on_reading(moisture("L-1", 13.0), T0)
    assert states(engine.on_reading(moisture("L-1", 13.0), T0 + 60 * S)) == [(FIRING, True)]


def test_repeat_interval_is_honoured() -> None:
    engine = Engine([WetLotRule(repeat_s=100.0)])
    engine.on_reading(moisture("L-1", 13.0), T0)
    assert engine.on_tick(Tick(), T0 + 99 * S) == []
    (alert,) = engine.on_tick(Tick(), T0 + 100 * S)
    assert (alert.state, alert.notify, alert.repeat, alert.since_ns) == (FIRING, True, 1, T0)
    assert "lembrete 1" in alert.message
    assert engine.on_tick(Tick(), T0 + 199 * S) == []
    (alert,) = engine.on_tick(Tick(), T0 + 200 * S)
    assert alert.repeat == 2


def test_no_repeat_when_repeat_s_is_none() -> None:
    engine = Engine([WetLotRule(repeat_s=None)])
    engine.on_reading(moisture("L-1", 13.0), T0)
    for hour in range(1, 24 * 6):
        assert engine.on_tick(Tick(), T0 + hour * 3600 * S) == []


def test_ack_stops_repeats_and_the_resolution_is_still_notified() -> None:
    engine = Engine([WetLotRule(repeat_s=100.0, k=1, n=1, hysteresis_pct=0.0)])
    engine.on_reading(moisture("L-1", 13.0), T0)
    (alert,) = engine.ack("wet_lot", "L-1", "ana", T0 + 10 * S)
    assert (alert.state, alert.notify) == (ACKED, True)
    assert (alert.acked_by, alert.acked_at_ns) == ("ana", T0 + 10 * S)
    assert "RECONHECIDO por ana" in alert.message
    for i in range(1, 20):
        assert engine.on_tick(Tick(), T0 + i * 100 * S) == []
    assert engine.ack("wet_lot", "L-1", "bia", T0 + 2001 * S) == []  # first ack stands
    assert engine.on_reading(moisture("L-1", 13.1), T0 + 2002 * S) == []
    (alert,) = engine.on_reading(moisture("L-1", 10.0), T0 + 2003 * S)
    assert (alert.state, alert.notify, alert.acked_by) == (RESOLVED, True, "ana")
    # A new episode starts unacknowledged.
    (alert,) = engine.on_reading(moisture("L-1", 13.0), T0 + 2004 * S)
    assert (alert.state, alert.acked_by, alert.since_ns) == (FIRING, None, T0 + 2004 * S)


def test_ack_of_anything_but_a_firing_alert_does_nothing() -> None:
    engine = Engine([WetLotRule(pending_s=60.0)])
    assert engine.ack("wet_lot", "L-1", "ana", T0) == []  # unknown subject
    assert engine.ack("nope", "L-1", "ana", T0) == []  # unknown rule
    engine.on_reading(moisture("L-1", 13.0), T0)
    assert engine.ack("wet_lot", "L-1", "ana", T0 + S) == []  # pending
    state = engine.state("wet_lot", "L-1")
    assert state is not None
    assert state.state is PENDING


def test_pure_functions_have_the_evaluate_shape() -> None:
    rule = WetLotRule(k=1, n=1)
    state = RuleState("L-1")
    same, alerts = evaluate(rule, state, moisture("L-2", 13.0), T0)  # another lot
    assert (same, alerts) == (state, [])
    state, alerts = evaluate(rule, state, moisture("L-1", 13.0), T0)
    assert states(alerts) == [(FIRING, True)]
    state, alerts = acknowledge(rule, state, by="ana", at_ns=T0 + S)
    assert state.state is ACKED
    assert acknowledge(rule, state, by="bia", at_ns=T0 + 2 * S) == (state, [])


# -- persistence ---------------------------------------------------------------------------


def test_a_restart_in_the_firing_state_does_not_notify_again() -> None:
    rules: list[Rule] = [WetLotRule(repeat_s=600.0), DeviceSilentRule(repeat_s=600.0)]
    engine = Engine(rules)
    engine.on_reading(moisture("L-1", 13.0), T0)
    engine.on_tick(device_tick(last_frame_ns=T0), T0 + 10 * S)
    restored = Engine.restore(rules, engine.snapshot())
    # The health registry restarted too: no frame yet.
    after_restart = device_tick(last_frame_ns=None, since_ns=T0 + 30 * S)
    assert restored.on_tick(after_restart, T0 + 31 * S) == []
    assert restored.on_reading(moisture("L-1", 13.2), T0 + 32 * S) == []
    assert [(a.subject, a.state) for a in restored.alerts(T0 + 33 * S)] == [
        ("L-1", FIRING),
        ("umid-1", FIRING),
    ]
    assert all(not a.notify for a in restored.alerts(T0 + 33 * S))
    repeats = restored.on_tick(after_restart, T0 + 610 * S)
    assert [(a.subject, a.repeat, a.notify) for a in repeats] == [
        ("L-1", 1, True),  # last notice at T0
        ("umid-1", 1, True),  # last notice at T0 + 10 s
    ]


def test_restore_drops_rules_no_longer_configured_or_of_another_kind() -> None:
    rules: list[Rule] = [WetLotRule(k=1, n=1), SinkBacklogRule(name="backlog")]
    engine = Engine(rules)
    engine.on_reading(moisture("L-1", 13.0), T0)
    engine.on_tick(sink_tick(5), T0 + 600 * S)
    restored = Engine.restore([DeviceSilentRule(name="backlog")], engine.snapshot())
    assert restored.alerts(T0) == []
    restored = Engine.restore([WetLotRule()], engine.snapshot())
    assert [a.subject for a in restored.alerts(T0)] == ["L-1"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"version": 0, "rules": {}}',  # a newer one is refused apart (test_migrations)
        '{"version": 1, "next_sweep_ns": null, "rules": []}',
        '{"version": 1, "next_sweep_ns": 1.5, "rules": {}}',
        '{"version": 1, "next_sweep_ns": null,'
        ' "rules": {"wet_lot": {"kind": "wet_lot", "subjects": {"L-1": {}}}}}',
        '{"version": 1, "next_sweep_ns": null,'
        ' "rules": {"wet_lot": {"kind": "wet_lot", "subjects": []}}}',
    ],
)
def test_restore_refuses_what_is_not_a_snapshot(text: str) -> None:
    with pytest.raises(ValueError, match="not an alert engine snapshot"):
        Engine.restore([WetLotRule()], text)


def test_restore_refuses_a_subject_filed_under_another_name() -> None:
    doc = json.loads(Engine([WetLotRule()]).snapshot())
    doc["rules"]["wet_lot"]["subjects"]["L-1"] = json.loads(to_json(RuleState("L-2")))
    with pytest.raises(ValueError, match="holds"):
        Engine.restore([WetLotRule()], json.dumps(doc))


@pytest.mark.parametrize(
    "state",
    [
        RuleState("L-1"),
        RuleState(
            "L-1",
            state=ACKED,
            since_ns=T0,
            notified_ns=T0 + S,
            repeat=2,
            acked_by="ana",
            acked_at_ns=T0 + 2 * S,
            data={"lot": "L-1", "count": 3, "mean_pct": 12.0, "forgotten": False},
            memory=LotMemory(
                window=(12.0, 13.0),
                count=3,
                total=37.0,
                max_pct=13.0,
                last_ns=T0,
                device="umid-1",
                station="",
                product="CAFÉ",
            ),
        ),
        RuleState("desc-1/comms", memory=ErrorMemory(((T0, 0), (T0 + S, 4)))),
        RuleState("desc-1/jam", memory=JamMemory(bags=3.0, idle_since_ns=None)),
        RuleState("desc-1/jam", memory=JamMemory(bags=3.5, idle_since_ns=T0)),
        RuleState(
            "desc-1/wiring", memory=WiringMemory(at_ns=T0, hours=1.25, running=False, gain_h=0.1)
        ),
    ],
)
def test_rule_state_json_round_trip(state: RuleState) -> None:
    assert from_json(to_json(state)) == state


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "1",
        '{"subject": "x", "state": "bogus", "since": 0, "notified": 0, "repeat": 0,'
        ' "acked_by": null, "acked_at": null, "data": {}, "memory": null}',
        '{"subject": "x", "state": "firing", "since": 0.5, "notified": 0, "repeat": 0,'
        ' "acked_by": null, "acked_at": null, "data": {}, "memory": null}',
        '{"subject": "x", "state": "firing", "since": 0, "notified": 0, "repeat": 0,'
        ' "acked_by": null, "acked_at": null, "data": {"a": [1]}, "memory": null}',
        '{"subject": "x", "state": "firing", "since": 0, "notified": 0, "repeat": 0,'
        ' "acked_by": null, "acked_at": null, "data": {}, "memory": {"type": "x"}}',
        '{"subject": "x", "state": "firing", "since": 0, "notified": 0, "repeat": 0,'
        ' "acked_by": null, "acked_at": null, "data": {}, "memory": {"type": "errors",'
        ' "samples": [[1]]}}',
    ],
)
def test_from_json_refuses_what_is_not_a_rule_state(text: str) -> None:
    with pytest.raises(ValueError, match="not a rule state"):
        from_json(text)


# A random day of inputs for every rule, with short timers so that everything happens.

PERSISTENCE_RULES: tuple[Rule, ...] = (
    WetLotRule(pending_s=30.0, repeat_s=120.0, forget_after_s=1800.0),
    DeviceSilentRule(repeat_s=100.0),
    HullerFaultRule(
        pending_s=10.0,
        repeat_s=150.0,
        offline_s=20.0,
        error_count=2,
        error_window_s=60.0,
        jam_s=60.0,
        wiring_h=0.01,
    ),
    ServiceRule(),
    ServiceRule(name="service_overdue", level="overdue", repeat_s=200.0),
    SinkBacklogRule(undelivered_s=60.0, repeat_s=90.0),
)


@dataclass(frozen=True)
class Ack:
    rule: str
    subject: str


Event = Reading | Tick | Ack

ops = st.one_of(
    st.tuples(st.just("moisture"), st.sampled_from(["L-1", "L-2"]), st.floats(10.0, 14.0)),
    st.tuples(
        st.just("huller"), st.booleans(), st.integers(0, 2), st.sampled_from([0.0, 0.01, 0.02])
    ),
    st.tuples(st.just("status"), st.sampled_from(["ok", "due", "overdue"])),
    st.tuples(
        st.just("tick"),
        st.booleans(),  # the meter sent a frame
        st.booleans(),  # the huller is online
        st.integers(0, 2),  # new huller errors
        st.integers(0, 30),  # influx backlog
        st.booleans(),  # influx delivered
    ),
    st.tuples(
        st.just("ack"),
        st.sampled_from(
            [
                ("wet_lot", "L-1"),
                ("device_silent", "umid-1"),
                ("huller_fault", "desc-1/comms"),
                ("service_overdue", "desc-1/oleo"),
                ("sink_backlog", "influx"),
            ]
        ),
    ),
)


def build(steps: list[tuple[int, tuple[object, ...]]]) -> list[tuple[int, Event]]:
    now, bags, hours, errors = T0, 0.0, 0.0, 0
    last_frame, last_delivery, online, since = T0, T0, True, T0
    events: list[tuple[int, Event]] = []
    for dt, op in steps:
        now += dt * S
        match op:
            case ("moisture", str(lot), float(pct)):
                events.append((now, moisture(lot, pct)))
            case ("huller", bool(running), int(more), float(dh)):
                bags, hours = bags + more, hours + dh
                events.append((now, huller(running, bags, hours)))
            case ("status", str(task_state)):
                events.append((now, status(task_state)))
            case ("tick", bool(frame), bool(up), int(more), int(backlog), bool(delivered)):
                last_frame = now if frame else last_frame
                last_delivery = now if delivered else last_delivery
                since = now if up != online else since
                online, errors = up, errors + more
                tick = Tick(
                    devices={
                        "umid-1": DeviceSnapshot(driver="moisture.tesma", last_frame_ns=last_frame),
                        "desc-1": DeviceSnapshot(
                            driver="counter.autonics_ct",
                            online=online,
                            since_ns=since,
                            errors=errors,
                        ),
                    },
                    sinks={"influx": SinkSnapshot(backlog=backlog, last_delivery_ns=last_delivery)},
                )
                events.append((now, tick))
            case ("ack", (str(rule), str(subject))):
                events.append((now, Ack(rule, subject)))
            case _:  # pragma: no cover - the strategy makes only the above
                raise AssertionError(op)
    return events


def run(engine: Engine, events: list[tuple[int, Event]]) -> list[list[Alert]]:
    out: list[list[Alert]] = []
    for now, event in events:
        match event:
            case Reading():
                out.append(engine.on_reading(event, now))
            case Tick():
                out.append(engine.on_tick(event, now))
            case Ack():
                out.append(engine.ack(event.rule, event.subject, "ana", now))
    return out


steps_strategy = st.lists(st.tuples(st.integers(0, 10) | st.integers(0, 90), ops), max_size=40)


@settings(max_examples=60, deadline=None)
@given(steps=steps_strategy, data=st.data())
def test_restore_mid_sequence_gives_identical_outputs(
    steps: list[tuple[int, tuple[object, ...]]], data: st.DataObject
) -> None:
    events = build(steps)
    cut = data.draw(st.integers(0, len(events)), label="cut")
    straight = Engine(PERSISTENCE_RULES)
    expected = run(straight, events)

    first = Engine(PERSISTENCE_RULES)
    assert run(first, events[:cut]) == expected[:cut]
    snapshot = first.snapshot()
    restored = Engine.restore(PERSISTENCE_RULES, snapshot)
    assert restored.snapshot() == snapshot
    assert run(restored, events[cut:]) == expected[cut:]
    assert restored.snapshot() == straight.snapshot()


@settings(max_examples=40, deadline=None)
@given(steps=steps_strategy)
def test_alert_outputs_have_stable_types(steps: list[tuple[int, tuple[object, ...]]]) -> None:
    engine = Engine(PERSISTENCE_RULES)
    for batch in run(engine, build(steps)):
        for alert in batch:
            for key, value in alert.data.items():
                assert type(value) is DATA_FIELDS[key], (alert.rule, key, value)
            point = alert_point(alert, site="ourofino")
            assert dict(point.tags) == {
                "site": "ourofino",
                "rule": alert.rule,
                "subject": alert.subject,
                "state": alert.state.value,
            }
            assert set(alert.data) <= set(point.fields)
            json.dumps(alert_payload(alert))


# -- outputs and messages ------------------------------------------------------------------


def one_alert_per_rule(lang: Lang) -> list[Alert]:
    engine = Engine(default_rules(), lang=lang)
    out = engine.on_reading(moisture("L-0042", 13.04), T0)
    out += engine.on_reading(status("overdue", remaining_h=-12.0), T0)
    out += engine.on_reading(huller(True, 5.0, 10.0), T0)
    out += engine.on_reading(huller(True, 5.0, 10.0), T0 + 700 * S)
    tick = Tick(
        devices={
            "umid-1": DeviceSnapshot(driver="moisture.tesma", last_frame_ns=T0),
            "desc-1": DeviceSnapshot(driver="counter.autonics_ct", online=False, since_ns=T0),
        },
        sinks={"influx": SinkSnapshot(backlog=1234, last_delivery_ns=T0)},
    )
    out += engine.on_tick(tick, T0 + 900 * S)
    return out


EXPECTED_PT = {
    ("wet_lot", "L-0042"): "ALERTA — Lote úmido: lote L-0042, estação recepcao: média 13,0 %,"
    " máx. 13,0 %, 1 leitura (limite 12,5 %)",
    ("service_due", "desc-1/oleo"): "ALERTA — Manutenção vencendo: desc-1 / oleo: 262,0 h desde o"
    " último serviço (intervalo 250 h), ATRASADA há 12,0 h",
    ("service_overdue", "desc-1/oleo"): "ALERTA — Manutenção atrasada: desc-1 / oleo: 262,0 h desde"
    " o último serviço (intervalo 250 h), ATRASADA há 12,0 h",
    ("huller_fault", "desc-1/jam"): "ALERTA — Falha no descascador: desc-1: motor ligado sem contar"
    " sacos há 12 min (limite 10 min); possível embuchamento",
    ("device_silent", "umid-1"): "ALERTA — Equipamento sem sinal: umid-1 (moisture.tesma):"
    " nenhum dado válido há 15 min (limite 10 s)",
    ("huller_fault", "desc-1/comms"): "ALERTA — Falha no descascador: desc-1: sem comunicação há"
    " 15 min",
    ("sink_backlog", "influx"): "ALERTA — Envio parado: influx: nada entregue há 15 min (limite"
    " 10 min); 1234 registros na fila",
}

EXPECTED_EN = {
    ("wet_lot", "L-0042"): "ALERT — Wet lot: lot L-0042 at station recepcao: mean 13.0 %,"
    " max 13.0 %, 1 reading (threshold 12.5 %)",
    ("service_due", "desc-1/oleo"): "ALERT — Service due: desc-1 / oleo: 262.0 h since the last"
    " service (interval 250 h), overdue by 12.0 h",
    ("service_overdue", "desc-1/oleo"): "ALERT — Service overdue: desc-1 / oleo: 262.0 h since the"
    " last service (interval 250 h), overdue by 12.0 h",
    ("huller_fault", "desc-1/jam"): "ALERT — Huller fault: desc-1: motor running with no bag"
    " counted for 12 min (limit 10 min); possible jam",
    ("device_silent", "umid-1"): "ALERT — Device silent: umid-1 (moisture.tesma): no valid frame"
    " for 15 min (limit 10 s)",
    ("huller_fault", "desc-1/comms"): "ALERT — Huller fault: desc-1: no communication for 15 min",
    ("sink_backlog", "influx"): "ALERT — Sink backlog: influx: nothing delivered for 15 min"
    " (limit 10 min); 1234 records waiting",
}


@pytest.mark.parametrize(("lang", "expected"), [("pt-BR", EXPECTED_PT), ("en", EXPECTED_EN)])
def test_messages_in_portuguese_and_english(
    lang: Lang, expected: dict[tuple[str, str], str]
) -> None:
    messages = {(a.rule, a.subject): a.message for a in one_alert_per_rule(lang)}
    assert messages == expected


@pytest.mark.parametrize("lang", ["pt-BR", "en"])
def test_resolved_and_acknowledged_messages_in_both_languages(lang: Lang) -> None:
    engine = Engine([WetLotRule(k=1, n=1, hysteresis_pct=0.0)], lang=lang)
    engine.on_reading(moisture("L-1", 13.0), T0)
    (acked,) = engine.ack("wet_lot", "L-1", "ana", T0 + S)
    (resolved,) = engine.on_reading(moisture("L-1", 11.0), T0 + 2 * S)
    if lang == "pt-BR":
        assert acked.message.startswith("RECONHECIDO por ana — Lote úmido: lote L-1")
        assert resolved.message.startswith("RESOLVIDO — Lote úmido: lote L-1")
        assert "média 12,0 %" in resolved.message
    else:
        assert acked.message.startswith("ACKNOWLEDGED by ana — Wet lot: lot L-1")
        assert resolved.message.startswith("RESOLVED — Wet lot: lot L-1")
        assert "mean 12.0 %" in resolved.message


def test_alert_payload_topic_and_point() -> None:
    engine = Engine([WetLotRule(k=1, n=1)])
    engine.on_reading(moisture("L-0042/B", 13.0), T0)
    (alert,) = engine.ack("wet_lot", "L-0042/B", "ana", T0 + S)
    payload = alert_payload(alert)
    assert payload == {
        "kind": "alert",
        "rule": "wet_lot",
        "subject": "L-0042/B",
        "state": "acknowledged",
        "severity": "critical",
        "message": alert.message,
        "data": dict(alert.data),
        "notify": True,
        "since": T0,
        "since_time": "2026-11-30T10:41:54.000000000Z",
        "ts": T0 + S,
        "time": "2026-11-30T10:41:55.000000000Z",
        "repeat": 0,
        "acked_by": "ana",
        "acked_at": T0 + S,
    }
    json.dumps(payload, sort_keys=True)
    assert alert_topic(alert, prefix="coffee", site="ourofino") == (
        "coffee/ourofino/alerts/wet_lot/L-0042%2FB"
    )
    assert alert_topic(alert) == "alerts/wet_lot/L-0042%2FB"
    assert alert_topic(dataclasses.replace(alert, subject="a+b#%"), prefix="coffee", site="s") == (
        "coffee/s/alerts/wet_lot/a%2Bb%23%25"
    )
    point = alert_point(alert, site="ourofino")
    assert point.measurement == "alert"
    assert point.ts_ns == T0 + S
    assert point.fields["acked_by"] == "ana"
    assert point.fields["acked_at_ns"] == T0 + S
    assert point.fields["notify"] is True
    assert point.fields["since_ns"] == T0
    assert point.fields["count"] == 1
    # A wrongly typed or unknown data value never reaches the point.
    odd = dataclasses.replace(alert, data={"count": "3", "max_pct": 13, "zzz": 1})
    fields = alert_point(odd, site="s").fields
    assert "count" not in fields
    assert "zzz" not in fields
    assert fields["max_pct"] == 13.0
    assert type(fields["max_pct"]) is float


def test_device_snapshot_from_health() -> None:
    health = DeviceHealth(device="desc-1", driver="counter.autonics_ct", port="/dev/rs485")
    health.state = DeviceState.ONLINE
    health.since_ns = T0
    health.last_frame_ns = T0 + S
    health.errors["no-response"] += 2
    health.errors["bad-crc"] += 1
    health.last_error = "counter: no response"
    snap = DeviceSnapshot.from_health(health)
    assert snap == DeviceSnapshot(
        driver="counter.autonics_ct",
        online=True,
        since_ns=T0,
        last_frame_ns=T0 + S,
        errors=3,
        last_error="counter: no response",
        station="",
    )
