"""Operations assets: the daily refresh and the monitors that watch it.

Thin wrappers around `cbi_platform.operations.daily`. Each monitor records its conditions in
the condition log; the alert and retraining sensors act on them.
"""

import dagster as dg
import polars as pl

from cbi_platform.defs.resources import (
    ForecastStoreResource,
    MarketSourceResource,
    MlflowResource,
    OperationsResource,
    PlatformHome,
)
from cbi_platform.defs.sentiment.assets import SENTIMENT_SETTINGS, news_input
from cbi_platform.operations import daily, drift
from cbi_platform.operations.market_state import market_state, publish_market_state
from cbi_platform.operations.validation import validation_plot
from cbi_platform.release.reproduction import served_reference_predictions
from cbi_platform.release.shadow import shadow_review
from cbi_platform.reporting import markdown_table
from cbi_platform.results_sink import mirror_validation

GROUP = "operations"
LIVE_SCHEMA = {
    "as_of": pl.Date,
    "horizon": pl.Utf8,
    "role": pl.Utf8,
    "model_version": pl.Utf8,
    "price": pl.Float64,
    "forecast": pl.Float64,
    "p10": pl.Float64,
    "p50": pl.Float64,
    "p90": pl.Float64,
    "regime": pl.Utf8,
    "provisional": pl.Boolean,
}
SHADOW_SCHEMA = {
    "horizon": pl.Utf8,
    "champion": pl.Utf8,
    "challenger": pl.Utf8,
    "shadow_outcomes": pl.Int64,
    "mae_champion": pl.Float64,
    "mae_challenger": pl.Float64,
    "mae_random_walk": pl.Float64,
    "dm_pvalue": pl.Float64,
    "promoted": pl.Boolean,
    "reason": pl.Utf8,
}


def _md(frame: pl.DataFrame, empty: str = "none yet") -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(frame) if frame.height else empty)


def _round(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(pl.Float64).round(4)) if frame.height else frame


@dg.asset(
    group_name=GROUP,
    kinds={"polars", "duckdb"},
    description="Today's features for every horizon (the same point-in-time builder as the "
    "`features` partitions, which only retraining rebuilds); leakage-gated by a blocking check.",
    ins=news_input(),
)
def live_features(
    context: dg.AssetExecutionContext,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    operations: OperationsResource,
    **news_sentiment: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    from cbi_platform.features.build import build_features

    target = market_source.target()
    horizons = operations.horizons
    news = {h: news_sentiment["news_sentiment"] for h in SENTIMENT_SETTINGS.enabled_horizons}
    frames = [
        build_features(market_prices, h, target=target, news_sentiment=news.get(h)).frame
        for h in horizons
    ]
    frame = pl.concat(frames, how="diagonal_relaxed")
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": frame.height,
            "last_date": str(frame["date"].max()),
            "horizons": dg.MetadataValue.json(horizons),
        },
    )


@dg.asset(
    group_name=GROUP,
    kinds={"mlflow", "duckdb"},
    description="Today's forecast per horizon from the served version (champion, or provisional) "
    "through the registry's load-and-predict path, with no retraining; the challenger's "
    "forecast is logged beside it in shadow mode. Appended to the forecast history.",
)
def live_forecasts(
    context: dg.AssetExecutionContext,
    live_features: pl.DataFrame,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    mlflow: MlflowResource,
    forecast_store: ForecastStoreResource,
    operations: OperationsResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    tracker = mlflow.tracker()
    result = daily.refresh(
        tracker,
        market_prices,
        live_features,
        target_symbol=market_source.target(),
        data_reference_date=market_source.reference_date(),
        cache=home.folder("model_cache"),
        horizons=operations.horizons,
        perturb=operations.perturbation(),
    )
    inserted = forecast_store.store().append(result.rows)
    if result.conditions:  # a served version that does not reproduce on reload
        operations.conditions().record(result.conditions, context.run.run_id)
    for h in result.horizons:
        context.log.info(
            f"{h.horizon}: v{h.serving.served}{' (provisional)' if h.serving.provisional else ''}"
            f"{f', shadow v{h.serving.challenger}' if h.serving.challenger else ''} "
            f"in {h.seconds:.1f}s: {h.rows[0]['statement']}"
        )
    table = pl.DataFrame(
        [{k: r.get(k) for k in LIVE_SCHEMA} for r in result.rows], schema=LIVE_SCHEMA
    )
    return dg.Output(
        table,
        metadata={
            "dagster/row_count": table.height,
            "as_of": str(result.as_of),
            "history_rows_inserted": inserted,
            "forecasts": _md(_round(table)),
            "seconds_per_horizon": dg.MetadataValue.json(
                {h.horizon: round(h.seconds, 2) for h in result.horizons}
            ),
        },
    )


@dg.asset(
    group_name=GROUP,
    deps=["live_forecasts"],
    kinds={"polars", "duckdb"},
    description="Every matured served forecast scored against the actual price: rolling MAPE, "
    "MASE, MAE relative to the random walk and 80/90% coverage per horizon, decomposed by "
    "regime, size of move and top driver; coverage monitored in the current regime; stale data.",
)
def forecast_validation(
    context: dg.AssetExecutionContext,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    mlflow: MlflowResource,
    forecast_store: ForecastStoreResource,
    operations: OperationsResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    config = operations.config()
    target = market_source.target_prices(market_prices)
    reference = market_source.reference_date()
    link = operations.run_link(context.run.run_id)
    report = daily.validate(
        forecast_store.store().history(),
        target,
        as_of=reference,
        achieved=daily.achieved_coverage(mlflow.tracker(), operations.horizons),
        config=config,
        link=link,
    )
    scored = report.scored.drop("drivers_detail", strict=False)
    mirror_validation(operations.results_sink(), scored, report.summary, reference)
    stale = daily.stale_condition(target, reference, config.refresh.max_business_days_behind, link)
    conditions = [*report.conditions, stale]
    operations.conditions().record(conditions, context.run.run_id)
    plot = validation_plot(
        report.scored,
        report.rolling,
        home.folder("reports") / "forecast_validation.png",
        config.validation,
    )
    firing = [c for c in conditions if c.firing]
    return dg.Output(
        scored,
        metadata={
            "dagster/row_count": report.scored.height,
            "matured_forecasts": report.scored.height,
            "summary_vs_random_walk": _md(_round(report.summary)),
            "by_regime": _md(_round(report.by_regime)),
            "by_move_size": _md(_round(report.by_move)),
            "by_top_driver": _md(_round(report.by_driver)),
            "regime_coverage_monitor": _md(_round(report.regime_monitor)),
            "firing": dg.MetadataValue.json({c.key: c.title for c in firing}),
            "plot": dg.MetadataValue.path(str(plot)),
        },
    )


@dg.asset(
    group_name=GROUP,
    deps=["live_forecasts"],
    kinds={"polars", "scipy"},
    description="Input drift per feature (KS against the rows the served version trained on, "
    "thresholds calibrated on chunks of those rows), prediction drift (served forecasts "
    "against its walk-forward forecasts) and SHAP-driver rank drift over rolling windows; "
    "settings in monitoring.yaml.",
)
def drift_metrics(
    context: dg.AssetExecutionContext,
    live_features: pl.DataFrame,
    market_source: MarketSourceResource,
    mlflow: MlflowResource,
    forecast_store: ForecastStoreResource,
    operations: OperationsResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    tracker = mlflow.tracker()
    trained_through = daily.trained_through(tracker, operations.horizons)
    # The served version's own walk-forward forecasts (not the newest ensemble_predictions,
    # which after an unpromoted retrain are the challenger's).
    reference = served_reference_predictions(
        tracker, operations.horizons, home.folder("model_cache")
    )
    report = daily.drift_report(
        live_features,
        forecast_store.store().history(),
        reference,
        trained_through,
        as_of=market_source.reference_date(),
        config=operations.config(),
        link=operations.run_link(context.run.run_id),
    )
    log = operations.conditions()
    conditions = drift.hold_episodes(report.conditions, log.frame(), operations.config().drift)
    log.record(conditions, context.run.run_id)
    table = report.features
    drifted = table.filter(pl.col("drifted")) if table.height else table
    return dg.Output(
        table,
        metadata={
            "dagster/row_count": table.height,
            "trained_through": dg.MetadataValue.json(
                {h: str(d) for h, d in trained_through.items()}
            ),
            "drifted_features": _md(_round(drifted.head(30)), "none"),
            "prediction_drift": _md(_round(report.predictions)),
            "driver_ranks": _md(_round(report.drivers.tail(15))),
            "firing": dg.MetadataValue.json({c.key: c.title for c in conditions if c.firing}),
        },
    )


@dg.asset(
    group_name=GROUP,
    kinds={"polars"},
    description="Rolling soy-palm and soy-crude return correlations against their own "
    "point-in-time history (percentile band, N consecutive days outside = a break); publishes "
    "the market state (regime and how long it has lasted, correlations, COT) for the buyer's page.",
)
def correlation_monitor(
    context: dg.AssetExecutionContext,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    operations: OperationsResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    as_of = market_source.reference_date()
    results, conditions = daily.correlation_report(
        market_prices,
        market_source.target(),
        as_of=as_of,
        config=operations.config(),
        link=operations.run_link(context.run.run_id),
    )
    operations.conditions().record(conditions, context.run.run_id)
    state = market_state(market_prices, market_source.target(), as_of, results)
    publish_market_state(home.path, state)
    frames = [
        r.frame.tail(260).with_columns(pair=pl.lit(name), partner=pl.lit(r.partner))
        for name, r in results.items()
        if r.frame is not None
    ]
    out = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    state = {
        name: (
            {"skipped": r.reason}
            if r.skipped
            else {k: (str(v) if k == "date" else v) for k, v in (r.latest() or {}).items()}
        )
        for name, r in results.items()
    }
    return dg.Output(
        out,
        metadata={
            "dagster/row_count": out.height,
            "pairs": dg.MetadataValue.json(state),
            "breaking": dg.MetadataValue.json([c.key for c in conditions if c.firing]),
        },
    )


@dg.asset(
    group_name=GROUP,
    deps=["forecast_validation"],
    kinds={"mlflow", "polars"},
    description="Champion against challenger on the same matured targets (shadow mode); the "
    "combined walk-forward + shadow rule may promote the challenger (an audit row says why).",
)
def shadow_comparison(
    context: dg.AssetExecutionContext,
    market_prices: pl.DataFrame,
    market_source: MarketSourceResource,
    mlflow: MlflowResource,
    forecast_store: ForecastStoreResource,
    operations: OperationsResource,
) -> dg.Output[pl.DataFrame]:
    settings = operations.config().shadow
    outcomes = shadow_review(
        mlflow.tracker(),
        forecast_store.store().history(),
        market_source.target_prices(market_prices),
        operations.audit(),
        horizons=operations.horizons,
        min_outcomes=settings.min_outcomes,
        margin=settings.margin,
        dm_alpha=settings.dm_alpha,
        auto_promote=settings.auto_promote,
    )
    rows = [
        {
            "horizon": o.horizon,
            "champion": o.champion,
            "challenger": o.challenger,
            "shadow_outcomes": (o.comparison or {}).get("n"),
            "mae_champion": (o.comparison or {}).get("mae_champion"),
            "mae_challenger": (o.comparison or {}).get("mae_challenger"),
            "mae_random_walk": (o.comparison or {}).get("mae_random_walk"),
            "dm_pvalue": (o.comparison or {}).get("dm_pvalue"),
            "promoted": o.promoted,
            "reason": "; ".join((o.decision or {}).get("reasons", [])) or None,
        }
        for o in outcomes
    ]
    out = pl.DataFrame(rows, schema=SHADOW_SCHEMA)
    for o in outcomes:
        if o.promoted:
            context.log.info(f"{o.horizon}: challenger v{o.challenger} promoted on shadow record")
    return dg.Output(
        out,
        metadata={"dagster/row_count": out.height, "comparison": _md(_round(out))},
    )


OPERATIONS_ASSETS = [
    live_features,
    live_forecasts,
    forecast_validation,
    drift_metrics,
    correlation_monitor,
    shadow_comparison,
]
