"""Drying curve: how long until a lot reaches its target moisture.

Theory of operation
-------------------
Coffee in a dryer (or on a patio) loses water fast at first and ever slower as it
nears the moisture it would keep in the air around it: an exponential approach to an
equilibrium moisture ``Me``::

    M(t) = Me + (M0 - Me) * exp(-k * t)        t in hours since the first reading

For a fixed rate ``k`` the model is linear in ``Me`` and ``M0 - Me``: with
``x = exp(-k t)`` it is ``M = a + b x``, whose least-squares ``a`` and ``b`` have a
closed form. So the fit is a one-dimensional search over ``k`` (a geometric grid of
``k * span`` from ``K_SPAN_MIN`` to ``K_SPAN_MAX``, then golden-section refinement of
``log k`` around the best grid point), each step solving ``a`` and ``b`` exactly. No
SciPy, no numpy, no iteration that can diverge.

A fit is only believed when the data show a curve: the best ``k`` must lie inside
the grid (at its slow end the data are a straight line and say nothing of ``Me``; at
its fast end they are a step), the curve must fall (``b > 0``) by a visible amount
(``MIN_DROP_PP``), and readings and ``Me`` must be moistures (0 to 100 %). The time to
target is then
``t* = ln((M0 - Me) / (target - Me)) / k``; a target at or below ``Me`` is never
reached at this rate.

Every outcome is a ``DryingEstimate`` whose ``status`` says what it is and whose
``reason`` (one of ``DryingReason``) says why: the estimate never raises on data,
and a remaining time is never negative. Very long series are averaged into
``MAX_FIT_POINTS`` equal-count buckets first (a dryer's meter reading every few
seconds gives thousands), which keeps the fit within milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from coffee_telemetry.agent.lots.model import LotReading, LotRecord

__all__ = [
    "DEFAULT_TARGET_PCT",
    "DryingEstimate",
    "DryingFit",
    "DryingReason",
    "DryingStatus",
    "describe",
    "estimate_drying",
    "estimate_for_record",
    "fit_drying",
    "target_for",
]

#: Target moisture when neither the product nor the site names one (% wet basis).
DEFAULT_TARGET_PCT = 11.5
#: Fewest readings a fit is tried on.
MIN_POINTS = 6
#: Shortest span of readings a fit is tried on (seconds).
MIN_SPAN_S = 3600.0
#: Smallest fall of the fitted curve over the readings' span (percentage points).
MIN_DROP_PP = 0.5
#: The search range of ``k * span`` (the number of time constants the readings cover).
K_SPAN_MIN = 0.02
K_SPAN_MAX = 1000.0
#: Points of the geometric grid over ``k``.
GRID_POINTS = 96
#: Readings beyond this are averaged in equal-count buckets before fitting.
MAX_FIT_POINTS = 600

_NS_PER_H = 3_600_000_000_000

#: What an estimate is.
#: ``estimate``: a remaining time; ``reached``: the fitted moisture is at or below the
#: target already; ``not_enough_data``: no fit was tried or believed; ``never``: the
#: fitted equilibrium is at or above the target.
DryingStatus = Literal["estimate", "reached", "not_enough_data", "never"]

#: Why an estimate is what it is.
DryingReason = Literal[
    "ok",
    "reached",
    "too_few_points",
    "too_short_span",
    "not_finite",
    "not_decreasing",
    "no_curve",
    "implausible",
    "below_equilibrium",
]

_TEXTS: dict[str, dict[DryingReason, str]] = {
    "pt-BR": {
        "ok": "estimativa do ajuste exponencial",
        "reached": "a umidade alvo já foi atingida",
        "too_few_points": "dados insuficientes: poucas leituras",
        "too_short_span": "dados insuficientes: leituras num intervalo curto demais",
        "not_finite": "dados insuficientes: há valores não numéricos",
        "not_decreasing": "dados insuficientes: a umidade não está caindo",
        "no_curve": "dados insuficientes: a curva de secagem ainda não é visível",
        "implausible": "dados insuficientes: o ajuste não é plausível",
        "below_equilibrium": "nunca neste ritmo: o alvo está abaixo do equilíbrio",
    },
    "en": {
        "ok": "estimate from the exponential fit",
        "reached": "the target moisture has been reached",
        "too_few_points": "not enough data: too few readings",
        "too_short_span": "not enough data: readings span too short a time",
        "not_finite": "not enough data: some values are not numbers",
        "not_decreasing": "not enough data: moisture is not falling",
        "no_curve": "not enough data: no drying curve visible yet",
        "implausible": "not enough data: the fit is not plausible",
        "below_equilibrium": "never at this rate: the target is below equilibrium",
    },
}


@dataclass(frozen=True, slots=True)
class DryingFit:
    """A fitted drying curve ``M(t) = me + (m0 - me) * exp(-k * t)``.

    Attributes:
        me_pct: Equilibrium moisture.
        m0_pct: Moisture at the first reading (``t = 0``).
        k_per_h: Drying rate (per hour).
        t0_ns: Time of the first reading.
        rmse_pp: Root-mean-square residual of the fit (percentage points).
        points: Readings fitted.
        span_s: Time from the first to the last reading.
    """

    me_pct: float
    m0_pct: float
    k_per_h: float
    t0_ns: int
    rmse_pp: float
    points: int
    span_s: float

    def moisture_at(self, ts_ns: int) -> float:
        """The fitted moisture at ``ts_ns``."""
        t_h = (ts_ns - self.t0_ns) / _NS_PER_H
        return self.me_pct + (self.m0_pct - self.me_pct) * math.exp(-self.k_per_h * t_h)


@dataclass(frozen=True, slots=True)
class DryingEstimate:
    """The answer to "when will this lot be dry?".

    Attributes:
        status: What it is (``DryingStatus``).
        reason: Why (``DryingReason``; ``describe`` makes it a sentence).
        target_pct: The target moisture asked for.
        fit: The fitted curve, when one was believed.
        points: Readings looked at.
        last_ns: Time of the last reading (0 without readings).
        remaining_s: Seconds from the last reading to the target (``estimate``: > 0;
            ``reached``: 0; otherwise None). Never negative.
        eta_ns: When the target is reached (``estimate`` and ``reached`` only).
    """

    status: DryingStatus
    reason: DryingReason
    target_pct: float
    fit: DryingFit | None = None
    points: int = 0
    last_ns: int = 0
    remaining_s: float | None = None
    eta_ns: int | None = None


def describe(estimate: DryingEstimate, lang: str = "pt-BR") -> str:
    """The estimate's reason as a sentence for warehouse staff (pt-BR or ``en``)."""
    return _TEXTS.get(lang, _TEXTS["pt-BR"])[estimate.reason]


def target_for(
    product: str | None,
    *,
    default_pct: float = DEFAULT_TARGET_PCT,
    by_product: Mapping[str, float] | None = None,
) -> float:
    """A product's target moisture (``[lots] target_moisture_by_product``), else the default."""
    if product and by_product:
        value = by_product.get(product.strip().lower())
        if value is not None:
            return value
    return default_pct


def _bucketed(points: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` points: means of consecutive equal-count buckets."""
    n = len(points)
    if n <= limit:
        return points
    out: list[tuple[float, float]] = []
    for i in range(limit):
        lo, hi = i * n // limit, (i + 1) * n // limit
        chunk = points[lo:hi]
        out.append((sum(t for t, _ in chunk) / len(chunk), sum(y for _, y in chunk) / len(chunk)))
    return out


def _solve(ts: list[float], ys: list[float], k: float) -> tuple[float, float, float] | None:
    """Least-squares ``a``, ``b`` of ``y = a + b exp(-k t)`` and its residual sum of squares."""
    n = len(ts)
    xs = [math.exp(-k * t) for t in ts]
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) * (x - mx) for x in xs)
    if not sxx > 1e-18:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = my - b * mx
    sse = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, sse


def fit_drying(
    readings: Iterable[LotReading],
) -> tuple[DryingFit | None, DryingReason]:
    """Fit the drying curve to readings (any order); the fit, or None and why not.

    Only the shape is judged here (finite values, a falling curve inside the search
    range, a plausible equilibrium); ``estimate_drying`` adds the minimum points and span.
    """
    raw = sorted((r.ts_ns, r.moisture_pct) for r in readings)
    if not raw:
        return None, "too_few_points"
    if not all(math.isfinite(y) for _, y in raw):
        return None, "not_finite"
    if not all(0.0 <= y <= 100.0 for _, y in raw):
        return None, "implausible"
    t0 = raw[0][0]
    span_h = (raw[-1][0] - t0) / _NS_PER_H
    if len(raw) < 3 or not span_h > 0:
        return None, "too_few_points" if len(raw) < 3 else "too_short_span"
    points = _bucketed([((ts - t0) / _NS_PER_H, y) for ts, y in raw], MAX_FIT_POINTS)
    # Scale times to the span so the search is the same for hours or weeks.
    ts = [t / span_h for t, _ in points]
    ys = [y for _, y in points]
    if max(ys) - min(ys) < 1e-9:
        return None, "not_decreasing"

    lo, hi = math.log(K_SPAN_MIN), math.log(K_SPAN_MAX)
    grid = [lo + (hi - lo) * i / (GRID_POINTS - 1) for i in range(GRID_POINTS)]
    best_i, best_sse = -1, math.inf
    for i, u in enumerate(grid):
        solved = _solve(ts, ys, math.exp(u))
        if solved is not None and solved[1] > 0 and solved[2] < best_sse:
            best_i, best_sse = i, solved[2]
    if best_i < 0:
        return None, "not_decreasing"
    if best_i in (0, GRID_POINTS - 1):
        return None, "no_curve"
    # Golden-section search of log k between the grid neighbours of the best point.
    a, b = grid[best_i - 1], grid[best_i + 1]
    ratio = (math.sqrt(5) - 1) / 2

    def sse_at(u: float) -> float:
        solved = _solve(ts, ys, math.exp(u))
        return math.inf if solved is None or solved[1] <= 0 else solved[2]

    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = sse_at(c), sse_at(d)
    for _ in range(40):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = sse_at(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = sse_at(d)
    u = (a + b) / 2
    k_span = math.exp(u)
    solved = _solve(ts, ys, k_span)
    if solved is None or not all(math.isfinite(v) for v in solved):
        return None, "no_curve"
    me, drop, sse = solved
    if drop <= 0:
        return None, "not_decreasing"
    if drop * (1 - math.exp(-k_span)) < MIN_DROP_PP:
        return None, "not_decreasing"
    if me < 0 or me + drop > 100:
        return None, "implausible"
    fit = DryingFit(
        me_pct=me,
        m0_pct=me + drop,
        k_per_h=k_span / span_h,
        t0_ns=t0,
        rmse_pp=math.sqrt(sse / len(ys)),
        points=len(raw),
        span_s=span_h * 3600.0,
    )
    return fit, "ok"


def estimate_drying(
    readings: Iterable[LotReading],
    *,
    target_pct: float = DEFAULT_TARGET_PCT,
    min_points: int = MIN_POINTS,
    min_span_s: float = MIN_SPAN_S,
) -> DryingEstimate:
    """Estimate when readings of a drying lot reach ``target_pct`` (never raises on data).

    Args:
        readings: The lot's moisture readings, any order.
        target_pct: The target moisture (``target_for``).
        min_points: Fewer readings give ``not_enough_data`` / ``too_few_points``.
        min_span_s: A shorter span gives ``not_enough_data`` / ``too_short_span``.
    """
    rows = sorted(readings, key=lambda r: r.ts_ns)
    n = len(rows)
    last_ns = rows[-1].ts_ns if rows else 0

    def refuse(reason: DryingReason, fit: DryingFit | None = None) -> DryingEstimate:
        status: DryingStatus = "never" if reason == "below_equilibrium" else "not_enough_data"
        return DryingEstimate(
            status=status, reason=reason, target_pct=target_pct, fit=fit, points=n, last_ns=last_ns
        )

    if not math.isfinite(target_pct):
        return refuse("not_finite")
    if n < max(3, min_points):
        return refuse("too_few_points")
    if (rows[-1].ts_ns - rows[0].ts_ns) / 1e9 < max(min_span_s, 1e-9):
        return refuse("too_short_span")
    fit, reason = fit_drying(rows)
    if fit is None:
        return refuse(reason)
    now_pct = fit.moisture_at(last_ns)
    if now_pct <= target_pct:
        return DryingEstimate(
            status="reached",
            reason="reached",
            target_pct=target_pct,
            fit=fit,
            points=n,
            last_ns=last_ns,
            remaining_s=0.0,
            eta_ns=last_ns,
        )
    if target_pct <= fit.me_pct:
        return refuse("below_equilibrium", fit)
    t_target_h = math.log((fit.m0_pct - fit.me_pct) / (target_pct - fit.me_pct)) / fit.k_per_h
    remaining_s = max(0.0, t_target_h * 3600.0 - (last_ns - fit.t0_ns) / 1e9)
    if not math.isfinite(remaining_s) or remaining_s > 1e12:
        return refuse("implausible", fit)
    return DryingEstimate(
        status="estimate",
        reason="ok",
        target_pct=target_pct,
        fit=fit,
        points=n,
        last_ns=last_ns,
        remaining_s=remaining_s,
        eta_ns=last_ns + round(remaining_s * 1e9),
    )


def estimate_for_record(
    record: LotRecord,
    *,
    default_pct: float = DEFAULT_TARGET_PCT,
    by_product: Mapping[str, float] | None = None,
) -> DryingEstimate:
    """``estimate_drying`` for a lot, its target from its product (details first, then tag)."""
    product = record.details.product_type or record.summary.product or None
    target = target_for(product, default_pct=default_pct, by_product=by_product)
    return estimate_drying(record.readings, target_pct=target)
