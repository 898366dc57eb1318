"""What past forecasts said, and what happened: the target zones of matured served forecasts
with the realised price, and how often each zone held, in words (issue 22 §3).

Matured served forecasts are exactly those `/monitoring/performance` scores
(`validation.score_matured`: the close on the target date, or the last close before it, from the
served history itself). A zone "held" when the realised price lay inside it, ends included.

Hit rates count the last `last` matured forecasts of a horizon (by origin). Forecasts issued
every day at an h-day horizon share most of their target windows, so 90 of them are far fewer
than 90 independent outcomes. The interval therefore comes from the EFFECTIVE sample size: the
greedy count of non-overlapping (origin, target] windows among them
(`ensemble.conformal._independent_outcomes`, about n / h for daily origins, at least 1), and the
95% Wilson interval of the observed share on that many outcomes
(`ensemble.conformal.coverage_interval`, the interval the release gates use).

On a home where no served forecast has matured yet, the walk-forward's past zones (published by
the `forecasts` asset, `serving.walk_forward_zones`) stand in, labelled as such; with neither,
an empty state says why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from cbi_platform.operations.validation import score_matured
from cbi_platform.settings import HORIZON_NAMES, HORIZONS

SERVED_SOURCE, WALK_FORWARD_SOURCE, NO_SOURCE = "served", "walk_forward", "none"
# (label, low column, high column, nominal share of outcomes inside)
ZONE_BANDS: tuple[tuple[str, str, str, float], ...] = (
    ("P30–P70", "p30", "p70", 0.40),
    ("P10–P90", "p10", "p90", 0.80),
)
ZONE_LEVELS = ("p10", "p30", "p50", "p70", "p90")
DEFAULT_LAST = 90  # hit rates over the last this many matured forecasts
DEFAULT_CHART = 260  # the chart draws at most this many past zones
METHOD = (
    f"A zone held when the realised price (the close on the target date, or the last close "
    f"before it) lay inside it. Hit rates count the last {DEFAULT_LAST} matured forecasts; the "
    "95% interval is the Wilson interval of the share on the effective sample size, the number "
    "of non-overlapping (origin, target date] windows among them: forecasts made every day for "
    "h trading days ahead share most of their outcome, so about n / h of them are independent."
)
LABELS = {
    SERVED_SOURCE: "Served forecasts whose target date has passed, with the price on that date.",
    WALK_FORWARD_SOURCE: (
        "No served forecast has reached its target date yet. Shown instead: the walk-forward "
        "test's past zones (forecasts the same method made afterwards on past data, never "
        "served to you), with the price on each target date."
    ),
    NO_SOURCE: (
        "No forecast has reached its target date yet, and no walk-forward zones were "
        "published: this chart fills in as forecasts mature."
    ),
}


@dataclass(frozen=True)
class HitRate:
    """How often one zone held on the last `n` matured forecasts of a horizon."""

    band: str  # e.g. "P30–P70"
    nominal: float  # the share a well-calibrated zone holds
    held: int
    n: int
    n_effective: int  # non-overlapping outcomes among the n
    share: float | None
    low: float | None  # 95% Wilson interval of the share on n_effective outcomes
    high: float | None
    sentence: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def hit_rate(
    rows: pl.DataFrame, horizon: str, band: str, lo: str, hi: str, nominal: float, walk: bool
) -> HitRate:
    """The hit rate of one zone on `rows` (one horizon; origin, target_date, actual, zones)."""
    rows = rows.filter(
        pl.col("actual").is_not_null() & pl.col(lo).is_not_null() & pl.col(hi).is_not_null()
    )
    n = rows.height
    who = "walk-forward" if walk else ""
    subject = f"The {who + ' ' if who else ''}{horizon} {band} range"
    calibrated = f"a well-calibrated {band} range holds {_pct(nominal)}"
    if n == 0:
        return HitRate(
            band, nominal, 0, 0, 0, None, None, None, f"{subject} has no matured outcome yet."
        )
    # Heavy (mapie, scikit-learn, scipy): delayed, so the API starts without them.
    from cbi_platform.ensemble.conformal import _independent_outcomes, coverage_interval

    held = rows.filter(pl.col("actual").is_between(pl.col(lo), pl.col(hi))).height
    n_eff = max(1, _independent_outcomes(rows["origin"].to_list(), rows["target_date"].to_list()))
    share = held / n
    low, high = coverage_interval(share, n_eff)
    outcomes = "independent outcome" if n_eff == 1 else "independent outcomes"
    times = "time" if n == 1 else "times"
    sentence = (
        f"{subject} held {held} of the last {n} {times} ({_pct(share)}; 95% interval "
        f"{_pct(low)}–{_pct(high)} from {n_eff} {outcomes}); {calibrated}."
    )
    return HitRate(band, nominal, held, n, n_eff, share, low, high, sentence)


def matured_served(history: pl.DataFrame, closes: pl.DataFrame, horizon: str) -> pl.DataFrame:
    """The matured served forecasts of `horizon`: origin, target_date, the zones, the realised
    price (`actual`) and the date of the close it came from, oldest first.

    `history`: the forecast history (served rows are kept); `closes`: (date, value)."""
    if history.height == 0 or closes.height == 0:
        return _empty()
    scored = score_matured(history.filter(pl.col("horizon") == horizon), closes)
    if scored.height == 0:
        return _empty()
    return (
        scored.select(
            pl.col("as_of").cast(pl.Date).alias("origin"),
            pl.col("target_date").cast(pl.Date),
            pl.col("actual_date").cast(pl.Date),
            pl.col("price").cast(pl.Float64),
            *[pl.col(c).cast(pl.Float64) for c in ZONE_LEVELS],
            pl.col("actual").cast(pl.Float64),
        )
        .filter(pl.col("p10").is_not_null())
        .sort("origin")
    )


def walk_forward_rows(zones: pl.DataFrame | None, horizon: str) -> pl.DataFrame:
    """The walk-forward's past zones of `horizon` that have an outcome, oldest first."""
    if zones is None or zones.height == 0:
        return _empty()
    if "horizon" in zones.columns:
        zones = zones.filter(pl.col("horizon") == horizon)
    return (
        zones.filter(pl.col("actual").is_not_null() & pl.col("p10").is_not_null())
        .select(
            pl.col("origin").cast(pl.Date),
            pl.col("target_date").cast(pl.Date),
            pl.col("target_date").cast(pl.Date).alias("actual_date"),
            pl.col("price").cast(pl.Float64),
            *[pl.col(c).cast(pl.Float64) for c in ZONE_LEVELS],
            pl.col("actual").cast(pl.Float64),
        )
        .sort("origin")
    )


def _empty() -> pl.DataFrame:
    schema = {"origin": pl.Date, "target_date": pl.Date, "actual_date": pl.Date}
    schema |= {"price": pl.Float64} | {c: pl.Float64 for c in ZONE_LEVELS}
    return pl.DataFrame(schema=schema | {"actual": pl.Float64})


def past_zones(
    horizon: str,
    served: pl.DataFrame,
    walk_forward: pl.DataFrame | None = None,
    *,
    last: int = DEFAULT_LAST,
    chart: int = DEFAULT_CHART,
) -> dict[str, Any]:
    """The payload of one horizon: the source, its label, the past zones for the chart and the
    hit rates in words. `served`: `matured_served(...)`; `walk_forward`: `walk_forward_rows(...)`
    (used only when nothing served has matured)."""
    if horizon not in HORIZONS:
        raise ValueError(f"unknown horizon {horizon!r}; one of {list(HORIZONS)}")
    if served.height:
        source, rows = SERVED_SOURCE, served
    elif walk_forward is not None and walk_forward.height:
        source, rows = WALK_FORWARD_SOURCE, walk_forward
    else:
        source, rows = NO_SOURCE, _empty()
    recent = rows.tail(last)
    walk = source == WALK_FORWARD_SOURCE
    rates = [
        hit_rate(recent, horizon, band, lo, hi, nominal, walk)
        for band, lo, hi, nominal in ZONE_BANDS
    ]
    drawn = rows.tail(chart)
    summary = _summary(horizon, source, drawn, rates)
    return {
        "horizon": horizon,
        "horizon_days": HORIZONS[horizon],
        "source": source,
        "label": LABELS[source],
        "n_matured": rows.height,
        "hit_rates": [r.as_dict() for r in rates],
        "summary": summary,
        "zones": drawn.to_dicts(),
    }


def _summary(horizon: str, source: str, drawn: pl.DataFrame, rates: list[HitRate]) -> str:
    """The chart's text alternative: what it draws, then the hit rates."""
    if source == NO_SOURCE:
        return f"No past {horizon} zones to draw yet. " + LABELS[NO_SOURCE]
    first: dt.date = drawn["target_date"].min()
    last: dt.date = drawn["target_date"].max()
    kind = "served" if source == SERVED_SOURCE else "walk-forward (never served)"
    inside = drawn.filter(pl.col("actual").is_between(pl.col("p10"), pl.col("p90"))).height
    return (
        f"Past {HORIZON_NAMES[horizon]} ({horizon}) {kind} target zones for {drawn.height} "
        f"target dates from {first} to {last}, with the realised price drawn through them: it "
        f"lay inside P10–P90 on {inside} of them. " + " ".join(r.sentence for r in rates)
    )
