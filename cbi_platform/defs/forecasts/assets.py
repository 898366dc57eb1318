"""The forecast the buyer reads, registered in MLflow, appended to the forecast history."""

import json

import dagster as dg
import joblib
import polars as pl

from cbi_platform.defs.partitions import PARTITION_EXPR, horizon_backfill, horizon_partitions
from cbi_platform.defs.resources import (
    ForecastStoreResource,
    MarketSourceResource,
    MlflowResource,
    PlatformHome,
    ProtocolResource,
)
from cbi_platform.ensemble.conformal import coverage_report
from cbi_platform.evaluation import horizon_run
from cbi_platform.evaluation.promotion import Candidate, decide
from cbi_platform.features.contract import HORIZONS
from cbi_platform.market.schema import target_series
from cbi_platform.regimes.detected import regime_outlook
from cbi_platform.reporting import markdown_table
from cbi_platform.serving.drivers import forecast_drivers, member_signals
from cbi_platform.serving.forecast import assemble_forecast
from cbi_platform.tracking import registered_model_name


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def _candidate(version: str, board: pl.DataFrame, zones: pl.DataFrame) -> Candidate:
    ens = board.filter(pl.col("model") == "ensemble")
    cov = coverage_report(zones.filter(pl.col("model") == "ensemble"))
    cov_all = cov.filter(pl.col("regime") == "all") if cov.height else cov
    scored = zones.filter(
        (pl.col("model") == "ensemble")
        & (pl.col("role") == "scored")
        & pl.col("actual").is_not_null()
    )
    errors = {
        str(o): abs(f - a) for o, f, a in scored.select("origin", "forecast", "actual").iter_rows()
    }
    return Candidate(
        version=version,
        mase=_float(ens["mase"][0]) if ens.height else float("nan"),
        coverage90=_float(cov_all["coverage90"][0]) if cov_all.height else float("nan"),
        leakage_passed=True,  # the blocking leakage checks gate every upstream run
        errors=errors,
    )


@dg.asset(
    group_name="forecasts",
    partitions_def=horizon_partitions,
    backfill_policy=horizon_backfill,
    metadata=PARTITION_EXPR,
    kinds={"polars", "duckdb", "mlflow"},
    description="Latest forecast per horizon: price level, P10..P90, 90% band, probability "
    "statement, detected regime, drivers, volatility, data freshness; appended to the history.",
)
def forecasts(
    context: dg.AssetExecutionContext,
    target_zones: pl.DataFrame,
    ensemble_weights: pl.DataFrame,
    oof_shap: pl.DataFrame,
    detected_regimes: pl.DataFrame,
    volatility_forecasts: pl.DataFrame,
    model_leaderboard: pl.DataFrame,
    market_prices: pl.DataFrame,
    features: pl.DataFrame,
    market_source: MarketSourceResource,
    protocol: ProtocolResource,
    mlflow: MlflowResource,
    forecast_store: ForecastStoreResource,
    home: PlatformHome,
) -> dg.Output[pl.DataFrame]:
    tracker = mlflow.tracker()
    target = target_series(market_prices, market_source.target())
    outlook = regime_outlook(target["date"], target["value"].to_numpy(), detected_regimes["regime"])
    rows, promotions = [], {}
    for horizon in context.partition_keys:
        zones = target_zones.filter(pl.col("horizon") == horizon)
        live = zones.filter((pl.col("model") == "ensemble") & (pl.col("role") == "live"))
        if live.height != 1:
            raise ValueError(f"{horizon}: expected one live ensemble zone row, found {live.height}")
        zone = live.to_dicts()[0]
        origin = zone["origin"]
        shap_live = oof_shap.filter((pl.col("horizon") == horizon) & (pl.col("origin") == origin))
        weights_live = ensemble_weights.filter(
            (pl.col("horizon") == horizon) & (pl.col("origin") == origin)
        )
        board = model_leaderboard.filter(pl.col("horizon") == horizon)
        drivers, driver_note = forecast_drivers(shap_live, weights_live, horizon)
        if not drivers:
            drivers = [driver_note, *member_signals(shap_live, board, horizon)]
        regime = detected_regimes.filter(pl.col("date") == origin)["regime"]
        vol = volatility_forecasts.filter(
            (pl.col("origin") == origin)
            & (pl.col("horizon") == horizon)
            & (pl.col("model") == "gjr_garch")
        )["forecast_vol"]
        # Register this ensemble as a model version; promotion decides whether it serves.
        name = registered_model_name(horizon)
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.partition": horizon,
            "dagster.asset": "forecasts",
        }
        with tracker.run(f"forecasts[{horizon}]", tags) as run_id:
            card = home.folder("model_cards", horizon) / "ensemble.json"
            card.write_text(
                json.dumps(
                    {
                        "horizon": horizon,
                        "combiner": zone.get("combiner"),
                        "shrink_weight": zone.get("shrink_weight"),
                        "member_weights": weights_live.select(
                            "model", "weight", "weight_kind"
                        ).to_dicts()
                        if weights_live.height
                        else [],
                        "leaderboard": board.select(
                            "model", "mase", "rel_mae", "dm_pvalue"
                        ).to_dicts(),
                    },
                    default=str,
                    indent=1,
                )
            )
            tracker.log_artifact(run_id, card, "ensemble")
            final = horizon_run.fit_final_models(
                features.filter(pl.col("horizon") == horizon),
                detected_regimes,
                horizon,
                horizon_run.zoo_specs(horizon, tuple(protocol.model_kinds)),
            )
            bundle = card.with_name("members.joblib")
            joblib.dump(final, bundle)
            tracker.log_artifact(run_id, bundle, "ensemble")
            version = tracker.register(run_id, "ensemble", name)
            challenger = _candidate(version, board, zones)
            champion_version = tracker.alias_version(name, "champion")
            champion = None
            if champion_version is not None:
                champ_tags = tracker.client.get_model_version(name, champion_version).tags
                champion = Candidate(
                    champion_version,
                    float(champ_tags["mase"]),
                    float(champ_tags["coverage90"]),
                    True,
                    json.loads(champ_tags.get("errors", "{}")),
                )
            for key, value in (
                ("mase", challenger.mase),
                ("coverage90", challenger.coverage90),
                ("errors", json.dumps({k: round(v, 4) for k, v in challenger.errors.items()})),
            ):
                tracker.client.set_model_version_tag(name, version, key, str(value))
            decision = decide(challenger, champion, margin=0.10)
            at_2pct = decide(challenger, champion, margin=0.02)
            if decision.promote:
                tracker.set_alias(name, "champion", version)
            promotions[horizon] = {
                "version": version,
                "champion_before": champion_version,
                "promoted": decision.promote,
                "reasons": list(decision.reasons),
                "would_promote_at_2pct_margin": at_2pct.promote,
            }
            serving = version if decision.promote or champion_version is None else champion_version
        row = assemble_forecast(
            zone,
            horizon=horizon,
            horizon_days=HORIZONS[horizon],
            model_version=f"{name}/v{version}",
            regime=regime[0] if regime.len() else None,
            regime_outlook=outlook,
            drivers=drivers,
            volatility=float(vol[0]) if vol.len() and vol[0] is not None else None,
            data_reference_date=market_source.reference_date(),
        )
        row["serving_version"] = f"{name}/v{serving}"
        row["driver_note"] = driver_note
        rows.append(row)
        context.log.info(f"{horizon}: {row['statement']}")
    inserted = forecast_store.store().append(
        [{k: v for k, v in r.items() if k not in ("serving_version", "driver_note")} for r in rows]
    )
    out = pl.DataFrame([{**r, "drivers": json.dumps(r["drivers"])} for r in rows])
    return dg.Output(
        out,
        metadata={
            "dagster/row_count": out.height,
            "statements": dg.MetadataValue.md(
                "\n".join(f"- **{r['horizon']}**: {r['statement']}" for r in rows)
            ),
            "forecast": dg.MetadataValue.md(
                markdown_table(
                    out.select(
                        "horizon",
                        "as_of",
                        "target_date",
                        "price",
                        "p10",
                        "p30",
                        "p50",
                        "p70",
                        "p90",
                        "regime",
                    )
                )
            ),
            "drivers": dg.MetadataValue.md(
                "\n".join(
                    f"- **{r['horizon']}** ({r['driver_note']}): " + "; ".join(r["drivers"])
                    for r in rows
                )
            ),
            "promotion": dg.MetadataValue.json(promotions),
            "history_rows_inserted": inserted,
        },
    )
