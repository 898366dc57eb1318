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


def test_predict_days_gives_each_day_what_one_call_per_day_gives(tmp_path):
    """The decision series runs a sequence member once over the days a state serves: each day's
    forecast must be the one `predict` makes from the rows up to that day, from the first rows
    (windows shorter than the lookback) to the end, and no later row may change it."""
    frame = _features()
    served = _with_network(frame)
    closes = frame["price"].to_numpy()
    n = frame.height
    for first, last in ((0, 12), (200, 230), (n - 6, n - 1)):
        contexts = [None] * (last - first + 1)
        block = served.predict_days(frame, closes, first, last, contexts)
        assert len(block) == last - first + 1
        for k, i in enumerate(range(first, last + 1)):
            one = served.predict(frame[: i + 1], closes[: i + 1])
            assert block[k].zone["origin"] == frame["date"][i]
            # float32 networks: a window in a batch of another size rounds differently
            for name in served.ensemble.members:
                assert block[k].member_logrets[name] == pytest.approx(
                    one.member_logrets[name], rel=1e-6, abs=1e-9
                ), (name, i)
            assert block[k].zone["forecast_logret"] == pytest.approx(
                one.zone["forecast_logret"], rel=1e-6, abs=1e-9
            )
            assert block[k].rows_for("nn_gru").shape == one.rows_for("nn_gru").shape

    # Point in time: the forecasts of days 200..210 are the same whether the block ends there
    # or runs on to day 230, and changing the rows after day 210 leaves them alone.
    short = served.predict_days(frame, closes, 200, 210, [None] * 11)
    noisy = frame.with_columns(
        pl.when(pl.int_range(pl.len()) > 210)
        .then(pl.col("f_noise") + 5.0)
        .otherwise(pl.col("f_noise"))
        .alias("f_noise")
    )
    longer = served.predict_days(noisy, closes, 200, 230, [None] * 31)
    for a, b in zip(short, longer[:11], strict=True):
        assert a.member_logrets["nn_gru"] == pytest.approx(
            b.member_logrets["nn_gru"], rel=1e-6, abs=1e-9
        )
    assert any(
        not np.isclose(x.member_logrets["nn_gru"], y.member_logrets["nn_gru"], rtol=1e-4)
        for x, y in zip(
            longer[11:], served.predict_days(frame, closes, 211, 230, [None] * 20), strict=True
        )
    )  # the changed rows do move the later days' forecasts

    with pytest.raises(ValueError, match="outside"):
        served.predict_days(frame, closes, 5, n, [None] * (n - 4))
