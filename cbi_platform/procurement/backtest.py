"""Walk buying policies through past windows with nothing from the future, and judge them.

On each trading day d of a window a policy sees the closes up to d and, per horizon, the
latest decision_forecasts row with known_at <= d (and date <= d); every context is checked
before the policy reads it (`LookAheadError`). Buys execute at the close of d. The engine
clips what a policy asks for to [0, remaining], applies the programme's pace floor and price
ceiling, and buys what remains on the window's last day, so every schedule buys exactly the
programme and nothing after the window.

Look-ahead that lies about `known_at` cannot be caught row by row, so `lookahead_alarm` also
looks at outcomes: a policy keeping more than half of what perfect foresight (the unattainable
bound: everything on the cheapest day, known only afterwards) saves, or forecasts whose point
errors are far below the random walk's, is too good to be true.

Statistics over windows: the mean saving vs even buying with a moving-block bootstrap interval
(blocks of ceil(window_days / step) windows, because overlapping windows share days) and a
Diebold–Mariano-style t test with a Newey–West variance (ceil(window_days / step) - 1 lags).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.evaluation.metrics import diebold_mariano, dm_lags
from cbi_platform.procurement.contract import LookAheadError, usable, validate_decision_forecasts
from cbi_platform.procurement.policies import (
    Decision,
    DecisionContext,
    EvenPace,
    Policy,
    build_policy,
)
from cbi_platform.procurement.programme import (
    BacktestSettings,
    BuyingWindow,
    Programme,
    buying_windows,
    effective_cost,
)

BENCHMARK = "even"
PERFECT_FORESIGHT = "perfect_foresight (unattainable bound)"
_EPOCH = dt.date(1970, 1, 1)
_REL_TOL = 1e-9


def _day_int(day: dt.date) -> int:
    return (day - _EPOCH).days


def _freeze(row: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in row.items()}


# ---- what a decision may read -----------------------------------------------------------


def latest_usable(decision_forecasts: pl.DataFrame, day: dt.date) -> dict[str, dict[str, Any]]:
    """Per horizon, the latest row a decision on `day` may read: known_at <= day, date <= day."""
    rows = (
        usable(decision_forecasts, day)
        .filter(pl.col("date") <= day)
        .sort("date", "known_at")
        .group_by("horizon", maintain_order=True)
        .last()
    )
    return {r["horizon"]: _freeze(r) for r in rows.to_dicts()}


class ForecastBook:
    """`latest_usable` for every day at once (sorted by known_at, a running latest date), so
    a backtest does not filter the frame once per day and policy."""

    def __init__(self, decision_forecasts: pl.DataFrame) -> None:
        validate_decision_forecasts(decision_forecasts)
        self._by_horizon: dict[str, tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]] = {}
        dated = decision_forecasts.filter(
            pl.col("known_at").is_not_null() & pl.col("date").is_not_null()
        )
        for (hz,), sub in dated.sort("known_at", "date").group_by("horizon", maintain_order=True):
            known = sub["known_at"].cast(pl.Int32).to_numpy()
            dates = sub["date"].cast(pl.Int32).to_numpy()
            latest = np.maximum.accumulate(dates)
            where = {int(d): i for i, d in enumerate(dates)}  # (date, horizon) is unique
            best = np.array([where[int(d)] for d in latest], dtype=np.int64)
            self._by_horizon[str(hz)] = (known, best, [_freeze(r) for r in sub.to_dicts()])
        self._cache: dict[dt.date, dict[str, dict[str, Any]]] = {}

    def rows_on(self, day: dt.date) -> dict[str, dict[str, Any]]:
        """Per horizon, the latest row with known_at <= day (then date <= day too)."""
        if day not in self._cache:
            d = _day_int(day)
            out = {}
            for hz, (known, best, rows) in self._by_horizon.items():
                k = int(np.searchsorted(known, d, side="right")) - 1
                if k >= 0:
                    out[hz] = rows[best[k]]
            self._cache[day] = out
        return self._cache[day]

    def regime_on(self, day: dt.date) -> str:
        """The detected regime on `day` as the rows usable that day carry it (the shortest
        horizon's; "unknown" without one)."""
        rows = sorted(self.rows_on(day).values(), key=lambda r: r.get("horizon_days") or 0)
        return next((r["regime"] for r in rows if r.get("regime")), "unknown")


def assert_point_in_time(ctx: DecisionContext, policy_name: str) -> None:
    """Raise LookAheadError if anything handed to a policy was not known at the close of
    ctx.day: a forecast row with known_at > day or date > day, closes that do not end on
    today's close, a window already over."""
    for hz, row in ctx.forecasts.items():
        known_at, date = row.get("known_at"), row.get("date")
        if known_at is None or date is None or known_at > ctx.day or date > ctx.day:
            raise LookAheadError(
                f"policy {policy_name!r} on {ctx.day} was handed the {hz} forecast row dated "
                f"{date} with known_at {known_at}: it was not usable until after that day"
            )
    if ctx.closes.size == 0 or ctx.closes[-1] != ctx.price:
        raise LookAheadError(
            f"policy {policy_name!r} on {ctx.day}: closes must end with today's close "
            f"{ctx.price} (got {ctx.closes[-1:] if ctx.closes.size else 'none'})"
        )
    if ctx.days_left < 1 or ctx.window_end < ctx.day:
        raise LookAheadError(f"policy {policy_name!r} asked to buy on {ctx.day}, after its window")


def checked_decide(policy: Policy, ctx: DecisionContext) -> Decision:
    """The only way the engine asks a policy: the context is checked first."""
    assert_point_in_time(ctx, policy.name)
    decision = policy.decide(ctx)
    if not isinstance(decision, Decision):
        raise TypeError(f"policy {policy.name!r} returned {type(decision).__name__}, not Decision")
    return decision


def context_for_day(
    decision_forecasts: pl.DataFrame | ForecastBook,
    prices: pl.DataFrame,
    programme: Programme,
    day: dt.date,
    remaining_lb: float,
    days_left: int,
    window_end: dt.date,
) -> DecisionContext:
    """The context of one live decision (the CLI's today): closes up to `day`, forecasts
    usable on `day`."""
    frame = prices.filter(pl.col("date") <= day).sort("date")
    if frame.height == 0 or frame["date"][-1] != day:
        raise ValueError(f"no close on {day}")
    closes = frame["price"].to_numpy().astype(float)
    closes.flags.writeable = False
    if isinstance(decision_forecasts, ForecastBook):
        rows = decision_forecasts.rows_on(day)
    else:
        rows = latest_usable(decision_forecasts, day)
    return DecisionContext(
        day=day,
        price=float(closes[-1]),
        closes=closes,
        forecasts={hz: dict(r) for hz, r in rows.items()},
        remaining_lb=float(remaining_lb),
        total_lb=programme.total_lb,
        days_left=int(days_left),
        window_end=window_end,
        programme=programme,
    )


# ---- the engine -------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestResult:
    """windows: one row per (window, policy); bounds: perfect foresight per window;
    schedules: one row per (window, policy, day); forecast_skill: point errors of the
    forecasts against the random walk over the backtest span (for the alarm)."""

    programme: Programme
    windows: pl.DataFrame
    schedules: pl.DataFrame
    bounds: pl.DataFrame
    forecast_skill: pl.DataFrame
    policies: list[str]
    step: int
    benchmark: str = BENCHMARK

    def policy_windows(self, policy: str) -> pl.DataFrame:
        return self.windows.filter(pl.col("policy") == policy).sort("window_start")


def _prices_arrays(prices: pl.DataFrame) -> tuple[list[dt.date], np.ndarray]:
    frame = prices.select("date", "price").sort("date")
    if frame["date"].is_duplicated().any():
        raise ValueError("prices: duplicate dates")
    closes = frame["price"].to_numpy().astype(float)
    if not np.all(np.isfinite(closes)) or np.any(closes <= 0):
        raise ValueError("prices: every close must be finite and > 0")
    closes.flags.writeable = False
    return frame["date"].to_list(), closes


def _as_policies(policies: Sequence[Policy | Mapping[str, Any]], benchmark: str) -> list[Policy]:
    built = [build_policy(p) if isinstance(p, Mapping) else p for p in policies]
    names = [p.name for p in built]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be unique: {names}")
    if benchmark not in names:
        built.insert(0, EvenPace(name=benchmark))
    return built


def _execute(
    decision: Decision, ctx: DecisionContext, programme: Programme, last: bool, bought: float
) -> tuple[float, str]:
    """What the engine buys for a request, and why it differed (empty when it did not)."""
    raw = decision.buy_lb
    notes = []
    if raw is None or not math.isfinite(raw):
        notes.append(f"asked {raw} lb, not a finite amount: nothing bought")
        buy = 0.0
    else:
        buy = float(raw)
    if buy < 0 or buy > ctx.remaining_lb:
        notes.append(f"asked {raw:,.0f} lb, clipped to [0, {ctx.remaining_lb:,.0f}]")
        buy = min(max(buy, 0.0), ctx.remaining_lb)
    floor = min(ctx.remaining_lb, programme.min_daily_fraction * programme.total_lb)
    if buy < floor:
        notes.append(f"raised to the pace floor {floor:,.0f} lb")
        buy = floor
    ceiling = programme.price_ceiling
    if ceiling is not None and ctx.price > ceiling and buy > 0 and not last:
        notes.append(f"nothing bought: {ctx.price:.2f} is above the ceiling {ceiling:.2f} c/lb")
        buy = 0.0
    if last:
        rest = programme.total_lb - bought
        if abs(rest - buy) > _REL_TOL * programme.total_lb:
            notes.append(f"last day of the window: buying the remaining {rest:,.0f} lb")
        buy = rest
    return buy, "; ".join(notes)


def _action_of(buy: float, remaining: float) -> str:
    if buy <= 0:
        return "wait"
    return "buy" if buy >= remaining * (1 - 1e-12) else "split"


def perfect_foresight_bound(prices_w: np.ndarray, carry_w: np.ndarray) -> tuple[int, float]:
    """The unattainable bound: everything on the day of the lowest price + carry, which only
    realised prices reveal. Any schedule's cost is a weighted mean of those day costs, so no
    schedule can beat it."""
    day_costs = np.asarray(prices_w, float) + np.asarray(carry_w, float)
    k = int(np.argmin(day_costs))
    return k, float(day_costs[k])


def run_backtest(
    decision_forecasts: pl.DataFrame | ForecastBook,
    prices: pl.DataFrame,
    programme: Programme,
    policies: Sequence[Policy | Mapping[str, Any]],
    windows: Sequence[BuyingWindow],
    *,
    benchmark: str = BENCHMARK,
    keep_reasons: bool = True,
) -> BacktestResult:
    """Every policy through every window, day by day, with only what was known each day.

    `policies`: Policy objects or procurement.yaml entries; the even benchmark is added when
    absent. `windows` must lie on the price calendar.
    """
    if not windows:
        raise ValueError("run_backtest needs at least one window")
    book = (
        decision_forecasts
        if isinstance(decision_forecasts, ForecastBook)
        else ForecastBook(decision_forecasts)
    )
    dates, closes = _prices_arrays(prices)
    position = {d: i for i, d in enumerate(dates)}
    runners = _as_policies(policies, benchmark)
    total = programme.total_lb
    window_rows: list[dict[str, Any]] = []
    bound_rows: list[dict[str, Any]] = []
    sched: dict[str, list[Any]] = {
        k: []
        for k in (
            "window_start",
            "policy",
            "day",
            "days_left",
            "price",
            "carry",
            "requested_lb",
            "buy_lb",
            "remaining_lb",
            "action",
            "reason",
            "engine_note",
        )
    }
    starts: list[int] = []
    for w in sorted(windows, key=lambda w: w.first):
        if w.first not in position or w.last not in position or w.last < w.first:
            raise ValueError(f"window {w} is not on the price calendar")
        i0, i1 = position[w.first], position[w.last]
        starts.append(i0)
        n = i1 - i0 + 1
        prices_w = closes[i0 : i1 + 1]
        carry_w = np.asarray(programme.carry(np.arange(n - 1, -1, -1)), dtype=float)
        regime = book.regime_on(w.first)
        k, pf_cost = perfect_foresight_bound(prices_w, carry_w)
        bound_rows.append(
            {
                "window_start": w.first,
                "window_end": w.last,
                "regime": regime,
                "pf_day": dates[i0 + k],
                "pf_cost_cents": pf_cost,
            }
        )
        day_rows = [book.rows_on(dates[i]) for i in range(i0, i1 + 1)]
        for policy in runners:
            buys = np.zeros(n)
            bought = 0.0
            for j in range(n):
                i = i0 + j
                ctx = DecisionContext(
                    day=dates[i],
                    price=float(closes[i]),
                    closes=closes[: i + 1],
                    forecasts={hz: dict(r) for hz, r in day_rows[j].items()},
                    remaining_lb=max(total - bought, 0.0),
                    total_lb=total,
                    days_left=n - j,
                    window_end=w.last,
                    programme=programme,
                )
                decision = checked_decide(policy, ctx)
                buy, note = _execute(decision, ctx, programme, j == n - 1, bought)
                buys[j] = buy
                bought += buy
                action = decision.action if not note else _action_of(buy, ctx.remaining_lb)
                for key, value in (
                    ("window_start", w.first),
                    ("policy", policy.name),
                    ("day", dates[i]),
                    ("days_left", n - j),
                    ("price", float(closes[i])),
                    ("carry", carry_w[j]),
                    (
                        "requested_lb",
                        float(decision.buy_lb) if decision.buy_lb is not None else math.nan,
                    ),
                    ("buy_lb", buy),
                    ("remaining_lb", max(total - bought, 0.0)),
                    ("action", action),
                    ("reason", decision.reason if keep_reasons else ""),
                    ("engine_note", note),
                ):
                    sched[key].append(value)
            if abs(buys.sum() - total) > _REL_TOL * total or np.any(buys < 0):
                raise AssertionError(f"{policy.name} in {w}: schedule does not buy the programme")
            window_rows.append(
                {
                    "window_start": w.first,
                    "window_end": w.last,
                    "regime": regime,
                    "policy": policy.name,
                    "cost_cents": effective_cost(buys, prices_w, carry_w),
                    "pf_cost_cents": pf_cost,
                    "buy_days": int((buys > 0).sum()),
                }
            )
    frame = _with_savings(pl.DataFrame(window_rows, infer_schema_length=None), programme, benchmark)
    step = int(np.median(np.diff(starts))) if len(starts) > 1 else programme.window_days
    span = (min(w.first for w in windows), max(w.last for w in windows)) if windows else None
    return BacktestResult(
        programme=programme,
        windows=frame,
        schedules=pl.DataFrame(sched, infer_schema_length=None),
        bounds=pl.DataFrame(bound_rows, infer_schema_length=None),
        forecast_skill=_skill_from_book(book, dates, closes, span),
        policies=[p.name for p in runners],
        step=max(step, 1),
        benchmark=benchmark,
    )


def _with_savings(frame: pl.DataFrame, programme: Programme, benchmark: str) -> pl.DataFrame:
    if frame.height == 0:
        return frame
    even = frame.filter(pl.col("policy") == benchmark).select(
        "window_start", pl.col("cost_cents").alias("even_cost_cents")
    )
    lb = programme.total_lb
    return (
        frame.join(even, on="window_start", how="left")
        .with_columns(
            savings_cents=pl.col("even_cost_cents") - pl.col("cost_cents"),
            pf_savings_cents=pl.col("even_cost_cents") - pl.col("pf_cost_cents"),
        )
        .with_columns(
            savings_dollars=pl.col("savings_cents") * lb / 100.0,
            capture=pl.when(pl.col("pf_savings_cents") > 0)
            .then(pl.col("savings_cents") / pl.col("pf_savings_cents"))
            .otherwise(None),
        )
    )


# ---- forecast skill (for the alarm) -----------------------------------------------------


def forecast_skill(
    decision_forecasts: pl.DataFrame,
    prices: pl.DataFrame,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> pl.DataFrame:
    """Per horizon, MAE of matured point forecasts dated in [start, end] against the realised
    close `horizon_days` trading days after `date`, and the MAE of the random walk from the
    day the row became usable (the close on `known_at`). Rows usable only on or after their
    target day are no forecast at all and are left out."""
    return _skill_from_book(ForecastBook(decision_forecasts), *_prices_arrays(prices), (start, end))


def _skill_from_book(
    book: ForecastBook,
    dates: list[dt.date],
    closes: np.ndarray,
    span: tuple[dt.date | None, dt.date | None] | None,
) -> pl.DataFrame:
    day_ints = np.array([_day_int(d) for d in dates], dtype=np.int64)
    start, end = span if span else (None, None)
    out = []
    for hz, (_, _, rows) in sorted(book._by_horizon.items()):
        picked = [
            r
            for r in rows
            if r.get("forecast") is not None
            and math.isfinite(r["forecast"])
            and (start is None or r["date"] >= start)
            and (end is None or r["date"] <= end)
        ]
        if not picked:
            continue
        at = np.searchsorted(day_ints, [_day_int(r["date"]) for r in picked], side="right") - 1
        known = np.searchsorted(day_ints, [_day_int(r["known_at"]) for r in picked], side="right")
        target = at + np.array([int(r["horizon_days"]) for r in picked])
        ok = (at >= 0) & (target < len(dates)) & (known - 1 < target)
        if not ok.any():
            continue
        forecast = np.array([r["forecast"] for r in picked])[ok]
        realised = closes[target[ok]]
        rw = closes[known[ok] - 1]
        mae, mae_rw = (
            float(np.mean(np.abs(forecast - realised))),
            float(np.mean(np.abs(rw - realised))),
        )
        out.append(
            {
                "horizon": hz,
                "horizon_days": int(picked[0]["horizon_days"]),
                "n": int(ok.sum()),
                "mae": mae,
                "mae_rw": mae_rw,
                "rel_mae": mae / mae_rw if mae_rw > 0 else math.nan,
            }
        )
    schema = {
        "horizon": pl.Utf8,
        "horizon_days": pl.Int64,
        "n": pl.Int64,
        "mae": pl.Float64,
        "mae_rw": pl.Float64,
        "rel_mae": pl.Float64,
    }
    return pl.DataFrame(out, schema=schema)


# ---- the too-good-to-be-true alarm ------------------------------------------------------


@dataclass(frozen=True)
class LookAheadAlarm:
    firing: bool
    messages: list[str]
    capture: pl.DataFrame
    forecast_skill: pl.DataFrame

    @property
    def message(self) -> str:
        return " ".join(self.messages) if self.messages else "no sign of look-ahead"

    def raise_if_firing(self) -> None:
        if self.firing:
            raise LookAheadError(self.message)


def lookahead_alarm(
    result: BacktestResult,
    capture_share: float = 0.5,
    relative_mae: float = 0.5,
    min_windows: int = 20,
    min_rows: int = 30,
) -> LookAheadAlarm:
    """Too good to be true: a policy keeps more than `capture_share` of the perfect-foresight
    savings over >= `min_windows` windows, or a horizon's matured point forecasts (>=
    `min_rows`) have an MAE below `relative_mae` × the random walk's. Either means the
    forecasts knew the future however their `known_at` reads."""
    capture = (
        result.windows.filter(pl.col("policy") != result.benchmark)
        .group_by("policy", maintain_order=True)
        .agg(
            n_windows=pl.len(),
            savings_cents=pl.col("savings_cents").sum(),
            pf_savings_cents=pl.col("pf_savings_cents").sum(),
        )
        .with_columns(
            capture=pl.when(pl.col("pf_savings_cents") > 0)
            .then(pl.col("savings_cents") / pl.col("pf_savings_cents"))
            .otherwise(None)
        )
    )
    messages = []
    for row in capture.iter_rows(named=True):
        if row["n_windows"] >= min_windows and (row["capture"] or 0.0) > capture_share:
            messages.append(
                f"Look-ahead suspected: policy {row['policy']!r} keeps {row['capture']:.0%} of "
                f"the perfect-foresight savings over {row['n_windows']} windows (alarm above "
                f"{capture_share:.0%}); perfect foresight is unattainable."
            )
    for row in result.forecast_skill.iter_rows(named=True):
        rel = row["rel_mae"]
        if row["n"] >= min_rows and rel is not None and math.isfinite(rel) and rel < relative_mae:
            messages.append(
                f"Look-ahead suspected: the {row['horizon']} forecasts' MAE is {rel:.2f} × the "
                f"random walk's over {row['n']} matured rows (alarm below {relative_mae:.2f}); "
                f"no honest price forecast is that good."
            )
    return LookAheadAlarm(bool(messages), messages, capture, result.forecast_skill)


# ---- statistics over windows ------------------------------------------------------------


def block_length(window_days: int, step: int) -> int:
    """Windows whose days overlap a window's: ceil(window_days / step)."""
    return max(1, math.ceil(window_days / step - 1e-9))


def moving_block_bootstrap(
    values: Sequence[float], block: int, n_boot: int = 2000, seed: int = 0, confidence: float = 0.9
) -> dict[str, float]:
    """Mean, percentile interval and two-sided p-value (of mean = 0, from the centred
    resamples) of a series in date order, by a moving-block bootstrap."""
    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "p": math.nan}
    mean = float(x.mean())
    block = max(1, min(int(block), n))
    n_blocks = math.ceil(n / block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block + 1, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n_boot, -1)[:, :n]
    means = x[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    if np.all(x == x[0]):
        p = math.nan if x[0] == 0 else 0.0
    else:
        p = float(np.mean(np.abs(means - mean) >= abs(mean)))
    return {"mean": mean, "low": float(low), "high": float(high), "p": p}


def newey_west_test(values: Sequence[float], lags: int) -> dict[str, float]:
    """DM-style t test of mean = 0: Newey–West variance with `lags`, HLN correction, two-sided
    p-value (metrics.diebold_mariano on the series against zero)."""
    x = np.asarray(values, dtype=float)
    res = diebold_mariano(x, np.zeros_like(x), lags)
    return {"stat": res.stat, "p": res.pvalue, "lags": lags, "n": res.n}


def savings_statistics(
    result: BacktestResult,
    n_boot: int = 2000,
    seed: int = 20240613,
    confidence: float = 0.9,
    quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
) -> pl.DataFrame:
    """Per policy: mean savings vs even (c/lb, $) with the block-bootstrap interval, both
    p-values, share of windows better than even, quantiles over windows, the worst window
    and its shortfall (positive = dearer than even). Windows in date order."""
    programme = result.programme
    block = block_length(programme.window_days, result.step)
    lags = dm_lags(programme.window_days, result.step)
    rows = []
    for name in result.policies:
        w = result.policy_windows(name)
        s = w["savings_cents"].to_numpy().astype(float)
        if s.size == 0:
            continue
        boot = moving_block_bootstrap(s, block, n_boot, seed, confidence)
        nw = newey_west_test(s, lags)
        worst = int(np.argmin(s))
        pf = w["pf_savings_cents"].to_numpy().astype(float)
        row = {
            "policy": name,
            "n_windows": int(s.size),
            "mean_savings_cents": boot["mean"],
            "ci_low_cents": boot["low"],
            "ci_high_cents": boot["high"],
            "mean_savings_dollars": programme.dollars(boot["mean"]),
            "ci_low_dollars": programme.dollars(boot["low"]),
            "ci_high_dollars": programme.dollars(boot["high"]),
            "p_bootstrap": boot["p"],
            "p_newey_west": nw["p"],
            "share_better": float(np.mean(s > 1e-12)),
            "worst_window_start": w["window_start"][worst],
            "worst_shortfall_cents": 0.0 - float(s[worst]),
            "worst_shortfall_dollars": programme.dollars(0.0 - float(s[worst])),
            "capture": float(s.sum() / pf.sum()) if pf.sum() > 0 else math.nan,
            "block_length": block,
            "nw_lags": lags,
            "confidence": confidence,
        }
        for q, v in zip(quantiles, np.quantile(s, quantiles), strict=True):
            row[f"q{round(q * 100):02d}_cents"] = float(v)
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def bound_statistics(result: BacktestResult) -> dict[str, float]:
    """The perfect-foresight bound's mean savings vs even (unattainable)."""
    even = result.policy_windows(result.benchmark)
    s = even["pf_savings_cents"].to_numpy().astype(float)
    mean = float(s.mean()) if s.size else math.nan
    return {
        "label": PERFECT_FORESIGHT,
        "mean_savings_cents": mean,
        "mean_savings_dollars": result.programme.dollars(mean),
        "n_windows": int(s.size),
    }


def savings_by_regime(result: BacktestResult) -> pl.DataFrame:
    """Per policy and regime at window start: windows, mean savings (c/lb, $), share better."""
    lb = result.programme.total_lb
    return (
        result.windows.group_by("policy", "regime", maintain_order=True)
        .agg(
            n_windows=pl.len(),
            mean_savings_cents=pl.col("savings_cents").mean(),
            share_better=(pl.col("savings_cents") > 1e-12).mean(),
            worst_shortfall_cents=pl.lit(0.0) - pl.col("savings_cents").min(),
        )
        .with_columns(mean_savings_dollars=pl.col("mean_savings_cents") * lb / 100.0)
        .sort("policy", "regime")
    )


# ---- choosing parameters on development windows only ------------------------------------


@dataclass(frozen=True)
class SelectionRule:
    """Pre-registered: highest mean savings vs even among candidates whose worst window is
    at most `max_worst_shortfall_cents` dearer than even; ties go to the first in the grid."""

    max_worst_shortfall_cents: float
    tie_tolerance_cents: float = 1e-9


@dataclass(frozen=True)
class ParameterChoice:
    chosen: dict[str, dict[str, Any] | None]  # kind -> params (None: no admissible candidate)
    table: pl.DataFrame  # every candidate, its numbers, admissible, chosen
    dev_span: tuple[dt.date, dt.date]
    rule: SelectionRule = field(default_factory=lambda: SelectionRule(2.0))


def grid_candidates(spec: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> list[dict]:
    """A kind's grid: {param: [values]} (the product, first values first) or a list of
    parameter dicts; the first candidate is the simplest."""
    if isinstance(spec, Mapping):
        keys = list(spec)
        values = [v if isinstance(v, list | tuple) else [v] for v in spec.values()]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
    return [dict(c) for c in spec]


def protocol_windows(
    decision_forecasts: pl.DataFrame,
    prices: pl.DataFrame,
    window_days: int,
    step: int,
    role: str,
) -> list[BuyingWindow]:
    """Buying windows whose every day lies within the span of forecast dates of one protocol
    window (development | scored | live)."""
    span = decision_forecasts.filter(pl.col("window") == role).select(
        pl.col("date").min().alias("lo"), pl.col("date").max().alias("hi")
    )
    lo, hi = span["lo"][0], span["hi"][0]
    if lo is None:
        return []
    return buying_windows(prices["date"].to_list(), window_days, step, start=lo, end=hi)


def choose_parameters(
    grid: Mapping[str, Any],
    decision_forecasts: pl.DataFrame,
    prices: pl.DataFrame,
    programme: Programme,
    dev_windows: Sequence[BuyingWindow],
    rule: SelectionRule | None = None,
) -> ParameterChoice:
    """Each kind's parameters from its grid, judged on development windows only.

    Forecast rows and prices after the last development day are cut off before anything runs,
    and a development window whose days carry scored or live forecast rows is refused, so the
    scored period cannot move the choice."""
    if not dev_windows:
        raise ValueError("choose_parameters needs at least one development window")
    rule = rule or SelectionRule(programme.max_worst_shortfall_cents)
    dev_start = min(w.first for w in dev_windows)
    dev_end = max(w.last for w in dev_windows)
    forecasts = decision_forecasts.filter(
        (pl.col("known_at") <= dev_end) & (pl.col("date") <= dev_end)
    )
    in_dev = pl.any_horizontal(
        *[(pl.col("date") >= w.first) & (pl.col("date") <= w.last) for w in dev_windows]
    )
    leaked = forecasts.filter(in_dev & pl.col("window").is_in(["scored", "live"]))
    if leaked.height:
        raise ValueError(
            f"development windows hold {leaked.height} scored/live forecast row(s), e.g. "
            f"{leaked.select('date', 'horizon', 'window').head(3).to_dicts()}"
        )
    dev_prices = prices.filter(pl.col("date") <= dev_end)
    candidates: list[tuple[str, int, dict[str, Any], str]] = []
    for kind, spec in grid.items():
        for i, params in enumerate(grid_candidates(spec)):
            candidates.append((kind, i, params, f"{kind}[{i}]"))
    policies = [
        build_policy({"name": name, "kind": kind, "params": params})
        for kind, _, params, name in candidates
    ]
    result = run_backtest(
        forecasts, dev_prices, programme, policies, dev_windows, keep_reasons=False
    )
    rows = []
    for kind, i, params, name in candidates:
        s = result.policy_windows(name)["savings_cents"].to_numpy().astype(float)
        worst = 0.0 - float(s.min())
        rows.append(
            {
                "kind": kind,
                "candidate": i,
                "params": json.dumps(params, sort_keys=True),
                "n_windows": int(s.size),
                "mean_savings_cents": float(s.mean()),
                "worst_shortfall_cents": worst,
                "admissible": worst <= rule.max_worst_shortfall_cents,
            }
        )
    chosen: dict[str, dict[str, Any] | None] = {}
    for kind in grid:
        best: dict[str, Any] | None = None
        for row in rows:
            row.setdefault("chosen", False)
            if row["kind"] != kind or not row["admissible"]:
                continue
            margin = rule.tie_tolerance_cents
            if best is None or row["mean_savings_cents"] > best["mean_savings_cents"] + margin:
                best = row
        if best is not None:
            best["chosen"] = True
        chosen[kind] = json.loads(best["params"]) if best else None
    table = pl.DataFrame(rows, infer_schema_length=None)
    return ParameterChoice(chosen, table, (dev_start, dev_end), rule)


# ---- after deployment -------------------------------------------------------------------


def decision_quality(
    realised_schedule_costs: Sequence[float],
    even_costs: Sequence[float],
    window: int,
    threshold: float,
) -> dict[str, Any]:
    """Drift of the recommended schedules after deployment: over the last `window` completed
    buying windows (costs in date order, c/lb; incomplete ones as NaN are skipped), the mean
    shortfall vs even buying (positive = dearer). Fires when a full `window` of windows is
    there and the mean shortfall exceeds `threshold` c/lb."""
    ours = np.asarray(realised_schedule_costs, dtype=float)
    even = np.asarray(even_costs, dtype=float)
    if ours.shape != even.shape:
        raise ValueError(f"{ours.size} schedule costs but {even.size} even costs")
    if window < 1:
        raise ValueError("window must be >= 1")
    complete = np.isfinite(ours) & np.isfinite(even)
    shortfall = (ours - even)[complete][-window:]
    n = int(shortfall.size)
    mean = float(shortfall.mean()) if n else math.nan
    firing = bool(n >= window and mean > threshold)
    return {
        "rolling_mean_shortfall_cents": mean,
        "n_windows": n,
        "window": int(window),
        "threshold_cents": float(threshold),
        "firing": firing,
        "message": (
            f"recommended schedules cost {mean:+.2f} c/lb vs even buying over the last {n} "
            f"completed windows (fires above {threshold:+.2f})"
            if n
            else "no completed windows yet"
        ),
    }


def judge(
    result: BacktestResult, settings: BacktestSettings
) -> tuple[pl.DataFrame, LookAheadAlarm]:
    """The savings statistics and the look-ahead alarm of a backtest, by procurement.yaml's
    `backtest:` settings (the asset and the benchmark judge the same way)."""
    stats = savings_statistics(
        result, settings.bootstrap_resamples, settings.seed, settings.confidence
    )
    alarm = lookahead_alarm(
        result,
        settings.alarm_capture_share,
        settings.alarm_relative_mae,
        settings.alarm_min_windows,
        settings.alarm_min_rows,
    )
    return stats, alarm


def default_windows(
    prices: pl.DataFrame,
    programme: Programme,
    settings: BacktestSettings,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> list[BuyingWindow]:
    """Windows of the programme's length every `settings.window_step` trading days."""
    return buying_windows(
        prices["date"].to_list(), programme.window_days, settings.window_step, start=start, end=end
    )
