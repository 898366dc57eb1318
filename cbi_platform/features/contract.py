"""The feature-frame contract shared by feature building, leakage gates and models.

One row per trading date of the target. Feature columns start with `f_` and use only data
published by `date`. Target columns start with `target_` and are never features.
"""

from __future__ import annotations

import polars as pl

from cbi_platform.settings import HORIZONS as HORIZONS  # re-exported: one source of truth

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
