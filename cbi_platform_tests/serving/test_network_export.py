"""A registered version with a network member: the network is exported in the Keras format and
as a TensorFlow SavedModel with its signature, logged to MLflow with the version; the version
reloads and serves the sequence member from the rows ending today."""

import json

import numpy as np
import polars as pl
import pytest

from cbi_platform.ensemble.combiners import INVERSE_ERROR, EnsembleState
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.registry import build_model
from cbi_platform.serving.registry import NETWORKS_DIR, ServedModel, load_version
from cbi_platform.tracking import Tracker
from cbi_platform_tests.serving.test_registry import H, _features, _served

GRU = ModelSpec("nn_gru", "gru", "neural", {"lookback": 5, "units": 4, "epochs": 1})


def _with_network(frame: pl.DataFrame) -> ServedModel:
    served = _served(frame, (1.0, 1.0))
    names = served.feature_names
    known = frame.filter(pl.col("target_logret").is_not_null())
    X = frame.select(names).to_numpy()
    rows = np.flatnonzero(frame["target_logret"].is_not_null().to_numpy())
    data = FitData(
        X=X[rows],
        y=known["target_logret"].to_numpy(),
        prices=frame["price"].to_numpy(),
        horizon_days=H,
        feature_names=names,
        history=X,
        train_rows=rows,
    )
    served.members["nn_gru"] = build_model(GRU).fit(data)
    served.ensemble = EnsembleState(
        horizon="1m",
        origin=frame["date"][-1],
        combiner=INVERSE_ERROR,
        members=("random_walk", "ridge", "nn_gru"),
        shrink_weight=0.6,
        blended=True,
        member_scores=(1.0, 1.0, 2.0),
    )
    return served


def _register(tracker: Tracker, served: ServedModel, folder) -> str:
    """As the forecasts asset registers a version (folders logged with their layout)."""
    with tracker.run("forecasts[1m]", {"dagster.asset": "forecasts"}) as run_id:
        for path in served.save(folder):
            if path.is_dir():
                tracker.log_artifacts(run_id, path, f"ensemble/{path.name}")
            else:
                tracker.log_artifact(run_id, path, "ensemble")
        return tracker.register(run_id, "ensemble", "cbi-zl-1m")


def test_network_members_are_exported_and_served_from_their_window(tmp_path):
    frame = _features()
    served = _with_network(frame)
    written = served.save(tmp_path / "version")
    networks = tmp_path / "version" / NETWORKS_DIR / "nn_gru"
    assert networks.parent in written
    assert (networks / "model.keras").is_file()
    assert (networks / "saved_model" / "saved_model.pb").is_file()
    signature = json.loads((networks / "signature.json").read_text())
    assert json.dumps(signature).count("5") >= 1  # the lookback is part of the input shape

    # The sequence member reads the 5 rows ending today, not today's row alone.
    out = served.predict(frame)
    window = frame.select(served.feature_names).to_numpy()[-5:]
    expected = served.members["nn_gru"].predict(window, frame["price"].to_numpy())[-1]
    assert out.member_logrets["nn_gru"] == pytest.approx(float(expected), abs=1e-7)
    assert out.rows_for("nn_gru").shape == (5, 2)
    alone = served.members["nn_gru"].predict(window[-1:], frame["price"].to_numpy())[-1]
    assert not np.isclose(alone, expected)  # one row only would have been a different forecast

    # Registered in MLflow with the version, and the reloaded version serves the same numbers.
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    version = _register(tracker, served, tmp_path / "card")
    run_id = tracker.client.get_model_version("cbi-zl-1m", version).run_id
    listed = [a.path for a in tracker.client.list_artifacts(run_id, "ensemble/networks/nn_gru")]
    assert "ensemble/networks/nn_gru/saved_model" in listed
    loaded = load_version(tracker, "cbi-zl-1m", version)
    again = loaded.predict(frame)
    assert again.member_logrets["nn_gru"] == pytest.approx(out.member_logrets["nn_gru"], abs=1e-7)
    assert again.zone["forecast"] == pytest.approx(out.zone["forecast"], rel=1e-12)
