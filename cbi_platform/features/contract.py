"""The feature-frame contract shared by feature building, leakage gates and models.

One row per trading date of the target. Feature columns start with `f_` and use only data
published by `date`. Target columns start with `target_` and are never features.
"""

from __future__ import annotations

import polars as pl

# Re-exported: the horizons are defined once, in `cbi_platform.settings`.
from cbi_platform.settings import HORIZON_KEYS as HORIZON_KEYS
from cbi_platform.settings import HORIZONS as HORIZONS
from cbi_platform.settings import Horizon as Horizon
from cbi_platform.settings import horizon_days as horizon_days

FEATURE_PREFIX = "f_"
DATE = "date"  # the origin: a trading date of the target
HORIZON = "horizon"  # partition key, e.g. "1m"
HORIZON_DAYS = "horizon_days"  # trading days ahead, e.g. 21
PRICE = "price"  # target close at `date` (known at the origin; the random walk's forecast)
TARGET_DATE = "target_date"  # trading date h days after `date` (null when beyond the data)
TARGET_PRICE = "target_price"  # target close at target_date
TARGET_LOGRET = "target_logret"  # log(target_price / price)
META_COLUMNS = (DATE, HORIZON, HORIZON_DAYS, PRICE, TARGET_DATE, TARGET_PRICE, TARGET_LOGRET)


def feature_columns(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(FEATURE_PREFIX)]


def horizon_frame(frame: pl.DataFrame, horizon: str) -> pl.DataFrame:
    """One horizon's rows of a features table, without the feature columns it does not have.

    Horizons may carry different features (e.g. news sentiment only where walk-forward showed
    it helps); the warehouse keeps one table, so another horizon's columns are null in these
    rows. A feature column that is null in every row of this horizon is not one of its
    features, and is dropped here before any model or gate sees it."""
    rows = frame.filter(pl.col(HORIZON) == horizon)
    if rows.height == 0:
        return rows
    empty = [c for c in feature_columns(rows) if rows[c].null_count() == rows.height]
    return rows.drop(empty)
