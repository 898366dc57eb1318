"""The modelling layer end to end, in-process, on a small manifest and a small protocol."""

import json

import dagster as dg
import duckdb
import polars as pl
from mlflow import MlflowClient

from cbi_platform.defs.pipeline import ALL_ASSETS, HORIZON_ASSETS, HORIZON_CHECKS, SHARED_ASSETS
from cbi_platform.defs.resources import ProtocolResource
from cbi_platform_tests.conftest import file_resources, write_small_manifest

SMALL = ProtocolResource(
    n_origins=12,
    span=240,
    end_offset=5,
    n_burn_in=40,
    n_workers=1,
    min_history=5,
    regime_folds=2,
)


def _run(resources, selection, partition=None):
    checks = HORIZON_CHECKS if partition else []
    return dg.materialize(
        [*ALL_ASSETS, *checks],
        selection=dg.AssetSelection.assets(*selection) | dg.AssetSelection.checks(*checks),
        partition_key=partition,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )


def test_forecast_pipeline_produces_honest_calibrated_forecasts(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    manifest = write_small_manifest(data, n_days=1400)
    home = tmp_path / "home"
    resources = {**file_resources(manifest, home), "protocol": SMALL}
    assert _run(resources, SHARED_ASSETS).success
    result = _run(resources, HORIZON_ASSETS, "1m")
    assert result.success
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        oof = con.sql("select * from cbi.oof_predictions").pl()
        board = con.sql("select * from cbi.model_leaderboard").pl()
        zones = con.sql("select * from cbi.target_zones").pl()
        shap = con.sql("select * from cbi.oof_shap").pl()
    # Embargo: no member was ever fitted on a target after its origin.
    assert (oof["fitted_at"] <= oof["origin"]).all()
    assert (oof.filter(pl.col("role") == "live")["actual"].is_null()).all()
    # Every model sits next to the random walk; the random walk's relative MAE is exactly 1.
    rw = board.filter(pl.col("model") == "random_walk")
    assert rw["rel_mae"][0] == 1.0 and "ensemble" in board["model"].to_list()
    # 12 scored origins, the last ends 5 rows before the data: its 21-day target is unknown.
    assert board["n"].max() == 11  # scored origins only; burn-in and live excluded
    live = zones.filter((pl.col("model") == "ensemble") & (pl.col("role") == "live"))
    q = live.select("lo90", "p10", "p30", "p50", "p70", "p90", "hi90").row(0)
    assert list(q) == sorted(q)
    assert shap["model"].n_unique() >= 3 and "random_walk" not in shap["model"].to_list()

    from cbi_platform.serving.store import ForecastStore

    store = ForecastStore(home / "forecasts.duckdb")
    latest = store.latest()
    assert latest.height == 1 and latest["horizon"][0] == "1m"
    row = latest.to_dicts()[0]
    assert "probability ZL is between" in row["statement"] and row["p10"] < row["p90"]
    assert row["regime"] in {"crisis", "bull", "bear", "normal"} and row["drivers"]
    # The history is append-only: the same as-of and version is not written twice.
    mat = next(
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == "forecasts"
    )
    assert mat.metadata["history_rows_inserted"].value == 1
    promotion = mat.metadata["promotion"].value["1m"]
    assert promotion["version"] == "1" and "would_promote_at_2pct_margin" in promotion
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert client.get_registered_model("cbi-zl-1m").name == "cbi-zl-1m"
    runs = client.search_runs(
        [client.get_experiment_by_name("cbi-zl").experiment_id],
        "tags.`dagster.asset` = 'oof_predictions'",
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == oof["model"].n_unique()
    history = client.get_metric_history(children[0].info.run_id, "abs_pct_error")
    assert len({m.step for m in history}) == len(history) > 1  # step = origin, one per origin
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["oof_predictions_monotone"].passed
    constraints = checks["oof_predictions_monotone"].metadata["constraints"].value
    assert constraints and all(c["monotone"] for c in constraints)
    # The registered version carries the fitted members, loadable and able to predict.
    import joblib

    version = client.get_model_version("cbi-zl-1m", "1")
    local = client.download_artifacts(version.run_id, "ensemble", str(tmp_path / "dl"))
    members = joblib.load(f"{local}/members.joblib")
    assert "lgbm_gbdt" in members and "random_walk" in members
    again = store.append([{**row, "drivers": json.loads(json.dumps(row["drivers"]))}])
    assert again == 0
