"""The API's view of a platform home: published snapshots and files only, never a DuckDB
connection (see `cbi_platform.storage`), each held in memory until its file changes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import polars as pl

from cbi_platform.api import insight
from cbi_platform.api import keys as api_keys
from cbi_platform.api.cache import CachedFile
from cbi_platform.api.views import (
    NO_FORECASTS,
    ForecastView,
    NotPublished,
    backtest_json,
    health_json,
    health_payload,
    recommendation_json,
)
from cbi_platform.operations.condition_log import TABLE as CONDITIONS_TABLE
from cbi_platform.serving.store import TABLE as FORECAST_TABLE
from cbi_platform.settings import HORIZONS
from cbi_platform.storage import snapshot_path

FORECASTS_DB = "forecasts.duckdb"
OPERATIONS_DB = "operations.duckdb"


def _parquet(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


def _json_list(data: bytes) -> list[dict[str, Any]]:
    decoded = json.loads(data)  # Python's reader takes the NaN the writer may leave
    return decoded if isinstance(decoded, list) else [decoded]


class HomeReader:
    """Everything the API serves, read from `home`'s snapshots."""

    def __init__(self, home: Path, max_business_days_behind: int):
        self.home = Path(home)
        self.max_business_days_behind = max_business_days_behind
        self.procurement = self.home / "procurement"
        self.forecasts = CachedFile(
            snapshot_path(self.home / FORECASTS_DB, FORECAST_TABLE), ForecastView.from_parquet
        )
        # Imported here: procurement.live brings scipy, which the API needs nowhere else.
        from cbi_platform.procurement.live import TABLE as RECOMMENDATIONS_TABLE

        ops = self.home / OPERATIONS_DB
        self.recommendations = CachedFile(snapshot_path(ops, RECOMMENDATIONS_TABLE), _parquet)
        self.conditions = CachedFile(snapshot_path(ops, CONDITIONS_TABLE), _parquet)
        self.policy_record = CachedFile(self.procurement / "policy_record.json", _json_list)
        self.keys = CachedFile(api_keys.keys_path(self.home), api_keys.parse_keys)
        self._derived: dict[str, tuple[tuple[object, ...], bytes]] = {}
        self._insight_files()

    def view(self) -> ForecastView:
        """The forecast history's view; raises NotPublished when nothing was published."""
        view = self.forecasts.get()
        if view is None:
            raise NotPublished(NO_FORECASTS)
        view.require()
        return view

    def _memo(self, name: str, sources: tuple[object, ...], build) -> bytes:
        """`build()` once per combination of source versions: the memo holds the source objects
        themselves and compares them by identity (a new file version is a new object)."""
        cached = self._derived.get(name)
        if (
            cached is not None
            and len(cached[0]) == len(sources)
            and all(a is b for a, b in zip(cached[0], sources, strict=True))
        ):
            return cached[1]
        value = build()
        self._derived[name] = (sources, value)
        return value

    def recommendation(self) -> bytes:
        log = self.recommendations.get()
        return self._memo("recommendation", (log,), lambda: recommendation_json(log))

    def backtest(self) -> bytes:
        records, log = self.policy_record.get(), self.recommendations.get()
        policy = None
        if log is not None and log.height:
            policy = log.sort("as_of", "logged_at")["policy"][-1]
        return self._memo(
            "backtest", (records, log), lambda: backtest_json(records, policy, self.procurement)
        )

    def health(self) -> bytes:
        view, conditions = self.forecasts.get(), self.conditions.get()
        return self._memo(
            "health",
            (view, conditions),
            lambda: health_json(view, conditions, self.max_business_days_behind),
        )

    # ---- the buyer's insight (cbi_platform.api.insight) ----------------------------------

    def _insight_files(self) -> None:
        from cbi_platform.operations.market_state import market_state_path, news_state_path
        from cbi_platform.serving.walk_forward_zones import parse_walk_forward_zones, zones_path

        self.market_state = CachedFile(market_state_path(self.home), json.loads)
        self.news_state = CachedFile(news_state_path(self.home), json.loads)
        self.walk_forward = {
            h: CachedFile(zones_path(self.home, h), parse_walk_forward_zones) for h in HORIZONS
        }
        self._news_configured: tuple[str, ...] | None = None

    def _health(self, view, conditions) -> dict[str, Any]:
        return health_payload(view, conditions, self.max_business_days_behind)

    def news_configured(self) -> tuple[str, ...]:
        """The horizons whose features use news (sentiment.yaml), read once."""
        if self._news_configured is None:
            from cbi_platform.sentiment.config import load_sentiment_settings

            self._news_configured = load_sentiment_settings().enabled_horizons
        return self._news_configured

    def calibration(self, horizon: str) -> bytes:
        view, walk = self.forecasts.get(), self.walk_forward[horizon].get()
        return self._memo(
            f"calibration/{horizon}",
            (view, walk),
            lambda: insight.calibration_json(view, walk, horizon),
        )

    def notices(self) -> bytes:
        view, conditions = self.forecasts.get(), self.conditions.get()
        return self._memo(
            "notices",
            (view, conditions),
            lambda: insight.notices_json(view, self._health(view, conditions)),
        )

    def intelligence(self) -> bytes:
        view, conditions = self.forecasts.get(), self.conditions.get()
        state, news = self.market_state.get(), self.news_state.get()
        published = self.news_state.path.exists()
        return self._memo(
            "intelligence",
            (view, conditions, state, news, published),
            lambda: insight.intelligence_json(
                view,
                self._health(view, conditions),
                state,
                news,
                published,
                self.news_configured(),
            ),
        )
