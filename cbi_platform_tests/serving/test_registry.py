"""Load-and-predict: a registered version forecasts today's data without retraining, and an
older champion serves its own numbers, not the newest version's."""

import json
import math

import numpy as np
import polars as pl
import pytest

from cbi_platform.ensemble.combiners import INVERSE_ERROR, EnsembleState
from cbi_platform.ensemble.conformal import ZONE_COLUMNS
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.registry import build_model
from cbi_platform.serving.calibration import CalibrationState
from cbi_platform.serving.registry import ServedModel, clear_loaded_versions, load_version
from cbi_platform.tracking import Tracker

H = 21
SPECS = (
    ModelSpec("random_walk", "random_walk", "benchmark"),
    ModelSpec("ridge", "ridge", "sanity"),
)
OFFSETS = dict(zip(ZONE_COLUMNS, (-0.12, -0.08, -0.03, 0.01, 0.04, 0.09, 0.13), strict=True))


def _features(n=420, seed=0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    dates = np.busday_offset("2020-01-01", np.arange(n), roll="forward").astype("datetime64[D]")
    logp = np.log(45.0) + np.cumsum(rng.normal(0, 0.015, n))
    target = np.full(n, np.nan)
    target[:-H] = logp[H:] - logp[:-H]
    momentum = np.concatenate([np.zeros(H), logp[H:] - logp[:-H]])
    return pl.DataFrame(
        {
            "date": pl.Series(dates).cast(pl.Date),
            "horizon": "1m",
            "price": np.exp(logp),
            "target_logret": pl.Series(target).fill_nan(None),
            "f_momentum": momentum,
            "f_noise": rng.normal(size=n),
        }
    )


def _served(frame: pl.DataFrame, scores: tuple[float, float]) -> ServedModel:
    known = frame.filter(pl.col("target_logret").is_not_null())
    names = ["f_momentum", "f_noise"]
    data = FitData(
        X=known.select(names).to_numpy(),
        y=known["target_logret"].to_numpy(),
        prices=frame["price"].to_numpy(),
        horizon_days=H,
        feature_names=names,
    )
    members = {spec.name: build_model(spec).fit(data) for spec in SPECS}
    state = EnsembleState(
        horizon="1m",
        origin=frame["date"][-1],
        combiner=INVERSE_ERROR,
        members=("random_walk", "ridge"),
        shrink_weight=0.6,
        blended=True,
        member_scores=scores,
    )
    calibration = CalibrationState(
        method="pooled",
        zone_offsets=OFFSETS,
        cdf_offsets=(-0.2, -0.05, 0.0, 0.05, 0.2),
        cdf_prob=(0.0, 0.2, 0.5, 0.8, 1.0),
        n_calibration=60,
        n_calibration_independent=60.0,
        past_pit=(0.1, 0.5, 0.9),
        vol_model="garch",
    )
    return ServedModel("1m", H, members, names, state, calibration, frame["date"][-1], "abc123")


def _register(tracker: Tracker, served: ServedModel, folder) -> str:
    with tracker.run("forecasts[1m]", {"dagster.asset": "forecasts"}) as run_id:
        for path in served.save(folder):
            tracker.log_artifact(run_id, path, "ensemble")
        return tracker.register(run_id, "ensemble", "cbi-zl-1m")


@pytest.fixture
def tracker(tmp_path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")


def test_an_older_champion_forecasts_today_with_its_own_members_and_state(tracker, tmp_path):
    today = _features()
    old = _served(today.head(300), scores=(1.0, 1.0))
    new = _served(today, scores=(1.0, 4.0))
    assert _register(tracker, old, tmp_path / "v1") == "1"
    assert _register(tracker, new, tmp_path / "v2") == "2"
    tracker.set_alias("cbi-zl-1m", "champion", "1")
    champion = load_version(tracker, "cbi-zl-1m", tracker.alias_version("cbi-zl-1m", "champion"))
    newest = load_version(tracker, "cbi-zl-1m", tracker.latest_version("cbi-zl-1m"))
    assert champion.trained_through == today["date"][299] and newest.version == "2"
    served, latest = champion.predict(today), newest.predict(today)
    # The champion's numbers, computed by hand from its own members and weights on today's row.
    x = today.tail(1).select("f_momentum", "f_noise").to_numpy()
    ridge = old.members["ridge"].predict(x, today["price"].to_numpy())[0]
    expected = 0.6 * (0.5 * 0.0 + 0.5 * ridge)  # inverse-error weights 1:1, shrunk by 0.6
    assert served.zone["forecast_logret"] == pytest.approx(expected, abs=1e-12)
    assert served.zone["origin"] == today["date"][-1]  # today's data, not the champion's
    price = today["price"][-1]
    assert served.zone["price"] == price
    for column, offset in OFFSETS.items():
        assert served.zone[column] == pytest.approx(price * math.exp(expected + offset), rel=1e-12)
    assert served.zone["forecast"] != pytest.approx(latest.zone["forecast"], rel=1e-6)
    assert served.member_logrets["ridge"] != pytest.approx(latest.member_logrets["ridge"])


def test_predict_refuses_features_the_version_was_not_trained_on(tracker, tmp_path):
    today = _features()
    _register(tracker, _served(today, (1.0, 1.0)), tmp_path / "v1")
    served = load_version(tracker, "cbi-zl-1m", "1")
    with pytest.raises(ValueError, match=r"lack column\(s\) \['f_noise'\]"):
        served.predict(today.drop("f_noise"))
    with pytest.raises(ValueError, match="prices must end at that date"):
        served.predict(today, prices=today["price"].to_numpy()[:-1])


def test_a_version_without_the_served_state_cannot_serve(tracker, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "members.joblib").write_bytes(b"")
    with tracker.run("old", {}) as run_id:
        tracker.log_artifact(run_id, folder / "members.joblib", "ensemble")
        tracker.register(run_id, "ensemble", "cbi-zl-1m")
    with pytest.raises(FileNotFoundError, match="served_state.json is missing"):
        load_version(tracker, "cbi-zl-1m", "1")


def test_version_tags_round_trip_through_the_tracker(tracker, tmp_path):
    _register(tracker, _served(_features(), (1.0, 1.0)), tmp_path / "v1")
    tracker.set_version_tags("cbi-zl-1m", "1", {"mase_terms": json.dumps({"2020-01-01": 0.5})})
    assert json.loads(tracker.version_tags("cbi-zl-1m", "1")["mase_terms"]) == {"2020-01-01": 0.5}
    assert tracker.latest_version("cbi-zl-unknown") is None


def test_a_version_is_loaded_once_per_process_and_again_when_its_files_change(tracker, tmp_path):
    today = _features()
    _register(tracker, _served(today, (1.0, 1.0)), tmp_path / "v1")
    cache = tmp_path / "cache"
    clear_loaded_versions()
    first = load_version(tracker, "cbi-zl-1m", "1", cache)
    assert load_version(tracker, "cbi-zl-1m", "1", cache) is first  # reused, not unpickled
    # A temporary cache (registration's reload check without a home) neither reuses nor keeps.
    assert load_version(tracker, "cbi-zl-1m", "1", cache, keep=False) is not first
    # The same files rewritten (a restored backup, a repaired download) are read again.
    members = cache / "cbi-zl-1m-v1" / "ensemble" / "members.joblib"
    members.write_bytes(members.read_bytes())
    again = load_version(tracker, "cbi-zl-1m", "1", cache)
    assert again is not first
    assert again.predict(today).zone["forecast_logret"] == first.predict(today).zone[
        "forecast_logret"
    ]


def test_a_cached_folder_from_another_run_is_replaced_not_served(tracker, tmp_path):
    today = _features()
    _register(tracker, _served(today.head(300), (1.0, 1.0)), tmp_path / "v1")
    cache = tmp_path / "cache"
    clear_loaded_versions()
    old = load_version(tracker, "cbi-zl-1m", "1", cache)
    # The registry is rebuilt (a new MLflow database) and its v1 is another model; the cache
    # folder on disk still holds the old v1's files.
    rebuilt = Tracker(f"sqlite:///{tmp_path / 'mlflow2.db'}", tmp_path / "artifacts2")
    _register(rebuilt, _served(today, (1.0, 4.0)), tmp_path / "v1b")
    new = load_version(rebuilt, "cbi-zl-1m", "1", cache)
    assert new.trained_through == today["date"][-1] != old.trained_through
    marker = (cache / "cbi-zl-1m-v1" / "run_id").read_text().strip()
    assert marker == rebuilt.version_run_id("cbi-zl-1m", "1")
