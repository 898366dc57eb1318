"""Buying policies: each turns what is known at the close of day d into how much to buy.

A policy is data (`procurement.yaml`: name, kind, params) built by `build_policy` from the
`POLICIES` registry. Every policy is pure: `decide` reads only its `DecisionContext` (closes
up to d, the latest forecast row per horizon usable on d, what remains to buy) and keeps no
state between days. The engine in `backtest.py` clips what a policy asks for and buys what
remains on the last day; the policies still keep 0 <= buy_lb <= remaining_lb themselves.

Forecast distributions are read as a quantile function on a fine grid: from the CDF knots
(`cdf_logret`, `cdf_prob`, log returns from the row's `price`) when present, else from the
target zones p10..p90 joined linearly and extended past p10 and p90 with the end slopes, else
the point forecast. `perfect_foresight` is not here: it needs the future, so it is a bound
computed from realised prices in `backtest.py`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

import numpy as np

from cbi_platform.procurement.contract import ZONE_LEVELS
from cbi_platform.procurement.programme import Programme

ACTIONS = ("buy", "wait", "split")
_GRID_SIZE = 2000
_U = (np.arange(_GRID_SIZE) + 0.5) / _GRID_SIZE
_ZONE_U = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
_TOL = 1e-9


@dataclass(frozen=True)
class DecisionContext:
    """Everything known at the close of `day`, and nothing else."""

    day: dt.date
    price: float  # close of `day`, c/lb
    closes: np.ndarray  # closes up to and including `day` (read-only)
    forecasts: Mapping[str, Mapping[str, Any]]  # horizon -> latest row with known_at <= day
    remaining_lb: float
    total_lb: float
    days_left: int  # trading days left in the window, today included
    window_end: dt.date
    programme: Programme

    @property
    def pace_lb(self) -> float:
        """The even pace: what remains spread over the days left."""
        return self.remaining_lb / max(self.days_left, 1)

    def carry(self, days_from_now: int = 0) -> float:
        """Carry (c/lb) of buying `days_from_now` trading days after today."""
        return float(self.programme.carry(max(self.days_left - 1 - days_from_now, 0)))


@dataclass(frozen=True)
class Decision:
    buy_lb: float
    action: str  # buy | wait | split
    reason: str  # one sentence a buyer can read
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")


class Policy(Protocol):
    name: str
    kind: ClassVar[str]

    def decide(self, ctx: DecisionContext) -> Decision: ...


PolicyFactory = Callable[..., Policy]


# ---- reading a forecast distribution ----------------------------------------------------


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def quantile_levels(row: Mapping[str, Any]) -> tuple[np.ndarray, str] | None:
    """The row's distribution of price levels as a quantile function on a fine grid of
    probabilities, and where it came from (cdf | zones | point); None when it has nothing."""
    price = row.get("price")
    knots, probs = row.get("cdf_logret"), row.get("cdf_prob")
    if _finite(price) and knots is not None and probs is not None and len(knots) == len(probs):
        x, p = np.asarray(knots, dtype=float), np.asarray(probs, dtype=float)
        ok = np.isfinite(x) & np.isfinite(p)
        x, p = x[ok], p[ok]
        order = np.argsort(x, kind="stable")
        x, p = x[order], np.maximum.accumulate(np.clip(p[order], 0.0, 1.0))
        rising = np.concatenate([[True], np.diff(p) > 0]) if p.size else p.astype(bool)
        x, p = x[rising], p[rising]
        if x.size >= 2:
            return float(price) * np.exp(np.interp(_U, p, x)), "cdf"
    zones = [row.get(c) for c in ZONE_LEVELS]
    if all(_finite(z) for z in zones):
        q = np.sort(np.asarray(zones, dtype=float))
        lo, hi = q[0] - (q[1] - q[0]) / 2.0, q[4] + (q[4] - q[3]) / 2.0
        return np.interp(_U, _ZONE_U, np.concatenate([[lo], q, [hi]])), "zones"
    if _finite(row.get("forecast")):
        return np.full(_GRID_SIZE, float(row["forecast"])), "point"
    return None


def distribution_mean(row: Mapping[str, Any]) -> float | None:
    got = quantile_levels(row)
    return None if got is None else float(got[0].mean())


def distribution_cvar(row: Mapping[str, Any], alpha: float) -> float | None:
    """Mean of the distribution's upper tail above its `alpha` quantile (a cost to a buyer)."""
    got = quantile_levels(row)
    return None if got is None else _upper_tail_mean(got[0], alpha)


def _upper_tail_mean(levels: np.ndarray, alpha: float) -> float:
    return float(levels[_U > alpha].mean())


def _waiting_options(ctx: DecisionContext) -> list[tuple[str, int, Mapping[str, Any]]]:
    """Forecast horizons whose target day still falls inside the window (h <= days_left - 1)."""
    opts = [
        (hz, int(row["horizon_days"]), row)
        for hz, row in ctx.forecasts.items()
        if row.get("horizon_days") is not None
        and 1 <= int(row["horizon_days"]) <= ctx.days_left - 1
    ]
    return sorted(opts, key=lambda o: o[1])


# ---- small helpers ----------------------------------------------------------------------


def _lb(x: float) -> str:
    return f"{x:,.0f} lb"


def _action(buy_lb: float, remaining_lb: float) -> str:
    if buy_lb <= _TOL:
        return "wait"
    return "buy" if buy_lb >= remaining_lb - _TOL else "split"


def _bounded(buy_lb: float, ctx: DecisionContext) -> float:
    return float(min(max(buy_lb, 0.0), ctx.remaining_lb))


def _share(buy_lb: float, ctx: DecisionContext) -> str:
    return f"{buy_lb / ctx.remaining_lb:.0%}" if ctx.remaining_lb > 0 else "0%"


def _decision(buy_lb: float, ctx: DecisionContext, reason: str, **details: Any) -> Decision:
    buy = _bounded(buy_lb, ctx)
    return Decision(buy, _action(buy, ctx.remaining_lb), reason, details)


def _odds(row: Mapping[str, Any], h: int, price: float) -> str:
    """'72% probability the price is higher in 21 days (the 1m P30 47.10 is above today's
    46.80)': the row's own words on direction, where it has them."""
    parts = []
    if _finite(row.get("prob_up")):
        parts.append(f"{row['prob_up']:.0%} probability the price is higher in {h} trading days")
    p30, p70 = row.get("p30"), row.get("p70")
    hz = row.get("horizon", f"{h}d")
    if _finite(p30) and p30 > price:
        parts.append(f"the {hz} P30 {p30:.2f} is above today's {price:.2f}")
    elif _finite(p70) and p70 < price:
        parts.append(f"the {hz} P70 {p70:.2f} is below today's {price:.2f}")
    if not parts:
        return ""
    return "; " + (f"{parts[0]} ({parts[1]})" if len(parts) == 2 else parts[0])


def _no_horizon(ctx: DecisionContext) -> str:
    if ctx.days_left <= 1:
        return f"Last day of the window: buy the remaining {_lb(ctx.remaining_lb)}."
    return (
        f"Buy the even pace ({_lb(ctx.pace_lb)}): no forecast horizon ends within the "
        f"{ctx.days_left - 1} trading days left after today."
    )


class _Params:
    """`params`: the policy's parameters as the dict procurement.yaml holds."""

    @property
    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}  # type: ignore[arg-type]


def _check_fraction(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


# ---- benchmarks -------------------------------------------------------------------------


@dataclass(frozen=True)
class EvenPace(_Params):
    """Dollar-cost averaging: what remains, spread evenly over the days left."""

    name: str = "even"
    kind: ClassVar[str] = "even"

    def decide(self, ctx: DecisionContext) -> Decision:
        buy = ctx.pace_lb
        return _decision(
            buy,
            ctx,
            f"Buy the even pace: {_lb(buy)}, 1/{ctx.days_left} of the {_lb(ctx.remaining_lb)} "
            f"left, at {ctx.price:.2f} c/lb.",
        )


@dataclass(frozen=True)
class FrontLoad(_Params):
    """Everything on the window's first day (so everything remaining, whenever asked)."""

    name: str = "front_load"
    kind: ClassVar[str] = "front_load"

    def decide(self, ctx: DecisionContext) -> Decision:
        return _decision(
            ctx.remaining_lb,
            ctx,
            f"Buy all {_lb(ctx.remaining_lb)} now at {ctx.price:.2f} c/lb "
            f"(+{ctx.carry():.2f} carry to {ctx.window_end}): front-loading.",
        )


@dataclass(frozen=True)
class LegacyRule(_Params):
    """The rule the platform replaces, on a VIX stand-in.

    VIX is absent from the data, so its stand-in is ZL's own annualised 21-day realised
    volatility × 100 (std of the last 21 daily log returns × sqrt(252) × 100). VIX > 25 and
    price < 0.98 × MA20: strong buy (`strong_fraction` of what remains); VIX > 20 and price <
    0.99 × MA20: buy (`buy_fraction`); 5-day momentum < -3% and VIX > 18: buy the dip
    (`buy_fraction`); otherwise the even pace.
    """

    name: str = "legacy_rule"
    strong_fraction: float = 0.5
    buy_fraction: float = 0.25
    kind: ClassVar[str] = "legacy_rule"

    def __post_init__(self) -> None:
        _check_fraction("strong_fraction", self.strong_fraction)
        _check_fraction("buy_fraction", self.buy_fraction)

    @staticmethod
    def indicators(closes: np.ndarray) -> dict[str, float] | None:
        """vix_standin, ma20, momentum_5d from closes up to today; None with < 22 closes."""
        if closes.size < 22 or np.any(closes[-22:] <= 0):
            return None
        returns = np.diff(np.log(closes[-22:]))
        return {
            "vix_standin": float(returns.std(ddof=1) * math.sqrt(252) * 100.0),
            "ma20": float(closes[-20:].mean()),
            "momentum_5d": float(closes[-1] / closes[-6] - 1.0),
        }

    def decide(self, ctx: DecisionContext) -> Decision:
        ind = self.indicators(np.asarray(ctx.closes, dtype=float))
        pace = ctx.pace_lb
        if ind is None:
            return _decision(
                pace, ctx, f"Buy the even pace ({_lb(pace)}): fewer than 22 closes for the rule."
            )
        vix, ma20, mom = ind["vix_standin"], ind["ma20"], ind["momentum_5d"]
        why = (
            f"VIX stand-in (ZL 21-day realised vol) {vix:.1f}, price {ctx.price:.2f} vs MA20 "
            f"{ma20:.2f}, 5-day momentum {mom:+.1%}"
        )
        details = {**ind, "vix_note": "VIX absent: stand-in = ZL annualised 21d realised vol x100"}
        if vix > 25 and ctx.price < 0.98 * ma20:
            buy = max(self.strong_fraction * ctx.remaining_lb, pace)
            return _decision(
                buy,
                ctx,
                f"Strong buy {_share(buy, ctx)} now ({_lb(buy)}): {why}.",
                signal="strong_buy",
                **details,
            )
        if vix > 20 and ctx.price < 0.99 * ma20:
            buy = max(self.buy_fraction * ctx.remaining_lb, pace)
            return _decision(
                buy,
                ctx,
                f"Buy {_share(buy, ctx)} now ({_lb(buy)}): {why}.",
                signal="buy",
                **details,
            )
        if mom < -0.03 and vix > 18:
            buy = max(self.buy_fraction * ctx.remaining_lb, pace)
            return _decision(
                buy,
                ctx,
                f"Buy the dip, {_share(buy, ctx)} now ({_lb(buy)}): {why}.",
                signal="buy_the_dip",
                **details,
            )
        return _decision(
            pace,
            ctx,
            f"Buy the even pace ({_lb(pace)}): no signal ({why}).",
            signal="none",
            **details,
        )


# ---- forecast policies ------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedCost(_Params):
    """Buy now vs the expected cost of waiting for each horizon that ends inside the window.

    Today's cost = price + carry to the window's end; waiting for horizon h costs the mean of
    its forecast distribution + the carry from then. Today cheaper than every wait by more
    than `margin` c/lb: buy everything; a wait cheaper than today by more than `margin`:
    buy only `min_fraction` of what remains; within `margin`: the even pace (split).
    """

    name: str = "expected_cost"
    margin: float = 0.25
    min_fraction: float = 0.0
    kind: ClassVar[str] = "expected_cost"

    def __post_init__(self) -> None:
        if not self.margin >= 0:
            raise ValueError(f"margin must be >= 0, got {self.margin!r}")
        _check_fraction("min_fraction", self.min_fraction)

    def decide(self, ctx: DecisionContext) -> Decision:
        now = ctx.price + ctx.carry()
        waits = []
        for hz, h, row in _waiting_options(ctx):
            got = quantile_levels(row)
            if got is not None:
                mean = float(got[0].mean())
                waits.append((mean + ctx.carry(h), hz, h, row, mean, got[1]))
        pace = ctx.pace_lb
        if not waits:
            return _decision(pace, ctx, _no_horizon(ctx), cost_now=now)
        wait, hz, h, row, mean, source = min(waits, key=lambda w: w[0])
        edge = wait - now
        details = {
            "cost_now": now,
            "best_wait": wait,
            "best_horizon": hz,
            "edge": edge,
            "mean": mean,
            "source": source,
            "row_date": row.get("date"),
            "waits": {w[1]: w[0] for w in waits},
        }
        costs = (
            f"today {ctx.price:.2f} + {ctx.carry():.2f} carry = {now:.2f} c/lb vs waiting for "
            f"the {hz} ({h} days): expected {mean:.2f} + {ctx.carry(h):.2f} carry = {wait:.2f}"
        )
        odds = _odds(row, h, ctx.price)
        if edge > self.margin:
            return _decision(
                ctx.remaining_lb,
                ctx,
                f"Buy all {_lb(ctx.remaining_lb)} now: {costs}, {edge:.2f} c/lb dearer{odds}.",
                **details,
            )
        if edge < -self.margin:
            buy = self.min_fraction * ctx.remaining_lb
            head = "Wait" if buy <= _TOL else f"Buy only {_share(buy, ctx)} ({_lb(buy)})"
            return _decision(
                buy, ctx, f"{head}: {costs}, {-edge:.2f} c/lb cheaper{odds}.", **details
            )
        return _decision(
            pace,
            ctx,
            f"Split: buy the even pace ({_lb(pace)}): {costs}, within the "
            f"{self.margin:.2f} c/lb margin{odds}.",
            **details,
        )


@dataclass(frozen=True)
class CVaR(_Params):
    """Risk-averse: the cost of waiting is the CVaR at `alpha` (the mean of the worst
    1 - alpha of outcomes) of the best horizon that ends inside the window, plus its carry.
    Today cheaper than that: buy `buy_fraction` of what remains (never less than the even
    pace); otherwise the even pace."""

    name: str = "cvar"
    alpha: float = 0.9
    buy_fraction: float = 0.25
    kind: ClassVar[str] = "cvar"

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        _check_fraction("buy_fraction", self.buy_fraction)

    def decide(self, ctx: DecisionContext) -> Decision:
        now = ctx.price + ctx.carry()
        waits = []
        for hz, h, row in _waiting_options(ctx):
            got = quantile_levels(row)
            if got is not None:
                tail = _upper_tail_mean(got[0], self.alpha)
                waits.append((tail + ctx.carry(h), hz, h, row, tail, float(got[0].mean())))
        pace = ctx.pace_lb
        if not waits:
            return _decision(pace, ctx, _no_horizon(ctx), cost_now=now)
        wait, hz, h, row, tail, mean = min(waits, key=lambda w: w[0])
        worst = f"worst {1 - self.alpha:.0%}"
        details = {
            "cost_now": now,
            "cvar_wait": wait,
            "best_horizon": hz,
            "cvar": tail,
            "mean": mean,
            "alpha": self.alpha,
            "row_date": row.get("date"),
        }
        odds = _odds(row, h, ctx.price)
        if now < wait:
            buy = max(self.buy_fraction * ctx.remaining_lb, pace)
            return _decision(
                buy,
                ctx,
                f"Buy {_share(buy, ctx)} now ({_lb(buy)}): today's {now:.2f} c/lb (with carry) "
                f"is below the {worst} average cost of waiting for the {hz}, {wait:.2f}{odds}.",
                **details,
            )
        return _decision(
            pace,
            ctx,
            f"Buy the even pace ({_lb(pace)}): even the {worst} average cost of waiting for the "
            f"{hz}, {wait:.2f} c/lb, is not above today's {now:.2f}{odds}.",
            **details,
        )


@dataclass(frozen=True)
class ValueTrigger(_Params):
    """Buy `buy_fraction` of what remains when today's close is below the `percentile` of
    the previous `lookback` closes; otherwise `min_fraction` of what remains (None: the even
    pace). Uses no forecast."""

    name: str = "value_trigger"
    percentile: float = 20.0
    lookback: int = 63
    buy_fraction: float = 0.5
    min_fraction: float | None = 0.0
    kind: ClassVar[str] = "value_trigger"

    def __post_init__(self) -> None:
        if not 0.0 <= self.percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {self.percentile!r}")
        if int(self.lookback) < 2:
            raise ValueError(f"lookback must be >= 2, got {self.lookback!r}")
        _check_fraction("buy_fraction", self.buy_fraction)
        _check_fraction("min_fraction", self.min_fraction, allow_none=True)

    def _fallback(self, ctx: DecisionContext) -> float:
        return ctx.pace_lb if self.min_fraction is None else self.min_fraction * ctx.remaining_lb

    def decide(self, ctx: DecisionContext) -> Decision:
        history = np.asarray(ctx.closes, dtype=float)[:-1][-int(self.lookback) :]
        fallback = self._fallback(ctx)
        if history.size < 2:
            return _decision(
                fallback, ctx, f"Buy {_lb(fallback)}: too few past closes for the trigger."
            )
        level = float(np.percentile(history, self.percentile))
        details = {"trigger_level": level, "n_closes": int(history.size)}
        stats = f"the {self.percentile:g}th percentile of the last {history.size} closes"
        if ctx.price < level:
            buy = max(self.buy_fraction * ctx.remaining_lb, fallback)
            return _decision(
                buy,
                ctx,
                f"Buy {_share(buy, ctx)} now ({_lb(buy)}): today's {ctx.price:.2f} c/lb is "
                f"below {stats}, {level:.2f}.",
                **details,
            )
        head = "Wait" if fallback <= _TOL else f"Buy {_lb(fallback)}"
        return _decision(
            fallback,
            ctx,
            f"{head}: today's {ctx.price:.2f} c/lb is not below {stats}, {level:.2f}.",
            **details,
        )


POLICIES: dict[str, PolicyFactory] = {
    cls.kind: cls for cls in (EvenPace, FrontLoad, LegacyRule, ExpectedCost, CVaR, ValueTrigger)
}
NOT_A_POLICY = {
    "perfect_foresight": "perfect_foresight needs realised future prices: it is the unattainable "
    "bound computed in backtest.py (perfect_foresight_bound), not a policy"
}


def build_policy(entry: Mapping[str, Any]) -> Policy:
    """A policy from its procurement.yaml entry {name, kind, params}."""
    kind = entry.get("kind")
    if kind in NOT_A_POLICY:
        raise ValueError(NOT_A_POLICY[kind])
    if kind not in POLICIES:
        raise ValueError(f"unknown policy kind {kind!r}; known: {sorted(POLICIES)}")
    params = dict(entry.get("params") or {})
    try:
        return POLICIES[kind](name=str(entry.get("name", kind)), **params)
    except TypeError as exc:
        raise ValueError(f"policy {entry.get('name', kind)!r} ({kind}): {exc}") from exc
