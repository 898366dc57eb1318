"""A version serves only while it reproduces on reload; prediction drift reads the served
version's own walk-forward forecasts (issue 18 §1)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cbi_platform.release import reproduction
from cbi_platform.release.gates import Decision
from cbi_platform.release.register import _refuse_unless
from cbi_platform.release.versions import set_champion
from cbi_platform.serving.publish import RANDOM_WALK_VERSION, random_walk_record
from cbi_platform.tracking import Tracker, registered_model_name
from cbi_platform_tests.deploy.conftest import feature_frame, served_model

CONTEXT = {"regime": "normal", "vol_forecast": 0.2}


@pytest.fixture
def tracker(tmp_path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts")


def register(
    tracker: Tracker,
    folder: Path,
    *,
    horizon: str = "1m",
    seed: int = 0,
    shift: float = 0.0,
    failed_gates: tuple[str, ...] = (),
    reference: list[float] | None = None,
) -> str:
    """A version registered as `release.register` does: artifacts with the probe (and the
    walk-forward forecasts), tags with the live forecast. `shift` plants a recorded forecast
    that the artifacts do not reproduce."""
    frame = feature_frame(horizon, seed=seed)
    model = served_model(frame, horizon)
    folder.mkdir(parents=True, exist_ok=True)
    probe = reproduction.probe_path(folder)
    frame.write_parquet(probe)
    paths = [probe, *model.save(folder)]
    if reference is not None:
        ref = reproduction.reference_path(folder)
        pl.DataFrame(
            {
                "origin": frame["date"][: len(reference)],
                "role": "scored",
                "forecast_logret": reference,
            }
        ).write_parquet(ref)
        paths.append(ref)
    name = registered_model_name(horizon)
    with tracker.run(f"forecasts[{horizon}]", {}) as run_id:
        for path in paths:
            tracker.log_artifact(run_id, path, "ensemble")
        version = tracker.register(run_id, "ensemble", name)
    zone = model.predict(frame, None, CONTEXT).zone
    tags = reproduction.live_tags(
        {**zone, "forecast_logret": zone["forecast_logret"] + shift}, CONTEXT
    )
    tracker.set_version_tags(
        name, version, {**tags, "failed_gates": json.dumps(list(failed_gates))}
    )
    return version


def test_a_version_that_reproduces_serves(tracker, tmp_path):
    version = register(tracker, tmp_path / "v1")
    set_champion(tracker, "1m", version)
    chosen = reproduction.checked_serving(tracker, "1m", tmp_path / "cache")
    assert chosen.check.ok and chosen.check.gap == 0.0 and chosen.check.tolerance == 1e-9
    assert chosen.serving.served == version and not chosen.serving.provisional
    assert chosen.model is not None and not chosen.fell_back


def test_a_champion_that_does_not_reproduce_refuses_and_the_previous_version_serves(
    tracker, tmp_path
):
    older = register(tracker, tmp_path / "v1")
    broken = register(tracker, tmp_path / "v2", seed=1, shift=1e-7)  # 100x the tolerance
    set_champion(tracker, "1m", broken)
    chosen = reproduction.checked_serving(tracker, "1m", tmp_path / "cache")
    assert not chosen.check.ok and chosen.check.gap == pytest.approx(1e-7, rel=1e-3)
    assert chosen.fell_back and chosen.serving.served == older and chosen.serving.provisional
    assert "does not reproduce" in chosen.serving.failed_gates[0]
    assert str(chosen.model.version) == older


def test_with_no_version_that_can_serve_the_random_walk_serves_flagged(tracker, tmp_path):
    register(tracker, tmp_path / "v1", failed_gates=("MASE undefined",))  # not a fallback
    broken = register(tracker, tmp_path / "v2", shift=-1e-6)
    set_champion(tracker, "1m", broken)
    chosen = reproduction.checked_serving(tracker, "1m", tmp_path / "cache")
    assert chosen.model is None and chosen.serving.served == reproduction.RANDOM_WALK_SERVES
    assert "the random walk serves" in chosen.serving.failed_gates[0]
    frame = feature_frame("1m")
    record = random_walk_record(
        "1m",
        frame.select("date", value="price"),
        regimes=pl.DataFrame({"date": frame["date"], "regime": "normal"}),
        regime_outlook={"normal": 1.0},
        data_reference_date=frame["date"][-1],
        reasons=chosen.serving.failed_gates,
    )
    assert record["model_version"] == RANDOM_WALK_VERSION and record["provisional"]
    assert record["forecast"] == record["price"] and record["p10"] < record["price"] < record["p90"]
    assert record["statement"].startswith("PROVISIONAL")


def test_a_registration_that_does_not_reproduce_is_refused_like_a_failed_gate():
    promote = Decision(True, ("first ensemble that passes the gates: champion",))
    ok = reproduction.ReloadCheck("3", 0.0, 1e-9)
    bad = reproduction.ReloadCheck("3", 2e-9, 1e-9)
    assert _refuse_unless(ok, promote, "1m") is promote
    refused = _refuse_unless(bad, promote, "1m")
    assert not refused.promote and "does not reproduce" in refused.failed_gates[0]
    failed = Decision(False, ("MASE undefined",), failed_gates=("MASE undefined",))
    assert _refuse_unless(bad, failed, "1m").failed_gates[0] == "MASE undefined"
    assert len(_refuse_unless(bad, failed, "1m").failed_gates) == 2


def test_networks_get_the_stated_float32_tolerance(tmp_path):
    model = served_model(feature_frame("1m"))
    assert reproduction.tolerance(model) == reproduction.FLOAT64_TOLERANCE

    class Network:
        precision = "float32"  # what a fitted NeuralModel records

    model.members["ridge"] = Network()
    assert reproduction.tolerance(model) == reproduction.FLOAT32_TOLERANCE == 1e-6


def test_prediction_drift_reads_the_served_versions_walk_forward_not_the_challengers(
    tracker, tmp_path
):
    champion = register(tracker, tmp_path / "v1", reference=[0.01, 0.02, 0.03])
    register(tracker, tmp_path / "v2", reference=[0.5, 0.6, 0.7])  # a retrain not promoted
    set_champion(tracker, "1m", champion)
    found = reproduction.served_reference_predictions(tracker, ["1m"], tmp_path / "cache")
    assert found["forecast_logret"].to_list() == [0.01, 0.02, 0.03]
    assert set(found["horizon"]) == {"1m"}
