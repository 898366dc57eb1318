"""Synthetic prices and decision_forecasts frames for the procurement tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from scipy import stats

from cbi_platform.procurement.contract import DECISION_SCHEMA
from cbi_platform_tests.conftest import _business_days as trading_days  # noqa: F401

HORIZON_DAYS = {"1w": 5, "1m": 21, "3m": 63}
ZONE_Z = {"p10": -1.2816, "p30": -0.5244, "p50": 0.0, "p70": 0.5244, "p90": 1.2816}
KNOT_Z = np.linspace(-3.0, 3.0, 13)
REGIMES = ("normal", "bull", "bear", "crisis")


def make_prices(
    n: int = 1200, seed: int = 7, start: float = 45.0, vol: float = 0.015
) -> pl.DataFrame:
    """A driftless log random walk of closes on business days."""
    rng = np.random.default_rng(seed)
    closes = start * np.exp(np.cumsum(vol * rng.standard_normal(n)))
    return pl.DataFrame({"date": trading_days(dt.date(2015, 1, 5), n), "price": closes})


def _frame(columns: dict) -> pl.DataFrame:
    return pl.DataFrame(columns, schema=DECISION_SCHEMA)


def forecast_frame(
    prices: pl.DataFrame,
    kind: str = "random_walk",
    horizons: dict[str, int] | None = None,
    vol: float = 0.015,
    scored_from: int | None = None,
    regime_block: int = 150,
    with_cdf: bool = True,
) -> pl.DataFrame:
    """decision_forecasts rows for every day and horizon.

    kind: random_walk (honest: forecast = today's close, normal zones and CDF), leak_lying
    (forecast = the realised close h days later, tight zones, known_at = date: a lie), or
    leak_stamped (the same values honestly stamped known_at = the target day). Rows whose
    target lies past the last close are dropped for the leaks. Days from index `scored_from`
    on are labelled scored, earlier ones development.
    """
    horizons = horizons or HORIZON_DAYS
    dates = np.array(prices["date"].to_list())
    closes = prices["price"].to_numpy()
    n = len(dates)
    knot_prob = list(stats.norm.cdf(KNOT_Z))
    parts = []
    for hz, h in horizons.items():
        if kind == "random_walk":
            idx = np.arange(n)
            centre, sd, known = np.zeros(n), np.full(n, vol * np.sqrt(h)), dates
        else:
            idx = np.arange(max(n - h, 0))
            centre = np.log(closes[idx + h] / closes[idx])
            sd = np.full(idx.size, 1e-4)
            known = dates[idx] if kind == "leak_lying" else dates[idx + h]
        price = closes[idx]
        cols = {
            "date": list(dates[idx]),
            "known_at": list(known),
            "horizon": [hz] * idx.size,
            "horizon_days": [h] * idx.size,
            "price": price,
            "forecast": price * np.exp(centre),
            **{c: price * np.exp(centre + z * sd) for c, z in ZONE_Z.items()},
            "cdf_logret": [list(c + KNOT_Z * s) for c, s in zip(centre, sd, strict=True)]
            if with_cdf
            else [None] * idx.size,
            "cdf_prob": [knot_prob] * idx.size if with_cdf else [None] * idx.size,
            "prob_up": stats.norm.sf(-centre / sd),
            "regime": [REGIMES[(i // regime_block) % len(REGIMES)] for i in idx],
            "state_origin": list(dates[idx]),
            "window": [
                "scored" if scored_from is not None and i >= scored_from else "development"
                for i in idx
            ],
        }
        parts.append(_frame(cols))
    return pl.concat(parts)


def splice(dev: pl.DataFrame, scored: pl.DataFrame, boundary: dt.date) -> pl.DataFrame:
    """Rows dated before `boundary` from `dev`, the rest from `scored` (labelled scored)."""
    return pl.concat(
        [
            dev.filter(pl.col("date") < boundary).with_columns(window=pl.lit("development")),
            scored.filter(pl.col("date") >= boundary).with_columns(window=pl.lit("scored")),
        ]
    )


@pytest.fixture(scope="session")
def prices() -> pl.DataFrame:
    return make_prices()


@pytest.fixture(scope="session")
def rw_forecasts(prices) -> pl.DataFrame:
    return forecast_frame(prices, "random_walk")


@pytest.fixture(scope="session")
def lying_forecasts(prices) -> pl.DataFrame:
    return forecast_frame(prices, "leak_lying")


@pytest.fixture(scope="session")
def stamped_forecasts(prices) -> pl.DataFrame:
    return forecast_frame(prices, "leak_stamped")


def dist_row(
    price: float,
    level: float,
    sd: float,
    h: int,
    horizon: str | None = None,
    day: dt.date = dt.date(2020, 6, 1),
    with_cdf: bool = True,
    with_zones: bool = True,
) -> dict:
    """One decision_forecasts row: a log-normal distribution centred on `level` (c/lb)."""
    centre = float(np.log(level / price))
    row = {
        "date": day,
        "known_at": day,
        "horizon": horizon or f"{h}d",
        "horizon_days": h,
        "price": price,
        "forecast": level,
        "cdf_logret": tuple(centre + KNOT_Z * sd) if with_cdf else None,
        "cdf_prob": tuple(stats.norm.cdf(KNOT_Z)) if with_cdf else None,
        "prob_up": float(stats.norm.sf(-centre / sd)),
        "regime": "normal",
        "state_origin": day,
        "window": "scored",
    }
    for c, z in ZONE_Z.items():
        row[c] = price * np.exp(centre + z * sd) if with_zones else None
    return row


def make_context(
    price: float = 45.0,
    forecasts: dict | None = None,
    closes: np.ndarray | None = None,
    remaining_lb: float | None = None,
    days_left: int = 21,
    programme=None,
    day: dt.date = dt.date(2020, 6, 1),
):
    from cbi_platform.procurement.policies import DecisionContext
    from cbi_platform.procurement.programme import Programme

    programme = programme or Programme()
    closes = np.append(np.full(30, price), price) if closes is None else np.asarray(closes, float)
    return DecisionContext(
        day=day,
        price=float(closes[-1]),
        closes=closes,
        forecasts=forecasts or {},
        remaining_lb=programme.total_lb if remaining_lb is None else remaining_lb,
        total_lb=programme.total_lb,
        days_left=days_left,
        window_end=day + dt.timedelta(days=days_left * 7 // 5),
        programme=programme,
    )
