"""Shared statistical fits: one estimate per origin for every horizon, the engine's OOF rows."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbi_platform.evaluation.origins import OriginPlan, walk_forward_origins, with_live_origin
from cbi_platform.evaluation.shared_fits import empty_explanations, run_shared_walk_forward
from cbi_platform.evaluation.walk_forward import OOF_SCHEMA, run_walk_forward
from cbi_platform.features.contract import HORIZONS
from cbi_platform.models import statistical
from cbi_platform.models.base import ModelSpec
from cbi_platform_tests.evaluation.test_walk_forward import make_frame

THREE = ("1w", "1m", "3m")


def stat(name: str, family: str | None = None, refit_every: int = 1, **params) -> ModelSpec:
    """A statistical spec on a short trailing window (the frame has 700 rows)."""
    return ModelSpec(
        name,
        family or name,
        "statistical",
        params={"window": 250, **params},
        refit_every=refit_every,
    )


# Module level: picklable. Planted failures to compare the fallbacks of both engines.
class NanLongSteps(statistical.ThetaForecaster):
    """Updates fail beyond 10 steps at about a third of the origins (fits never fail)."""

    def _forecast_path(self, log_window, fitted_window, steps):
        path = super()._forecast_path(log_window, fitted_window, steps)
        if not fitted_window and int(abs(log_window[-1]) * 1e6) % 3 == 0:
            path = path.copy()
            path[10:] = np.nan
        return path


class BrokenEstimate(statistical.ThetaForecaster):
    def _estimate(self, log_window):
        raise RuntimeError("planted estimation failure")


STATISTICAL = {
    "arima": statistical.ArimaModel,
    "ets": statistical.EtsModel,
    "theta": statistical.ThetaForecaster,
}


def build_model(spec: ModelSpec):
    """`registry.build_model` for the statistical families (spawned workers import less)."""
    return STATISTICAL[spec.family](spec)


def build_planted(spec: ModelSpec):
    if spec.name == "theta_nan":
        return NanLongSteps(spec)
    if spec.name == "theta_broken":
        return BrokenEstimate(spec)
    return build_model(spec)


def per_horizon_engine(frame, specs, plans, build=build_model, spec_horizons=None):
    """What the platform runs today: one `run_walk_forward` per horizon."""
    parts = []
    for h in THREE:
        here = [s for s in specs if spec_horizons is None or h in spec_horizons[s.name]]
        sub = frame.filter(pl.col("horizon") == h)
        parts.append(run_walk_forward(sub, here, build, plans[h]))
    return pl.concat(parts)


def live_plan(frame: pl.DataFrame) -> OriginPlan:
    """8 grid origins (every 24 rows) and the live origin: statsmodels fits are slow."""
    dates = frame["date"].unique().sort()
    plan = walk_forward_origins(dates, 5, n_origins=6, span=120, end_offset=5, n_burn_in=2)
    return with_live_origin(plan, dates[-1])


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame(700, THREE, seed=3)


def count_estimates(monkeypatch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cls in (statistical.ArimaModel, statistical.EtsModel, statistical.ThetaForecaster):
        original = cls._estimate

        def counted(self, log_window, _original=original):
            counts[self.spec.name] = counts.get(self.spec.name, 0) + 1
            return _original(self, log_window)

        monkeypatch.setattr(cls, "_estimate", counted)
    return counts


def test_shared_oof_equals_the_per_horizon_engine(frame):
    plan = live_plan(frame)
    specs = [
        stat("arima", refit_every=3),
        stat("ets", refit_every=4),
        stat("theta", theta=3.0),
    ]
    expected = per_horizon_engine(frame, specs, dict.fromkeys(THREE, plan))
    lines: list[str] = []
    shared = run_shared_walk_forward(frame, specs, plan, progress=lines.append)  # registry models
    assert shared.schema == pl.Schema(OOF_SCHEMA)
    assert_frame_equal(shared, expected, check_exact=False, rel_tol=0, abs_tol=1e-10)
    assert shared["forecast_logret"].null_count() == 0
    assert shared["fallback_reason"].null_count() == shared.height
    # The test can tell a wrong step, window or fit apart: the horizons differ, and most
    # origins forecast from an earlier fit over newer closes.
    pivot = shared.filter(pl.col("model") == "arima").pivot(
        "horizon", index="origin", values="forecast_logret"
    )
    assert (pivot["1w"] - pivot["1m"]).abs().min() > 1e-6
    assert (pivot["1m"] - pivot["3m"]).abs().min() > 1e-6
    reused = shared.filter(pl.col("fitted_at") != pl.col("origin"))
    assert set(reused["model"].unique()) == {"arima", "ets"}
    live = shared.filter(pl.col("role") == "live")
    assert (live["fitted_at"] == live["origin"]).all()  # the live origin always refits
    assert len(lines) == len(specs) and all(line.endswith("s") for line in lines)


def test_one_estimate_per_origin_whatever_the_number_of_horizons(frame, monkeypatch):
    counts = count_estimates(monkeypatch)
    dates = frame["date"].unique().sort()
    plans = {  # 1m on another grid: the fit dates are the union of the horizons' refits
        "1w": live_plan(frame),
        "1m": with_live_origin(
            walk_forward_origins(dates, 21, n_origins=5, span=100, n_burn_in=1), dates[-1]
        ),
        "3m": live_plan(frame),
    }
    specs = [stat("theta"), stat("ets", refit_every=2)]
    horizons_of = {"theta": list(THREE), "ets": ["1w", "1m"]}
    expected = per_horizon_engine(frame, specs, plans, spec_horizons=horizons_of)
    engine_counts = dict(counts)
    counts.clear()
    frames = {h: frame.filter(pl.col("horizon") == h) for h in THREE}
    shared = run_shared_walk_forward(
        frames, specs, plans, spec_horizons=horizons_of, build_model=build_model
    )
    assert_frame_equal(shared, expected, check_exact=False, rel_tol=0, abs_tol=1e-10)
    assert shared.filter(pl.col("model") == "ets")["horizon"].unique().sort().to_list() == [
        "1m",
        "1w",
    ]

    def refit_dates(model: str, horizons) -> set:
        rows = shared.filter(pl.col("model") == model, pl.col("horizon").is_in(horizons))
        return set(rows.filter(pl.col("fitted_at") == pl.col("origin"))["origin"].to_list())

    for name, hs in horizons_of.items():
        per_h = sum(len(refit_dates(name, [h])) for h in hs)
        assert engine_counts[name] == per_h
        assert counts[name] == len(refit_dates(name, hs)) < per_h
    n_origins = len(set(plans["1w"].dates) | set(plans["1m"].dates))
    assert counts["theta"] == n_origins  # refit_every=1: one estimate per origin date


def test_fallbacks_reach_every_horizon_as_in_the_engine(frame):
    plan = live_plan(frame)
    specs = [
        stat("theta_short", "theta", window=1500, min_obs=1000),  # 700 closes: skipped
        stat("theta_broken", "theta"),
        stat("theta_nan", "theta", refit_every=3),
    ]
    expected = per_horizon_engine(frame, specs, dict.fromkeys(THREE, plan), build=build_planted)
    shared = run_shared_walk_forward(frame, specs, plan, build_model=build_planted)
    assert_frame_equal(shared, expected, check_exact=False, rel_tol=0, abs_tol=1e-10)
    for name, pattern in [
        ("theta_short", r"^fit skipped: \d+ closes < min_obs 1000 -> random walk$"),
        ("theta_broken", "^fit failed: RuntimeError: planted estimation failure -> random walk$"),
    ]:
        rows = shared.filter(pl.col("model") == name)
        assert rows["horizon"].unique().sort().to_list() == sorted(THREE)
        assert rows.height == 3 * plan.n_origins
        assert rows["fallback_reason"].str.contains(pattern).all()
        assert (rows["forecast_logret"] == 0.0).all()
    nan = shared.filter(pl.col("model") == "theta_nan")
    flagged = nan.filter(pl.col("fallback_reason").is_not_null())
    assert nan.filter(pl.col("horizon") == "1w")["fallback_reason"].null_count() == len(plan.dates)
    assert set(flagged["horizon"]) == {"1m", "3m"}
    assert flagged["fallback_reason"].str.starts_with("update failed: FloatingPointError").all()


def test_a_non_statistical_spec_is_refused_by_name(frame):
    specs = [stat("theta"), ModelSpec("lgbm_fast", "lightgbm", "tree")]
    with pytest.raises(ValueError, match="lgbm_fast"):
        run_shared_walk_forward(frame, specs, live_plan(frame))


def test_different_closes_across_horizons_are_refused(frame):
    frames = {h: frame.filter(pl.col("horizon") == h) for h in THREE}
    frames["1m"] = frames["1m"].with_columns(
        price=pl.when(pl.int_range(pl.len()) == 100).then(1.0).otherwise(pl.col("price"))
    )
    with pytest.raises(ValueError, match="closes differ at row 100"):
        run_shared_walk_forward(frames, [stat("theta")], live_plan(frame))


def test_two_workers_match_one(frame):
    plan = live_plan(frame)
    specs = [stat("theta"), stat("theta_3", "theta", refit_every=3, theta=3.0)]
    serial = run_shared_walk_forward(frame, specs, plan, build_model=build_model)
    parallel = run_shared_walk_forward(frame, specs, plan, build_model=build_model, n_workers=2)
    assert_frame_equal(serial, parallel)


def test_statistical_models_have_no_explanations():
    from cbi_platform.explain.shap_tables import SHAP_TABLE_SCHEMA

    assert empty_explanations().height == 0
    assert empty_explanations().schema == pl.Schema(SHAP_TABLE_SCHEMA)


def test_forecast_horizons_is_predict_horizon_by_horizon():
    from cbi_platform.models.base import FitData

    rng = np.random.default_rng(5)
    prices = 40 * np.exp(np.cumsum(rng.normal(0.0005, 0.015, 400)))
    days = [HORIZONS["1w"], HORIZONS["3m"], HORIZONS["12m"]]
    for family in ("arima", "ets", "theta"):
        spec = stat(family)
        shared = build_model(spec).fit_horizons(prices[:300], days)
        for end in (300, 330):
            values = shared.forecast_horizons(prices[:end])
            for h in days:
                data = FitData(np.zeros((1, 0)), np.zeros(1), prices[:300], h, [])
                single = build_model(spec).fit(data).predict(None, prices[:end])[0]
                assert values[h] == single, (family, end, h)


def test_shared_member_predictions_follows_the_registry_horizons(frame):
    from cbi_platform.evaluation.horizon_run import ProtocolConfig
    from cbi_platform.evaluation.shared_fits import shared_member_predictions
    from cbi_platform.settings import Protocol

    dates = frame["date"].unique().sort()
    protocol = Protocol(
        anchor=dates[-6],
        span=120,
        n_scored=6,
        end_offset=5,
        n_development=2,
        n_calibration=0,
        min_first_origin_row=0,
    )
    cfg = ProtocolConfig(protocol=protocol, n_workers=1)
    frames = {h: frame.filter(pl.col("horizon") == h) for h in ("1w", "3m")}
    oof, shap, plans = shared_member_predictions(frames, cfg, specs=[stat("ets")])
    assert set(plans) == {"1w", "3m"} and plans["1w"].role[-1] == "live"
    assert oof["horizon"].unique().to_list() == ["1w"]  # specs.yaml runs ets at 1w and 1m only
    assert oof.height == plans["1w"].n_origins and shap.height == 0
