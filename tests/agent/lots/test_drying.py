"""The drying-curve fit and the time-to-target estimate (``agent.lots.drying``)."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffee_telemetry.agent.config import LotsConfig
from coffee_telemetry.agent.lots.drying import (
    DEFAULT_TARGET_PCT,
    describe,
    estimate_drying,
    estimate_for_record,
    fit_drying,
    target_for,
)
from coffee_telemetry.agent.lots.model import LotReading
from tests.agent.lots.lotfixtures import T0_NS, drying_readings, make_record

#: Drying runs (equilibrium %, initial %, rate per hour): a mechanical dryer, a slow
#: patio, wet cherry, a fast finish.
RUNS = [(10.0, 25.0, 0.1), (8.0, 22.0, 0.08), (6.0, 40.0, 0.05), (9.0, 18.0, 0.15)]


def true_total_h(me: float, m0: float, k: float, target: float = DEFAULT_TARGET_PCT) -> float:
    return math.log((m0 - me) / (target - me)) / k


def check(
    me: float,
    m0: float,
    k: float,
    done: float,
    every_min: float,
    *,
    noise_pp: float = 0.0,
    seed: int = 0,
) -> float:
    """Relative error of the remaining time after ``done`` of the drying time."""
    total = true_total_h(me, m0, k)
    readings = drying_readings(
        me=me, m0=m0, k_per_h=k, hours=done * total, every_min=every_min,
        noise_pp=noise_pp, seed=seed,
    )  # fmt: skip
    est = estimate_drying(readings, target_pct=DEFAULT_TARGET_PCT)
    assert est.status == "estimate", (est.status, est.reason)
    assert est.remaining_s is not None
    assert est.eta_ns is not None
    elapsed_h = (readings[-1].ts_ns - readings[0].ts_ns) / 3.6e12
    true_remaining_s = (total - elapsed_h) * 3600
    assert est.eta_ns == readings[-1].ts_ns + round(est.remaining_s * 1e9)
    return abs(est.remaining_s - true_remaining_s) / true_remaining_s


@pytest.mark.parametrize(("me", "m0", "k"), RUNS)
@pytest.mark.parametrize("done", [0.5, 0.6, 0.75, 0.9])
def test_exact_runs_give_the_remaining_time_within_15_percent(
    me: float, m0: float, k: float, done: float
) -> None:
    assert check(me, m0, k, done, every_min=30) < 0.15


@pytest.mark.parametrize(("me", "m0", "k"), RUNS)
def test_exact_runs_recover_the_parameters(me: float, m0: float, k: float) -> None:
    readings = drying_readings(
        me=me, m0=m0, k_per_h=k, hours=true_total_h(me, m0, k) / 2, every_min=20
    )
    fit, reason = fit_drying(readings)
    assert reason == "ok"
    assert fit is not None
    assert fit.me_pct == pytest.approx(me, abs=0.01)
    assert fit.m0_pct == pytest.approx(m0, abs=0.01)
    assert fit.k_per_h == pytest.approx(k, rel=0.001)
    assert fit.rmse_pp < 0.001
    assert fit.moisture_at(T0_NS) == pytest.approx(m0, abs=0.01)


@pytest.mark.parametrize(("me", "m0", "k"), RUNS[:3])
def test_noisy_continuous_meter_within_15_percent_from_half_way(
    me: float, m0: float, k: float
) -> None:
    """Gaussian noise of 0.2 pp, a dryer's meter reading every minute, ten runs each."""
    for seed in range(10):
        assert check(me, m0, k, 0.5, every_min=1, noise_pp=0.2, seed=seed) < 0.15, seed


def test_noisy_sparse_samples_stay_sane() -> None:
    """Samples every 30 min with 0.2 pp noise: less exact, but centred and never absurd."""
    errors = []
    for seed in range(20):
        readings = drying_readings(
            me=6.0, m0=40.0, k_per_h=0.05, hours=0.6 * true_total_h(6.0, 40.0, 0.05),
            every_min=30, noise_pp=0.2, seed=seed,
        )  # fmt: skip
        est = estimate_drying(readings)
        assert est.status == "estimate"
        assert est.remaining_s is not None
        assert est.fit is not None
        assert 0.1 < est.fit.rmse_pp < 0.3
        errors.append(est.remaining_s)
    true_remaining = 0.4 * true_total_h(6.0, 40.0, 0.05) * 3600
    assert statistics.median(errors) == pytest.approx(true_remaining, rel=0.1)


def test_reached_when_the_curve_is_below_target() -> None:
    readings = drying_readings(me=9.0, m0=20.0, k_per_h=0.2, hours=20, every_min=30)
    est = estimate_drying(readings, target_pct=11.5)
    assert est.status == "reached"
    assert est.reason == "reached"
    assert est.remaining_s == 0.0
    assert est.eta_ns == readings[-1].ts_ns


def test_target_below_equilibrium_is_never_at_this_rate() -> None:
    readings = drying_readings(me=12.5, m0=22.0, k_per_h=0.1, hours=12, every_min=20)
    est = estimate_drying(readings, target_pct=11.5)
    assert est.status == "never"
    assert est.reason == "below_equilibrium"
    assert est.remaining_s is None
    assert est.fit is not None
    assert est.fit.me_pct == pytest.approx(12.5, abs=0.01)
    assert "nunca" in describe(est)
    assert "never" in describe(est, "en")


def test_too_few_points_and_too_short_span() -> None:
    few = drying_readings(me=10, m0=25, k_per_h=0.1, hours=10, every_min=150)
    assert len(few) == 5
    est = estimate_drying(few)
    assert (est.status, est.reason, est.points) == ("not_enough_data", "too_few_points", 5)
    assert estimate_drying(()).reason == "too_few_points"
    short = drying_readings(me=10, m0=25, k_per_h=0.1, hours=0.5, every_min=1)
    assert estimate_drying(short).reason == "too_short_span"
    assert estimate_drying(short, min_span_s=600).status == "estimate"
    assert describe(est) == "dados insuficientes: poucas leituras"


def _series(values: list[float], every_min: float = 30) -> tuple[LotReading, ...]:
    return tuple(
        LotReading(ts_ns=T0_NS + round(i * every_min * 60e9), seq=i, device="d", station="s",
                   moisture_pct=v)
        for i, v in enumerate(values)
    )  # fmt: skip


def test_flat_rising_and_straight_series_are_not_enough_data() -> None:
    flat = estimate_drying(_series([14.0] * 20))
    assert (flat.status, flat.reason) == ("not_enough_data", "not_decreasing")
    rising = estimate_drying(_series([12.0 + 0.3 * i for i in range(20)]))
    assert (rising.status, rising.reason) == ("not_enough_data", "not_decreasing")
    # A straight fall shows no equilibrium yet: no time is made up from it.
    straight = estimate_drying(_series([25.0 - 0.2 * i for i in range(20)]))
    assert (straight.status, straight.reason) == ("not_enough_data", "no_curve")
    assert straight.remaining_s is None
    # Noise around a level, without a fall worth the name.
    wobble = estimate_drying(_series([14.0 + 0.1 * (-1) ** i for i in range(20)]))
    assert wobble.status == "not_enough_data"


def test_non_finite_values_are_refused_with_a_reason() -> None:
    values = [20.0 - 0.5 * i for i in range(10)]
    values[4] = math.nan
    assert estimate_drying(_series(values)).reason == "not_finite"
    assert (
        estimate_drying(_series([20.0 - i for i in range(10)]), target_pct=math.inf).reason
        == "not_finite"
    )


def test_targets_per_product_from_the_config() -> None:
    cfg = LotsConfig(target_moisture_pct=11.0, target_moisture_by_product={"Cereja": 12.5})
    assert target_for("cereja", default_pct=11.0, by_product=cfg.target_moisture_by_product) == 12.5
    assert target_for("coco", default_pct=11.0, by_product=cfg.target_moisture_by_product) == 11.0
    assert target_for(None) == DEFAULT_TARGET_PCT
    record = make_record(readings=drying_readings(me=9, m0=24, k_per_h=0.1, hours=12, every_min=10))
    est = estimate_for_record(record, default_pct=11.0, by_product={"pergaminho": 12.0})
    assert est.target_pct == 12.0
    assert est.status == "estimate"


def test_long_series_are_bucketed_and_still_exact() -> None:
    readings = drying_readings(me=10, m0=25, k_per_h=0.1, hours=23 * 0.6, every_min=0.1)
    assert len(readings) > 8000
    est = estimate_drying(readings)
    assert est.fit is not None
    assert est.fit.points == len(readings)
    assert est.fit.k_per_h == pytest.approx(0.1, rel=0.01)


moisture = st.floats(min_value=0, max_value=100)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
anything = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    points=st.lists(
        st.tuples(
            st.one_of(
                st.integers(min_value=-(2**62), max_value=2**62),
                st.integers(min_value=0, max_value=10**15).map(lambda x: T0_NS + x),
            ),
            st.one_of(moisture, finite, anything),
        ),
        max_size=60,
    ),
    target=st.one_of(finite, anything),
)
def test_any_series_gives_a_result_or_a_reason(
    points: list[tuple[int, float]], target: float
) -> None:
    readings = tuple(
        LotReading(ts_ns=ts, seq=i, device="d", station="s", moisture_pct=v)
        for i, (ts, v) in enumerate(points)
    )
    est = estimate_drying(readings, target_pct=target)
    assert est.status in ("estimate", "reached", "not_enough_data", "never")
    assert describe(est)
    assert describe(est, "en")
    if est.status in ("estimate", "reached"):
        assert est.remaining_s is not None
        assert est.remaining_s >= 0
        assert math.isfinite(est.remaining_s)
        assert est.fit is not None
    else:
        assert est.remaining_s is None
        assert est.eta_ns is None
