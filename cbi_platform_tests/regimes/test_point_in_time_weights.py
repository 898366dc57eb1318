"""Training weights read the regime calendar point in time: nothing known only later counts."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_platform.evaluation.origins import protocol_origins, with_live_origin
from cbi_platform.evaluation.walk_forward import run_walk_forward
from cbi_platform.models.base import ModelSpec
from cbi_platform.regimes.calendar import (
    PointInTimeWeights,
    RegimeCalendar,
    RegimeWindow,
    load_regime_calendar,
)
from cbi_platform.settings import Protocol

DATES = pl.date_range(dt.date(2005, 1, 1), dt.date(2025, 12, 31), "1d", eager=True)


def _truncated(calendar: RegimeCalendar, t: dt.date) -> RegimeCalendar:
    """The calendar as a forecaster at t could have written it: windows known by t, ending by t."""
    kept = tuple(
        RegimeWindow(w.name, w.start, min(w.end, t), w.weight, w.known_from, w.source)
        for w in calendar.windows
        if w.known_from is not None and w.known_from <= t and w.start <= t
    )
    return RegimeCalendar(kept, calendar.default_name, calendar.default_weight)


@pytest.mark.parametrize(
    "origin",
    [
        dt.date(2008, 6, 30),
        dt.date(2017, 6, 1),
        dt.date(2018, 6, 1),
        dt.date(2020, 3, 20),
        dt.date(2024, 6, 13),
        dt.date(2025, 1, 2),
    ],
)
def test_weights_at_t_ignore_everything_the_calendar_says_after_t(origin):
    full = load_regime_calendar()
    np.testing.assert_array_equal(
        full.weights_at(DATES, origin), _truncated(full, origin).weights_at(DATES, origin)
    )


def test_a_window_counts_only_from_its_known_from_and_only_up_to_the_origin():
    cal = load_regime_calendar()
    trade_war = next(w for w in cal.windows if w.name == "trade_war")
    before = cal.weights_at(DATES, trade_war.known_from - dt.timedelta(days=1))
    after = cal.weights_at(DATES, trade_war.known_from)
    in_2017 = (DATES >= dt.date(2017, 1, 1)) & (DATES <= dt.date(2017, 12, 31))
    assert set(before[in_2017.to_numpy()]) == {cal.default_weight}  # today's code: x30 in 2017
    assert set(after[in_2017.to_numpy()]) == {trade_war.weight}
    later = (DATES > trade_war.known_from).to_numpy()
    assert np.all(after[later] != trade_war.weight) or not later.any()


def test_a_window_without_known_from_is_hindsight_and_gives_no_weight(tmp_path):
    path = tmp_path / "cal.yaml"
    path.write_text(
        "default: {name: h, weight: 1}\nwindows:\n"
        "  - {name: a, start: 2010-01-01, end: 2010-12-31, weight: 9}\n"
        "  - {name: b, start: 2012-01-01, end: 2012-12-31, weight: 7, known_from: 2012-02-01,"
        " source: an announcement}\n"
    )
    cal = load_regime_calendar(path)
    w = cal.weights_at(DATES, dt.date(2024, 1, 1))
    assert set(np.unique(w)) == {1.0, 7.0}
    assert cal.label(DATES)["regime_weight"].max() == 9  # the hindsight view (exports) keeps it


def test_known_from_needs_a_source(tmp_path):
    path = tmp_path / "cal.yaml"
    path.write_text(
        "default: {name: h, weight: 1}\nwindows:\n"
        "  - {name: a, start: 2010-01-01, end: 2010-12-31, weight: 9, known_from: 2010-02-01}\n"
    )
    with pytest.raises(ValueError, match="source"):
        load_regime_calendar(path)


def test_every_shipped_window_is_knowable_and_cites_its_source():
    for w in load_regime_calendar().windows:
        assert w.known_from is not None and w.known_from >= w.start and w.source


class WeightEcho:
    """Predicts the mean training weight: the forecast reveals the weights the fit saw."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def fit(self, data):
        self.mean_weight = float(np.mean(data.sample_weight))
        self.max_weight = float(np.max(data.sample_weight))
        return self

    def predict(self, X, prices):
        return np.array([self.max_weight * 1000 + self.mean_weight])


def build_echo(spec: ModelSpec):
    return WeightEcho(spec)


def test_walk_forward_weights_at_each_origin_do_not_depend_on_the_later_calendar():
    days = np.busday_offset(np.datetime64("2010-01-04"), np.arange(3200), roll="forward")
    dates = pl.Series("date", days.astype(dt.date).tolist(), dtype=pl.Date)
    price = 40 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, len(dates))))
    frame = pl.DataFrame({"date": dates, "price": price, "f_x": np.arange(len(dates), dtype=float)})
    frame = frame.with_columns(
        horizon=pl.lit("1m"),
        horizon_days=pl.lit(21),
        target_date=pl.col("date").shift(-21),
        target_price=pl.col("price").shift(-21),
    ).with_columns(target_logret=(pl.col("target_price") / pl.col("price")).log())
    protocol = Protocol(
        anchor=dates[-6],
        span=400,
        n_scored=16,
        end_offset=5,
        n_development=30,
        n_calibration=20,
        min_first_origin_row=300,
    )
    plan = with_live_origin(protocol_origins(dates, 21, protocol), dates[-1])
    spec = ModelSpec("echo", "echo", "tree", weighted=True)
    full = load_regime_calendar()
    cut = dt.date(2019, 1, 2)
    oof_full = run_walk_forward(
        frame, [spec], build_echo, plan, weights=PointInTimeWeights(full, dates)
    )
    oof_cut = run_walk_forward(
        frame, [spec], build_echo, plan, weights=PointInTimeWeights(_truncated(full, cut), dates)
    )
    early = pl.col("origin") <= cut
    a = oof_full.filter(early)["forecast_logret"].to_numpy()
    b = oof_cut.filter(early)["forecast_logret"].to_numpy()
    assert len(a) > 20
    np.testing.assert_array_equal(a, b)
    # and the calendar does matter once it is known: later origins see the trade_war weights
    assert not np.array_equal(
        oof_full.filter(~early)["forecast_logret"].to_numpy(),
        oof_cut.filter(~early)["forecast_logret"].to_numpy(),
    )
    # before trade_war's known_from (2018-04-04) no origin's fit saw its x30 weight
    pre = oof_full.filter(pl.col("origin") < dt.date(2018, 4, 4))
    assert (pre["forecast_logret"] < 1500 * 1000).all()
