"""The modelling layer end to end, in-process, on a small manifest and a small protocol."""

import json

import dagster as dg
import duckdb
import polars as pl
from mlflow import MlflowClient

from cbi_platform.defs.partitions import horizon_partitions
from cbi_platform.defs.pipeline import HORIZON, SHARED
from cbi_platform.defs.resources import ProtocolResource
from cbi_platform.release.gates import LEAKAGE_CHECKS
from cbi_platform.runner import materialize
from cbi_platform_tests.conftest import SMALL_PROTOCOL, file_resources, write_small_manifest

SMALL = ProtocolResource(
    **SMALL_PROTOCOL,
    # Networks have their own small end-to-end test (test_neural_assets.py).
    model_kinds=["benchmark", "statistical", "tree", "sanity", "specialist"],
)


def _run(resources, selection, partition=None):
    return materialize(
        selection, partition, resources=resources, instance=dg.DagsterInstance.ephemeral()
    )


def test_forecast_pipeline_produces_honest_calibrated_forecasts(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    manifest = write_small_manifest(data, n_days=1400)
    home = tmp_path / "home"
    resources = {**file_resources(manifest, home), "protocol": SMALL}
    assert _run(resources, SHARED.without_checks()).success
    result = _run(resources, HORIZON, "1m")
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
    # 12 scored origins on the grid; only those whose 21-day target is in the data count.
    rw_oof = oof.filter(pl.col("model") == "random_walk")
    assert rw_oof.filter(pl.col("role") == "scored").height == 12
    resolved = rw_oof.filter((pl.col("role") == "scored") & pl.col("actual").is_not_null())
    assert board["n"].max() == resolved.height  # scored only; earlier windows and live excluded
    assert set(rw_oof["role"]) == {"calibration", "development", "scored", "live"}
    live = zones.filter((pl.col("model") == "ensemble") & (pl.col("role") == "live"))
    q = live.select("lo90", "p10", "p30", "p50", "p70", "p90", "hi90").row(0)
    assert list(q) == sorted(q)
    assert shap["model"].n_unique() >= 3 and "random_walk" not in shap["model"].to_list()
    # The walk-forward's past zones are published for the buyer's page: the ensemble's rows
    # with an outcome and a zone (serving.walk_forward_zones; the first origins have none).
    from cbi_platform.serving.walk_forward_zones import zones_path

    past = pl.read_parquet(zones_path(home, "1m"))
    resolved_zones = zones.filter(
        (pl.col("model") == "ensemble")
        & pl.col("actual").is_not_null()
        & pl.col("p10").is_not_null()
    )
    assert past.height == resolved_zones.height > 0
    assert past["actual"].to_list() == resolved_zones.sort("origin")["actual"].to_list()

    from cbi_platform.serving.store import ForecastStore

    store = ForecastStore(home / "forecasts.duckdb")
    latest = store.latest()
    assert latest.height == 1 and latest["horizon"][0] == "1m"
    row = latest.to_dicts()[0]
    assert "probability ZL is between" in row["statement"] and row["p10"] < row["p90"]
    assert row["regime"] in {"crisis", "bull", "bear", "normal"} and row["drivers"]
    # The history is append-only: the same as-of and version is not written twice.
    mats = {
        e.materialization.asset_key.to_user_string(): e.materialization
        for e in result.get_asset_materialization_events()
    }
    mat = mats["forecasts"]
    assert mat.metadata["history_rows_inserted"].value == 1
    # Registration and serving are two steps: the promotion is the registered version's.
    promotion = mats["registered_version"].metadata["promotion"].value["1m"]
    assert promotion["version"] == "1" and "would_promote_at_2pct_margin" in promotion
    # Promotion read the real blocking checks of this run from the instance: all passed.
    assert promotion["leakage"] == {name: True for name in LEAKAGE_CHECKS}
    # The served version's numbers are in the row; provisional exactly when nothing passed.
    assert row["model_version"] == f"cbi-zl-1m/v{promotion['serving_version']}"
    assert row["registered_version"] == "cbi-zl-1m/v1"
    assert row["provisional"] == (not promotion["promoted"])
    assert row["failed_gates"] == promotion["failed_gates"]
    assert promotion["serving_failed_gates"] == (row["failed_gates"] if row["provisional"] else [])
    # Both ways, whichever this run took: the statement and the metadata flag provisional rows.
    assert row["statement"].startswith("PROVISIONAL") == row["provisional"]
    assert not row["provisional"] or row["failed_gates"]
    flagged = {"1m": row["failed_gates"]} if row["provisional"] else {}
    assert mat.metadata["provisional"].value == flagged
    # The stated probability is the achieved one, with the count behind it.
    assert row["band_probability"] == row["band_hits"] / row["band_resolved"]
    assert f"held in {row['band_hits']} of {row['band_resolved']} past" in row["statement"]
    assert row["p50_note"] and row["forecast"] > 0
    assert all({"feature", "value", "contribution_pct"} <= set(d) for d in row["drivers_detail"])
    # Load-and-predict of the registered version on the same data reproduces the live
    # ensemble forecast and zones of the pipeline, without retraining.
    from cbi_platform.defs.ensemble.assets import horizon_context
    from cbi_platform.serving.registry import load_version
    from cbi_platform.tracking import Tracker

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        features = con.sql("select * from cbi.features where horizon = '1m'").pl()
        regimes = con.sql("select * from cbi.detected_regimes").pl()
        vol = con.sql("select * from cbi.volatility_forecasts").pl()
    ctx, vol_model = horizon_context("1m", regimes, vol)
    assert row["vol_model"] == vol_model
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")
    served = load_version(tracker, "cbi-zl-1m", "1")
    now = ctx.filter(pl.col("origin") == live["origin"][0]).row(0, named=True)
    zone = served.predict(features, None, now).zone
    expected = live.row(0, named=True)
    assert abs(zone["forecast_logret"] - expected["forecast_logret"]) < 1e-9
    for column in ("lo90", "p10", "p30", "p50", "p70", "p90", "hi90"):
        assert abs(zone[column] / expected[column] - 1) < 1e-9, column
    gap = mat.metadata["reload_gap_logret"].value["1m"]
    assert (gap is not None) == (promotion["serving_version"] == "1") and (gap or 0) < 1e-9
    # A fresh home holds one registered version: it is the one served (promoted or provisional).
    assert promotion["serving_version"] == "1"
    assert abs(row["forecast"] / expected["forecast"] - 1) < 1e-9
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


def _check_fixture(name: str, passed: bool):
    @dg.asset_check(asset="features", name=name, blocking=True, partitions_def=horizon_partitions)
    def _check() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR)

    return _check


def test_promotion_reads_the_leakage_checks_of_the_partition_from_the_instance():
    from cbi_platform.defs.dagster_internals import leakage_check_results
    from cbi_platform.release.gates import leakage_failures

    @dg.asset(name="features", partitions_def=horizon_partitions)
    def features_stub() -> int:
        return 1

    checks = [_check_fixture(n, n != "features_leakage_asof") for n in LEAKAGE_CHECKS]
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(
        [features_stub, *checks],
        partition_key="1m",
        instance=instance,
        resources={"io_manager": dg.mem_io_manager},
        raise_on_error=False,
    )
    results = leakage_check_results(instance, "1m")
    assert results == {n: n != "features_leakage_asof" for n in LEAKAGE_CHECKS}
    assert leakage_failures(results) == ["leakage check features_leakage_asof failed"]
    # Another partition was never checked: every gate counts as not passed, and says why.
    missing = leakage_check_results(instance, "1w")
    assert missing == {n: None for n in LEAKAGE_CHECKS}
    assert all("no evaluation recorded" in r for r in leakage_failures(missing))
