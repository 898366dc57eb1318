"""Walk-forward origins and out-of-fold predictions: no fold may see its own future."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbi_platform.evaluation.metrics import leaderboard
from cbi_platform.evaluation.origins import DEVELOPMENT, SCORED, walk_forward_origins
from cbi_platform.evaluation.walk_forward import (
    OOF_SCHEMA,
    LookAheadError,
    RegimeRowFilter,
    run_walk_forward,
)
from cbi_platform.features.contract import HORIZONS
from cbi_platform.models.base import FitData, ModelSpec

ZL_FILE = Path(__file__).resolve().parents[3] / "shared/data/cbot_soy_complex/ZL_1D.parquet"
PROTOCOL_SCORED = {5: 60, 21: 59, 63: 57, 126: 55, 252: 50}

# ---- small models (module level: picklable for the spawned workers) -----------------------

F_ROW, F_PRICE = 0, 1  # column positions of f_row and f_price in the test frame


class RandomWalk:
    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def fit(self, data: FitData) -> RandomWalk:
        return self

    def predict(self, X: np.ndarray, prices: np.ndarray) -> np.ndarray:
        return np.zeros(len(X))


class LeastSquares:
    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def fit(self, data: FitData) -> LeastSquares:
        X = np.column_stack([np.ones(len(data.X)), np.nan_to_num(data.X[:, 2:])])
        self.coef = np.linalg.lstsq(X, data.y, rcond=None)[0]
        return self

    def predict(self, X: np.ndarray, prices: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(X)), np.nan_to_num(X[:, 2:])]) @ self.coef


class TrainingRecorder:
    """Checks what it is given and predicts an encoding of its training window.

    f_row is the row index, so the model knows exactly which rows trained it. It predicts
    (max training row + 1) * 1e-7: the output reveals which fit produced each forecast.
    """

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def fit(self, data: FitData) -> TrainingRecorder:
        rows = data.X[:, F_ROW].astype(int)
        origin_row = len(data.prices) - 1  # prices run up to and including the fit's origin
        assert rows.max() <= origin_row - data.horizon_days, "training row inside the embargo"
        assert rows.min() == 0, "the window should expand from the first row"
        self.max_row = int(rows.max())
        return self

    def predict(self, X: np.ndarray, prices: np.ndarray) -> np.ndarray:
        assert len(prices) == int(X[0, F_ROW]) + 1, "prices must end at the origin"
        assert prices[-1] == X[0, F_PRICE], "last price must be the origin's price"
        return np.array([(self.max_row + 1) * 1e-7])


class MemorizingOracle:
    """Cheats if it can: remembers every training target and looks the origin's up."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def fit(self, data: FitData) -> MemorizingOracle:
        self.memory = dict(zip(data.X[:, F_ROW].astype(int).tolist(), data.y, strict=True))
        return self

    def predict(self, X: np.ndarray, prices: np.ndarray) -> np.ndarray:
        return np.array([self.memory.get(int(X[0, F_ROW]), 0.0)])


def bull_row(rows: np.ndarray) -> np.ndarray:
    return (rows // 50) % 2 == 0


class RegimeShare:
    """Predicts the share of its training rows that are 'bull' rows (see `bull_row`)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def fit(self, data: FitData) -> RegimeShare:
        self.share = float(bull_row(data.X[:, F_ROW].astype(int)).mean())
        return self

    def predict(self, X: np.ndarray, prices: np.ndarray) -> np.ndarray:
        return np.array([self.share])


class WeightMean:
    """Predicts the mean sample weight it was trained with (-1 when unweighted)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def fit(self, data: FitData) -> WeightMean:
        w = data.sample_weight
        self.value = -1.0 if w is None else float(np.mean(w))
        return self

    def predict(self, X: np.ndarray, prices: np.ndarray) -> np.ndarray:
        return np.array([self.value])


FAMILIES = {
    "random_walk": RandomWalk,
    "least_squares": LeastSquares,
    "recorder": TrainingRecorder,
    "oracle": MemorizingOracle,
    "regime_share": RegimeShare,
    "weight_mean": WeightMean,
}


def build_test_model(spec: ModelSpec):
    return FAMILIES[spec.family](spec)


def spec(name: str, family: str | None = None, **kw) -> ModelSpec:
    return ModelSpec(name=name, family=family or name, kind="benchmark", **kw)


# ---- a small contract frame -------------------------------------------------------------


def business_days(n: int, start: str = "2005-01-03") -> list[dt.date]:
    days = np.busday_offset(np.datetime64(start), np.arange(n), roll="forward")
    return days.astype("datetime64[D]").astype(dt.date).tolist()


def make_frame(n_rows: int = 700, horizons: tuple[str, ...] = ("1w",), seed: int = 0):
    rng = np.random.default_rng(seed)
    price = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, n_rows)))
    base = pl.DataFrame(
        {
            "date": business_days(n_rows, "2015-01-05"),
            "price": price,
            "f_row": np.arange(n_rows, dtype=np.float64),
            "f_price": price,
            "f_noise": rng.normal(size=n_rows),
        }
    ).with_columns(f_mom=(pl.col("price") / pl.col("price").shift(5)).log().fill_null(0.0))
    parts = []
    for h in horizons:
        hd = HORIZONS[h]
        parts.append(
            base.with_columns(
                horizon=pl.lit(h),
                horizon_days=pl.lit(hd),
                target_date=pl.col("date").shift(-hd),
                target_price=pl.col("price").shift(-hd),
            ).with_columns(target_logret=(pl.col("target_price") / pl.col("price")).log())
        )
    cols = ["date", "horizon", "horizon_days", "price", "target_date", "target_price"]
    cols += ["target_logret", "f_row", "f_price", "f_noise", "f_mom"]
    return pl.concat(parts).select(cols)


def small_plan(frame: pl.DataFrame, horizon_days: int = 5):
    dates = frame["date"].unique().sort()
    return walk_forward_origins(
        dates, horizon_days, n_origins=12, span=240, end_offset=5, n_burn_in=6
    )


# ---- origins ------------------------------------------------------------------------------


def test_origins_reproduce_the_protocol_counts_on_5000_rows():
    dates = business_days(5000)
    plans = {h: walk_forward_origins(dates, h) for h in PROTOCOL_SCORED}
    assert {h: p.n_scored for h, p in plans.items()} == PROTOCOL_SCORED
    first = plans[5]
    assert all(p.dates == first.dates for p in plans.values())  # same origins every horizon
    assert first.n_origins == 90
    assert first.role == (DEVELOPMENT,) * 30 + (SCORED,) * 60
    last = len(dates) - 1
    assert first.index[-1] == last - 5
    assert first.index[30] == last - 5 - 1511  # the scored origins span exactly 1,512 rows
    assert set(np.diff(first.index).tolist()) == {25, 26}
    assert first.spacing_days == pytest.approx(1511 / 59)


def test_origin_rule_matches_the_documented_formula():
    dates = business_days(3000)
    plan = walk_forward_origins(dates, 21, n_origins=17, span=400, end_offset=3, n_burn_in=9)
    end = len(dates) - 1 - 3
    expected = []
    for m in range(17 + 9 - 1, -1, -1):  # round half up of (span - 1) * m / (n - 1), exactly
        offset = Fraction(399 * m, 16)
        expected.append(end - int(offset + Fraction(1, 2)))
    assert list(plan.index) == expected
    assert plan.dates == tuple(dates[i] for i in expected)
    assert plan.for_horizon(252).target_known == tuple(i + 252 <= len(dates) - 1 for i in expected)


def test_origins_refuse_a_series_too_short():
    with pytest.raises(ValueError, match="too few"):
        walk_forward_origins(business_days(1600), 5)
    with pytest.raises(ValueError, match="strictly increasing"):
        walk_forward_origins(business_days(3000)[::-1], 5)


@pytest.mark.skipif(not ZL_FILE.exists(), reason="shared ZL data absent")
def test_origins_on_the_real_zl_series():
    raw = pl.read_parquet(ZL_FILE)
    dates = raw.select((pl.col("datetime") + pl.duration(hours=6)).dt.date())["datetime"]
    counts = {h: walk_forward_origins(dates, h).n_scored for h in PROTOCOL_SCORED}
    assert counts == PROTOCOL_SCORED


# ---- the walk-forward -----------------------------------------------------------------


def test_no_fold_sees_its_future():
    frame = make_frame(horizons=("1w", "1m", "3m"))
    plan = small_plan(frame)
    oof = run_walk_forward(frame, [spec("recorder")], build_test_model, plan)
    assert oof.columns == list(OOF_SCHEMA)
    assert oof.height == 3 * plan.n_origins
    for (h,), part in oof.partition_by("horizon", as_dict=True).items():
        hd = HORIZONS[h]
        max_train_row = np.rint(part["forecast_logret"].to_numpy() * 1e7).astype(int) - 1
        origin_row = part["origin_row"].to_numpy()
        # the last training row is exactly h rows before the origin: embargo h, window expanding
        np.testing.assert_array_equal(origin_row - max_train_row, hd)
        dates = frame.filter(pl.col("horizon") == h)["target_date"].to_list()
        max_target = [dates[r] for r in max_train_row]
        assert all(t <= o for t, o in zip(max_target, part["origin"].to_list(), strict=True))
        np.testing.assert_array_equal(part["n_train"].to_numpy(), origin_row - hd + 1)


def test_memorizing_oracle_cannot_read_the_origin_target():
    frame = make_frame(horizons=("1m",))
    plan = small_plan(frame)
    oracle = MemorizingOracle(spec("oracle"))
    full = frame.filter(pl.col("target_logret").is_not_null())
    X = full.select("f_row", "f_price", "f_noise", "f_mom").to_numpy()
    oracle.fit(FitData(X, full["target_logret"].to_numpy(), np.ones(1), 21, []))
    assert oracle.predict(X[100:101], np.ones(1))[0] == full["target_logret"][100]  # it can cheat
    oof = run_walk_forward(frame, [spec("oracle")], build_test_model, plan)
    assert (oof["forecast_logret"] == 0.0).all()  # ...but never found its origin's target


def test_random_walk_forecast_is_the_price_and_actual_is_the_target():
    frame = make_frame(horizons=("1m",))
    plan = small_plan(frame, 21)
    oof = run_walk_forward(frame, [spec("random_walk")], build_test_model, plan)
    assert (oof["forecast"] == oof["price"]).all()
    by_date = dict(zip(frame["date"].to_list(), frame["target_price"].to_list(), strict=True))
    assert oof["actual"].to_list() == [by_date[d] for d in oof["origin"].to_list()]
    known = oof["actual"].is_not_null().to_numpy()
    np.testing.assert_array_equal(known, np.asarray(plan.target_known))
    assert oof["role"].to_list() == list(plan.role)


def test_refit_schedule_is_honoured_and_no_model_is_used_before_its_fit():
    frame = make_frame(horizons=("1w",))
    plan = small_plan(frame)
    oof = run_walk_forward(frame, [spec("recorder", refit_every=3)], build_test_model, plan)
    origins = oof["origin"].to_list()
    grid = plan.grid_index  # refits on the grid: the first origin, then every j % 3 == 0
    refits = [k for k in range(len(origins)) if k == 0 or grid[k] % 3 == 0]
    last_refit = [max(r for r in refits if r <= k) for k in range(len(origins))]
    expected = [origins[r] for r in last_refit]
    assert len(set(expected)) == len(refits) >= len(origins) // 3
    assert oof["fitted_at"].to_list() == expected
    assert all(f <= o for f, o in zip(oof["fitted_at"].to_list(), origins, strict=True))
    # the forecast at each origin came from the fit at fitted_at: its window ends h before it
    max_train_row = np.rint(oof["forecast_logret"].to_numpy() * 1e7).astype(int) - 1
    fit_row = oof["origin_row"].to_numpy()[last_refit]
    np.testing.assert_array_equal(max_train_row, fit_row - 5)


def test_naive_scale_is_the_in_sample_h_step_naive_mae():
    frame = make_frame(horizons=("1m",))
    plan = small_plan(frame, 21)
    oof = run_walk_forward(frame, [spec("random_walk")], build_test_model, plan)
    price = frame["price"].to_numpy()
    for row, scale in zip(oof["origin_row"].to_list(), oof["naive_scale"].to_list(), strict=True):
        pairs = np.arange(0, row - 21 + 1)  # i + h <= origin row
        assert scale == pytest.approx(np.mean(np.abs(price[pairs + 21] - price[pairs])))


def test_specialist_trains_only_on_rows_the_filter_allows():
    frame = make_frame(horizons=("1w",))
    plan = small_plan(frame)
    labels = pl.DataFrame(  # a (date, regime) table, shuffled: from_frame aligns it by date
        {
            "date": frame["date"],
            "regime": np.where(bull_row(np.arange(frame.height)), "bull", "bear"),
        }
    ).sample(fraction=1.0, shuffle=True, seed=0)
    specs = [spec("bull_only", "regime_share", regime="bull"), spec("all", "regime_share")]
    row_filter = RegimeRowFilter.from_frame(frame, labels)
    oof = run_walk_forward(frame, specs, build_test_model, plan, row_filter=row_filter)
    special = oof.filter(pl.col("model") == "bull_only")
    general = oof.filter(pl.col("model") == "all")
    assert (special["forecast_logret"] == 1.0).all()
    assert (general["forecast_logret"] < 0.8).all()
    rows = special["origin_row"].to_numpy()
    expected = [int(bull_row(np.arange(r - 5 + 1)).sum()) for r in rows]
    assert special["n_train"].to_list() == expected

    with pytest.raises(ValueError, match="row_filter"):
        run_walk_forward(frame, specs, build_test_model, plan)
    with pytest.raises(LookAheadError):  # a filter may only remove rows
        run_walk_forward(
            frame, specs, build_test_model, plan, row_filter=lambda s, m: np.ones_like(m)
        )


def test_specialist_without_enough_rows_forecasts_nothing():
    frame = make_frame(horizons=("1w",))
    plan = small_plan(frame)
    labels = np.full(frame.height, "normal", dtype=object)
    oof = run_walk_forward(
        frame,
        [spec("crisis_only", "regime_share", regime="crisis")],
        build_test_model,
        plan,
        row_filter=RegimeRowFilter(labels),
    )
    assert oof["forecast"].null_count() == oof.height
    assert oof["fitted_at"].null_count() == oof.height


def test_weights_reach_weighted_specs_only():
    frame = make_frame(horizons=("1w",))
    plan = small_plan(frame)
    weights = np.where(np.arange(frame.height) % 2 == 0, 1.0, 3.0)
    specs = [spec("w", "weight_mean", weighted=True), spec("u", "weight_mean")]
    oof = run_walk_forward(frame, specs, build_test_model, plan, weights=weights)
    assert (oof.filter(pl.col("model") == "u")["forecast_logret"] == -1.0).all()
    weighted = oof.filter(pl.col("model") == "w")
    expected = [weights[: r - 5 + 1].mean() for r in weighted["origin_row"].to_list()]
    np.testing.assert_allclose(weighted["forecast_logret"].to_numpy(), expected)
    with pytest.raises(ValueError, match="weights"):
        run_walk_forward(frame, specs, build_test_model, plan)


def test_a_frame_whose_target_is_not_after_its_date_is_refused():
    frame = make_frame(horizons=("1w",)).with_columns(target_date=pl.col("date"))
    with pytest.raises(ValueError, match="not after"):
        run_walk_forward(frame, [spec("random_walk")], build_test_model, small_plan(frame))


def test_two_workers_match_one_and_report_progress():
    frame = make_frame(horizons=("1w", "1m"))
    plan = small_plan(frame)
    labels = np.where(bull_row(np.arange(frame.height)), "bull", "bear")
    specs = [
        spec("random_walk"),
        spec("least_squares"),
        spec("recorder", refit_every=2),
        spec("bull_only", "regime_share", regime="bull", refit_every=4),
    ]
    kwargs = dict(plan=plan, row_filter=RegimeRowFilter(labels))
    lines: list[str] = []
    serial = run_walk_forward(frame, specs, build_test_model, progress=lines.append, **kwargs)
    parallel = run_walk_forward(frame, specs, build_test_model, n_workers=2, **kwargs)
    assert_frame_equal(serial, parallel)
    assert len(lines) == len(specs) * 2
    assert all(line.rstrip().endswith("s") for line in lines)
    assert serial.filter(pl.col("model") == "least_squares")["forecast"].null_count() == 0


def test_protocol_end_to_end_scores_60_59_57_55_50_origins():
    frame = make_frame(5000, tuple(HORIZONS))
    plan = walk_forward_origins(frame["date"].unique().sort(), 5)
    oof = run_walk_forward(
        frame, [spec("random_walk"), spec("least_squares")], build_test_model, plan
    )
    assert oof.group_by("horizon").agg(pl.col("origin").n_unique())[
        "origin"
    ].unique().to_list() == [90]
    board = leaderboard(oof).filter(pl.col("model") == "least_squares")
    assert board["n"].to_list() == [60, 59, 57, 55, 50]
    assert board["dm_lags"].to_list() == [0, 0, 2, 4, 9]
    assert board["effective_n"].to_list() == [60, 59, 19, 11, 5]


def test_live_origin_is_always_refitted_and_never_scored():
    from cbi_platform.evaluation.origins import LIVE, with_live_origin

    frame = make_frame()
    dates = frame["date"]
    plan = walk_forward_origins(dates, 5, n_origins=10, span=200, n_burn_in=0)
    live = with_live_origin(plan, dates[-1])
    assert live.role[-1] == LIVE and not live.target_known[-1] and live.index[-1] == len(dates) - 1
    spec = ModelSpec(name="ls", family="x", kind="tree", refit_every=4)
    oof = run_walk_forward(frame, [spec], LeastSquares, live)
    last = oof.filter(pl.col("role") == LIVE)
    assert last.height == 1 and last["actual"][0] is None
    assert last["fitted_at"][0] == dates[-1]  # refitted at the live origin, off its schedule
    assert leaderboard(oof)["n"].max() == 10  # the live origin is never scored


def test_live_origin_replaces_a_last_origin_on_the_last_date():
    from cbi_platform.evaluation.origins import LIVE, with_live_origin

    dates = make_frame()["date"]
    plan = walk_forward_origins(dates, 5, n_origins=10, span=200, end_offset=0, n_burn_in=0)
    live = with_live_origin(plan, dates[-1])
    assert live.n_origins == plan.n_origins and live.role[-1] == LIVE
    assert live.role.count(LIVE) == 1


def _twice(x: int) -> int:
    return 2 * x


def _walk_in_this_process(out) -> None:
    """Runs in a daemonic process, like a step in a Celery prefork pool child."""
    from cbi_platform.evaluation.walk_forward import in_spawned_process, may_start_processes

    try:
        frame = make_frame(horizons=("1w", "1m"))
        specs = [spec("random_walk"), spec("least_squares")]
        oof = run_walk_forward(frame, specs, build_test_model, small_plan(frame), n_workers=2)
        out.put(("ok", may_start_processes(), oof, in_spawned_process(_twice, 21)))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        out.put(("error", repr(exc), None, None))


def test_a_daemonic_process_runs_the_walk_forward_itself():
    """A step on a Celery worker runs in the prefork pool's daemonic child, which may not start
    processes: the networks' isolated fits and a 2-worker walk-forward failed there with
    "daemonic processes are not allowed to have children". They now run in that process, with
    the same forecasts."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_walk_in_this_process, args=(out,), daemon=True)
    child.start()
    status, detail, oof, twice = out.get(timeout=240)
    child.join(timeout=30)
    assert status == "ok", detail
    assert detail is False  # the child was daemonic: no process could be started there
    assert twice == 42
    frame = make_frame(horizons=("1w", "1m"))
    serial = run_walk_forward(
        frame, [spec("random_walk"), spec("least_squares")], build_test_model, small_plan(frame)
    )
    assert_frame_equal(serial, oof)
