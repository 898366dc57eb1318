"""The jobs and `cbi run`'s stages select by groups and the graph; these are the exact assets and
checks each one runs (copied from the hand-kept lists they replaced), so nothing moves unseen.

A new asset or check changes a set here on purpose: add its key where it belongs.
"""

import dagster as dg
import pytest

from cbi_platform.defs.partitions import HORIZON_KEYS
from cbi_platform.defs.pipeline import ALL_ASSETS, JOBS, NEWS
from cbi_platform.defs.sentiment.assets import SENTIMENT_IN_FEATURES
from cbi_platform.runner import plan_stages

MARKET = {"raw_market_prices", "news_articles", "market_prices"}
# News scoring runs only when sentiment.yaml puts news in some horizon's features.
NEWS_KEYS = {"news_sentiment"} if SENTIMENT_IN_FEATURES else set()
SHARED = (
    MARKET
    | NEWS_KEYS
    | {
        "regime_calendar",
        "detected_regimes",
        "volatility_forecasts",
        "neural_volatility",
    }
)
RANGE = {"features", "regime_datasets", "oof_statistical"}
MEMBERS = RANGE | {
    "oof_benchmarks",
    "oof_trees",
    "shap_trees",
    "oof_neural",
    "shap_neural",
    "oof_specialists",
    "shap_specialists",
    "oof_predictions",
    "oof_shap",
}
FORECAST = {
    "ensemble_predictions",
    "ensemble_weights",
    "target_zones",
    "model_leaderboard",
    "registered_version",
    "forecasts",
}
DECISION = {"decision_forecasts"}
BACKTEST = {"procurement_backtest", "procurement_policy_record"}
OPERATIONS = {
    "live_features",
    "live_forecasts",
    "forecast_validation",
    "drift_metrics",
    "correlation_monitor",
    "shadow_comparison",
}
REFRESH = MARKET | NEWS_KEYS | OPERATIONS | {"procurement_recommendation"}

MARKET_CHECKS = {
    f"market_prices:market_prices_{name}"
    for name in (
        "schema",
        "duplicate_dates",
        "target_positive",
        "driver_positive",
        "gaps",
        "staleness",
        "return_outliers",
    )
}
REGIME_CHECKS = {"detected_regimes:detected_regimes_truncation"}
FEATURE_CHECKS = {
    f"features:features_{name}"
    for name in (
        "contract",
        "leakage_asof",
        "leakage_forward_shift",
        "leakage_target_correlation",
        "leakage_truncation",
    )
}
MODEL_CHECKS = {"oof_predictions:oof_predictions_monotone"}
ENSEMBLE_CHECKS = {"target_zones:target_zones_sanity"}  # WARN: the live band's width
# The operating monitors: in the daily loop and the jobs, not in `cbi run`'s training stages.
MONITOR_CHECKS = {
    "market_prices:market_prices_fresh",
    "correlation_monitor:correlation_break",
    "live_features:live_features_leakage",
}
# Declared on the procurement assets themselves (check_specs): they run with their asset.
DECISION_CHECKS = {"decision_forecasts:decision_forecasts_point_in_time"}
BACKTEST_CHECKS = {"procurement_backtest:procurement_no_lookahead"}
SHARED_CHECKS = MARKET_CHECKS | REGIME_CHECKS
HORIZON_CHECKS = FEATURE_CHECKS | MODEL_CHECKS | ENSEMBLE_CHECKS
REFRESH_CHECKS = MARKET_CHECKS | MONITOR_CHECKS


@pytest.fixture(scope="module")
def graph():
    from cbi_platform.definitions import defs

    return defs.resolve_asset_graph()


def _resolved(selection: dg.AssetSelection, graph) -> tuple[set[str], set[str]]:
    assets = {k.to_user_string() for k in selection.resolve(graph)}
    checks = {f"{k.asset_key.to_user_string()}:{k.name}" for k in selection.resolve_checks(graph)}
    return assets, checks


def test_each_job_selects_exactly_its_assets_and_checks(graph):
    expected = {
        "market_data_job": (SHARED, SHARED_CHECKS | {"market_prices:market_prices_fresh"}),
        "horizon_job": (MEMBERS | FORECAST, HORIZON_CHECKS),
        "retrain_job": (
            SHARED | MEMBERS | FORECAST,
            SHARED_CHECKS | HORIZON_CHECKS | {"market_prices:market_prices_fresh"},
        ),
        "daily_refresh_job": (REFRESH, REFRESH_CHECKS),
    }
    assert {job.name: _resolved(job.selection, graph) for job in JOBS} == expected


def test_make_run_stages_run_in_order_with_exactly_their_assets_and_checks(graph):
    # `make run`: every horizon (one range run first), procurement on two, then the refresh.
    stages = plan_stages(list(HORIZON_KEYS), ["1m", "3m"], refresh=True)
    members_after_range = (MEMBERS - RANGE, MODEL_CHECKS)
    expected = [
        ("market data", None, (SHARED, SHARED_CHECKS)),
        ("features + statistical members, 1w..12m", None, (RANGE, FEATURE_CHECKS)),
        *[(f"members {h}", h, members_after_range) for h in HORIZON_KEYS],
        *[(f"ensemble + forecasts {h}", h, (FORECAST, ENSEMBLE_CHECKS)) for h in HORIZON_KEYS],
        ("decision forecasts 1m", "1m", (DECISION, DECISION_CHECKS)),
        ("decision forecasts 3m", "3m", (DECISION, DECISION_CHECKS)),
        ("procurement backtest", None, (BACKTEST, BACKTEST_CHECKS)),
        ("daily refresh (served versions, monitors)", None, (REFRESH, REFRESH_CHECKS)),
    ]
    got = [(s.label, s.partition, _resolved(s.selection, graph)) for s in stages]
    assert got == expected
    assert stages[1].tags == {
        "dagster/asset_partition_range_start": "1w",
        "dagster/asset_partition_range_end": "12m",
    }


def test_one_horizon_runs_its_whole_member_stage_without_a_range_run(graph):
    stages = plan_stages(["3m"])
    got = [(s.label, s.partition, _resolved(s.selection, graph)) for s in stages]
    assert got == [
        ("market data", None, (SHARED, SHARED_CHECKS)),
        ("members 3m", "3m", (MEMBERS, FEATURE_CHECKS | MODEL_CHECKS)),
        ("ensemble + forecasts 3m", "3m", (FORECAST, ENSEMBLE_CHECKS)),
    ]


def test_news_scoring_joins_the_runs_exactly_when_the_features_read_it(graph):
    assets, _ = _resolved(NEWS, graph)
    assert assets == NEWS_KEYS


def test_a_new_asset_in_a_stage_group_joins_that_stage_without_a_list_edit():
    from cbi_platform.defs.pipeline import FORECAST_STAGE, MEMBER_STAGE, SHARED

    @dg.asset(group_name="forecasts", deps=["forecasts"])
    def forecast_note() -> None: ...

    assets = [*ALL_ASSETS, forecast_note]
    assert dg.AssetKey("forecast_note") in FORECAST_STAGE.resolve(assets)
    assert dg.AssetKey("forecast_note") not in (MEMBER_STAGE | SHARED).resolve(assets)
