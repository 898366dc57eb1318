"""Seeded synthetic `market_prices` tables: correlated random walks with real-looking quirks.

Daily series on business days (PALM and WTI miss some days: other holidays), weekly COT dated
Tuesday and published the Monday after (usable from the trading day after Friday's release),
monthly series published ~45 days after the month they describe.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_platform.market.schema import conform_prices

DAILY = {  # symbol: (start level, daily vol, loading on the common factor, unit)
    "ZL": (40.0, 0.015, 0.6, "USc/lb"),
    "ZS": (1000.0, 0.013, 0.6, "USc/bu"),
    "ZM": (320.0, 0.015, 0.5, "USD/st"),
    "PALM": (800.0, 0.016, 0.5, "USD/t"),
    "WTI": (60.0, 0.022, 0.3, "USD/bbl"),
    "BRENT": (64.0, 0.020, 0.3, "USD/bbl"),
    "DXY": (95.0, 0.004, -0.2, "index"),
    "USDBRL": (4.0, 0.009, -0.2, "BRL/USD"),
    "RIN_D4": (1.0, 0.025, 0.2, "USD/RIN"),
}
MONTHLY = {"PALM_M": (780.0, 0.06), "ZL_M": (880.0, 0.05)}
ALL_SYMBOLS = (*DAILY, "COT_ZL", *MONTHLY)


def business_days(start: dt.date, n: int) -> list[dt.date]:
    days, day = [], start
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def _roll_to_weekday(day: dt.date) -> dt.date:
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def make_prices(
    n_days: int = 1500,
    *,
    seed: int = 0,
    start: dt.date = dt.date(2015, 1, 5),
    symbols: tuple[str, ...] = ALL_SYMBOLS,
    negative_wti_on: int | None = None,
) -> pl.DataFrame:
    """A long, canonical price table; `negative_wti_on` plants a -36.98 WTI print at that row."""
    rng = np.random.default_rng(seed)
    days = business_days(start, n_days)
    factor = rng.standard_normal(n_days)
    frames: list[pl.DataFrame] = []
    for symbol, (level, vol, beta, unit) in DAILY.items():
        shocks = beta * factor + np.sqrt(1.0 - beta**2) * rng.standard_normal(n_days)
        values = level * np.exp(np.cumsum(vol * shocks))
        keep = np.ones(n_days, dtype=bool)
        if symbol in ("PALM", "WTI"):
            keep[1:] = rng.random(n_days - 1) > 0.03  # other exchanges, other holidays
        if symbol == "WTI" and negative_wti_on is not None:
            values[negative_wti_on] = -36.98
            values[negative_wti_on + 1] = 10.01
            keep[negative_wti_on : negative_wti_on + 2] = True
        if symbol not in symbols:
            continue
        dates = [d for d, k in zip(days, keep, strict=True) if k]
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "date": dates,
                    "value": values[keep],
                    "unit": unit,
                    "source": "synthetic",
                    "published_at": dates,
                }
            )
        )
    if "COT_ZL" in symbols:
        tuesdays = [d for d in days if d.weekday() == 1]
        net = np.empty(len(tuesdays))
        net[0] = 10.0
        for i in range(1, len(tuesdays)):
            net[i] = np.clip(0.9 * net[i - 1] + 3.0 * rng.standard_normal(), -60.0, 60.0)
        frames.append(
            pl.DataFrame(
                {
                    "symbol": "COT_ZL",
                    "date": tuesdays,
                    "value": net,
                    "unit": "% OI",
                    "source": "synthetic",
                    # released Friday afternoon, usable from the next trading day (Monday)
                    "published_at": [d + dt.timedelta(days=6) for d in tuesdays],
                }
            )
        )
    months = sorted({d.replace(day=1) for d in days})
    for symbol, (level, vol) in MONTHLY.items():
        if symbol not in symbols:
            continue
        values = level * np.exp(np.cumsum(vol * rng.standard_normal(len(months))))
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "date": months,
                    "value": values,
                    "unit": "USD/t",
                    "source": "synthetic",
                    "published_at": [_roll_to_weekday(m + dt.timedelta(days=45)) for m in months],
                }
            )
        )
    return conform_prices(pl.concat(frames))


@pytest.fixture(scope="session")
def prices() -> pl.DataFrame:
    return make_prices()
