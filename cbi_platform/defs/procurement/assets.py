"""Procurement assets: the daily decision forecasts per horizon (what the platform would have
served each day), the policy backtest over buying windows, today's recommendation with the
decision-quality monitor. Thin wrappers around `cbi_platform.procurement`."""

import datetime as dt
import json
import time

import dagster as dg
import polars as pl

from cbi_platform.defs.ensemble.assets import horizon_context
from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import (
    ForecastStoreResource,
    MarketSourceResource,
    OperationsResource,
    PlatformHome,
    ProtocolResource,
)
from cbi_platform.procurement import backtest as bt
from cbi_platform.procurement import live
from cbi_platform.procurement.contract import validate_decision_forecasts
from cbi_platform.procurement.decision_series import build_decision_series, skill_alarm
from cbi_platform.procurement.programme import load_config
from cbi_platform.procurement.report import (
    backtest_report,
    cumulative_savings_plot,
    policy_table,
    recommendation_text,
)
from cbi_platform.reporting import markdown_table

GROUP = "procurement"


def closes(target_prices: pl.DataFrame) -> pl.DataFrame:
    """The target's closes as (date, price), what the procurement policies read."""
    return target_prices.select("date", price="value").sort("date")


@dg.asset(
    group_name=GROUP,
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    metadata=PARTITION_EXPR,
    kinds={"polars", "duckdb"},
    description="One forecast per trading day (from the first origin of procurement.yaml's "
    "`series_from` window): the version the platform would have served that day — the "
    "walk-forward state at the latest origin, members as the walk-forward fitted them, fed that "
    "day's features — with zones and P(up); known_at = date. Blocking check: point in time and "
    "a too-good-to-be-true skill alarm.",
    check_specs=[
        dg.AssetCheckSpec(
            "decision_forecasts_point_in_time",
            asset="decision_forecasts",
            blocking=True,
            description="No row usable before its date or made by a later state; forecasts "
            "not suspiciously better than the random walk (< 0.5x its error: a look-ahead).",
        )
    ],
)
def decision_forecasts(
    context: dg.AssetExecutionContext,
    features: pl.DataFrame,
    oof_predictions: pl.DataFrame,
    ensemble_predictions: pl.DataFrame,
    ensemble_weights: pl.DataFrame,
    target_zones: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    volatility_forecasts: pl.DataFrame,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    protocol: ProtocolResource,
):
    cfg = protocol.config()
    settings = load_config().pipeline
    parts, summary = [], []
    for horizon in context.partition_keys:
        started = time.perf_counter()
        ctx, _ = horizon_context(horizon, detected_regimes, volatility_forecasts)
        series, stats = build_decision_series(
            features,
            oof_predictions,
            ensemble_predictions,
            ensemble_weights,
            target_zones,
            detected_regimes,
            ctx,
            horizon,
            cfg,
            start_window=settings.series_from,
            specs=protocol.specs(horizon),
            progress=context.log.info,
        )
        seconds = time.perf_counter() - started
        context.log.info(
            f"{horizon}: {stats.days} daily forecasts from {stats.states} walk-forward states "
            f"({stats.random_walk_states} random walk, {stats.fitted_states} with members; "
            f"{stats.member_fits} member fits) in {seconds:.1f}s"
        )
        parts.append(series)
        summary.append(
            {
                "horizon": horizon,
                "days": stats.days,
                "first": str(series["date"].min()) if series.height else None,
                "last": str(series["date"].max()) if series.height else None,
                "states": stats.states,
                "random_walk_states": stats.random_walk_states,
                "states_with_members": stats.fitted_states,
                "member_fits": stats.member_fits,
                "seconds": round(seconds, 1),
            }
        )
    out = pl.concat(parts, how="vertical_relaxed")
    problems = []
    try:
        validate_decision_forecasts(out)
    except (ValueError, AssertionError) as exc:
        problems.append(str(exc))
    alarm = skill_alarm(out, closes(market_source.target_prices(market_prices)))
    if not alarm.passed:
        problems.append(alarm.summary)
    yield dg.Output(
        out,
        metadata={"dagster/row_count": out.height, "series": dg.MetadataValue.json(summary)},
    )
    yield dg.AssetCheckResult(
        check_name="decision_forecasts_point_in_time",
        asset_key="decision_forecasts",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or f"point in time; {alarm.summary}",
        metadata={"skill": dg.MetadataValue.json(alarm.evidence)},
    )


@dg.multi_asset(
    group_name=GROUP,
    ins={"decision_forecasts": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
    outs={
        "procurement_backtest": dg.AssetOut(
            description="Every policy of procurement.yaml through every buying window of the "
            "decision-forecast span, day by day with only what was known each day: effective "
            "cost, savings vs even buying, the perfect-foresight bound (unattainable).",
            kinds={"polars", "duckdb"},
        ),
        "procurement_policy_record": dg.AssetOut(
            description="Per policy: mean savings vs even with a block-bootstrap interval and "
            "Newey-West p-value, share of windows better, worst window.",
            kinds={"polars", "duckdb"},
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "procurement_no_lookahead",
            asset="procurement_backtest",
            blocking=True,
            description="Too good to be true: no policy keeps > 50% of perfect foresight's "
            "savings, and no horizon's forecasts beat the random walk by 2x (procurement.yaml).",
        )
    ],
)
def procurement_backtest(
    context: dg.AssetExecutionContext,
    decision_forecasts: pl.DataFrame,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    home: PlatformHome,
):
    config = load_config()
    settings = config.backtest
    prices = closes(market_source.target_prices(market_prices))
    usable = decision_forecasts.filter(pl.col("horizon").is_in(list(config.pipeline.horizons)))
    if usable.height == 0:
        raise ValueError(
            "procurement_backtest: no decision forecasts for the horizons "
            f"{list(config.pipeline.horizons)}; materialize decision_forecasts for them first"
        )
    start = usable["date"].min()
    windows = bt.default_windows(prices, config.programme, settings, start=start)
    started = time.perf_counter()
    result = bt.run_backtest(
        usable, prices, config.programme, config.policies, windows, keep_reasons=False
    )
    stats, alarm = bt.judge(result, settings)
    context.log.info(
        f"backtest: {len(windows)} windows x {len(result.policies)} policies from {start} in "
        f"{time.perf_counter() - started:.1f}s"
    )
    folder = home.folder("procurement")
    plot = folder / "cumulative_savings.png"
    plot.write_bytes(cumulative_savings_plot(result))
    report = backtest_report(result, stats, alarm, include_plot=False)
    (folder / "backtest.md").write_text(report)
    record = stats.with_columns(
        pl.col(pl.Date).cast(pl.Utf8), computed_at=pl.lit(dt.datetime.now().isoformat())
    )
    (folder / "policy_record.json").write_text(json.dumps(record.to_dicts(), default=str))
    yield dg.Output(
        result.windows,
        output_name="procurement_backtest",
        metadata={
            "dagster/row_count": result.windows.height,
            "windows": len(windows),
            "first_window": str(windows[0].first) if windows else None,
            "report": dg.MetadataValue.md(report),
            "plot": dg.MetadataValue.path(str(plot)),
        },
    )
    yield dg.Output(
        stats,
        output_name="procurement_policy_record",
        metadata={"record": dg.MetadataValue.md(policy_table(stats, bt.bound_statistics(result)))},
    )
    yield dg.AssetCheckResult(
        check_name="procurement_no_lookahead",
        asset_key="procurement_backtest",
        passed=not alarm.firing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=alarm.message,
    )


@dg.asset(
    group_name=GROUP,
    kinds={"polars", "duckdb"},
    # Reads the forecasts the refresh just served, and the policy record the backtest left under
    # the home (a file, not an input: a home without a backtest still gets a recommendation).
    deps=[dg.AssetKey("live_forecasts"), dg.AssetKey("procurement_policy_record")],
    description="Today's buy / wait / split for this month's window from the served forecasts, "
    "with its reason and the policy's backtested record; logged, and the decision-quality "
    "monitor (recommended schedules vs even buying over completed windows) judged.",
)
def procurement_recommendation(
    context: dg.AssetExecutionContext,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    forecast_store: ForecastStoreResource,
    operations: OperationsResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    config = load_config()
    prices = closes(market_source.target_prices(market_prices))
    latest = forecast_store.store().latest()
    served = live.served_decision_rows(
        latest.filter(pl.col("horizon").is_in(list(config.pipeline.horizons)))
    )
    if served.height == 0:
        raise ValueError(
            "procurement_recommendation: no served forecasts in the forecast history for "
            f"{list(config.pipeline.horizons)}; materialize `forecasts` or run the daily refresh"
        )
    day = min(served["date"].max(), prices["date"].max())
    log = live.RecommendationLog(operations.database, sink=operations.results_sink())
    start, _ = live.month_window(day)
    bought = live.bought_in_window(log.frame(), config.pipeline.recommend, start, day)
    decision, info = live.recommend(config, served, prices, day, bought)
    record = live.policy_record(home.folder("procurement"), config.pipeline.recommend)
    text = recommendation_text(decision, config.pipeline.recommend, record, day)
    context_words = live.forecast_context(served)
    if context_words:
        text = f"{text} {context_words}"
    versions = {r["horizon"]: r["model_version"] for r in latest.iter_rows(named=True)}
    row = {**info, "record": record, "text": text, "forecast_versions": versions}
    inserted = log.append(row)
    condition, costs = live.quality_condition(
        log.frame(), prices, config, day, link=operations.run_link(context.run.run_id)
    )
    operations.conditions().record([condition], context.run.run_id)
    context.log.info(text)
    out = pl.DataFrame([{k: v for k, v in row.items() if k not in ("record", "forecast_versions")}])
    return dg.Output(
        out,
        metadata={
            "recommendation": dg.MetadataValue.md(text),
            "logged": inserted,
            "decision_quality": dg.MetadataValue.json(
                {k: v for k, v in condition.evidence.items() if k != "windows"}
            ),
            "completed_windows": dg.MetadataValue.md(
                markdown_table(costs) if costs.height else "none yet"
            ),
        },
    )


PROCUREMENT_ASSETS = [decision_forecasts, procurement_backtest, procurement_recommendation]
