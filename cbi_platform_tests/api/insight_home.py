"""A home for the insight tests (issue 22 §3, §4, §7): the API tests' home (`build_home`) plus
what the producing assets publish, written by their own functions: the market state from the
simulator's market up to the home's last day, the news state, and the walk-forward's past zones
of the 12m horizon (which has no matured served forecast in that home)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import polars as pl

from cbi_platform.conditions import Condition
from cbi_platform.market.simulator import SimulatorConfig, simulate_market
from cbi_platform.operations.condition_log import ConditionLog
from cbi_platform.operations.correlation import monitor_correlations
from cbi_platform.operations.market_state import (
    market_state,
    news_state,
    publish_market_state,
    publish_news_state,
)
from cbi_platform.serving.walk_forward_zones import publish_walk_forward_zones
from cbi_platform_tests.api.conftest import ZONE_Z, Home, build_home
from cbi_platform_tests.conftest import _business_days

# The simulator's seed whose detected regime on the home's last day is "bull", the regime of the
# hand-made forecast rows (`forecast_row`), so the card's regime and the chip agree.
MARKET_SEED = 8
WALK_FORWARD_ORIGINS = 60
WALK_FORWARD_HELD_P30_P70 = 20  # one in three walk-forward outcomes sits near P50


def walk_forward_zones(horizon: str = "12m") -> pl.DataFrame:
    """The `target_zones` shape (model, role, origin, target_date, zones, actual): 60 ensemble
    origins 5 business days apart: 20 outcomes inside P30-P70, 20 more inside P10-P90."""
    days = _business_days(dt.date(2019, 1, 7), WALK_FORWARD_ORIGINS * 5 + 260)
    rows = []
    for i in range(WALK_FORWARD_ORIGINS):
        price = 40.0 + 2.0 * math.sin(i / 9)
        zones = {z: price * (1 + 0.1 * q) for z, q in ZONE_Z.items()}
        # Every third outcome near P50, the next between P70 and P90, the next below P10.
        actual = price * (1.0 + (0.02 * math.sin(i), 0.09, -0.15)[i % 3])
        origin = days[i * 5]
        rows.append(
            {
                "horizon": horizon,
                "model": "ensemble",
                "role": "scored",
                "origin": origin,
                "target_date": days[i * 5 + 252],
                "price": price,
                "actual": actual,
                **zones,
            }
        )
    return pl.DataFrame(rows)


def build_insight_home(path: Path, *, stale: bool = False) -> Home:
    home = build_home(path)
    prices = simulate_market(SimulatorConfig(seed=MARKET_SEED, end=home.last_day)).prices
    results = monitor_correlations(prices, "ZL", as_of=home.last_day)
    publish_market_state(home.path, market_state(prices, "ZL", home.last_day, results))
    days = home.days
    daily = pl.DataFrame(
        {
            "date": days,
            "published_at": days,
            "f_news_sent_mean": [0.02 * ((i % 7) - 3) for i in range(len(days))],
            "f_news_sent_disp": [0.1] * len(days),
            "f_news_count": [5 + i % 4 for i in range(len(days))],
            "f_news_sent_surprise": [0.01] * len(days),
        }
    )
    publish_news_state(home.path, news_state(daily, scorer="vader"))
    publish_walk_forward_zones(home.path, "12m", walk_forward_zones())
    if stale:
        ConditionLog(home.path / "operations.duckdb").record(
            [
                Condition(
                    key="stale_data/target",
                    kind="stale_data",
                    firing=True,
                    title="the target's feed did not move",
                    as_of=home.last_day + dt.timedelta(days=3),
                    evidence={"behind": 3},
                )
            ],
            run_id="test-run",
        )
    return home
