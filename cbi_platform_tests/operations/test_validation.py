"""Live validation: scoring matured forecasts against the random walk, the monitors, the plot."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest

from cbi_platform.conditions import ACCURACY, COVERAGE, REGIME_FAILURE
from cbi_platform.operations.validation import (
    ValidationSettings,
    accuracy_conditions,
    coverage_conditions,
    regime_conditions,
    regime_coverage_monitor,
    rolling_summary,
    score_matured,
    summary,
    top_driver,
    validation_plot,
)

START = dt.date(2022, 1, 3)


def business_days(n: int, start: dt.date = START) -> list[dt.date]:
    out, day = [], start
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += dt.timedelta(days=1)
    return out


def price_frame(values, dates=None) -> pl.DataFrame:
    dates = dates or business_days(len(values))
    return pl.DataFrame({"date": dates, "value": [float(v) for v in values]})


def wavy_prices(n: int = 400) -> pl.DataFrame:
    """Deterministic closes with visible moves both ways."""
    t = np.arange(n)
    return price_frame(1000.0 + 80.0 * np.sin(t / 9.0) + 30.0 * np.cos(t / 2.3) + 0.4 * t)


def forecast_row(as_of, target_date, price, forecast, horizon="1w", **extra) -> dict:
    row = {
        "as_of": as_of,
        "horizon": horizon,
        "model_version": "v1",
        "target_date": target_date,
        "price": float(price),
        "forecast": float(forecast),
        "p10": None,
        "p30": None,
        "p50": None,
        "p70": None,
        "p90": None,
        "lo90": None,
        "hi90": None,
        "regime": "normal",
        "drivers_detail": None,
        "role": "served",
    }
    row.update(extra)
    return row


def history_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col(c).cast(pl.Float64) for c in ("p10", "p30", "p50", "p70", "p90", "lo90", "hi90")
    )


def daily_history(
    prices: pl.DataFrame, horizon: str, first: int, last: int, forecast, zone=None, **extra
) -> pl.DataFrame:
    """One forecast per close index in [first, last]: forecast(price, actual) -> point; zone
    (price, actual, i) -> (lo, hi) used for both the 80% and the 90% zone."""
    h = {"1w": 5, "1m": 21}[horizon]
    dates, values = prices["date"].to_list(), prices["value"].to_list()
    rows = []
    for i in range(first, last + 1):
        target = i + h
        actual = values[target] if target < len(values) else values[i]
        lo_hi = zone(values[i], actual, i) if zone else (None, None)
        target_date = dates[target] if target < len(dates) else dates[-1] + dt.timedelta(7)
        rows.append(
            forecast_row(
                dates[i],
                target_date,
                values[i],
                forecast(values[i], actual),
                horizon,
                p10=lo_hi[0],
                p90=lo_hi[1],
                lo90=lo_hi[0],
                hi90=lo_hi[1],
                **extra,
            )
        )
    return history_frame(rows)


# ---- scoring ----------------------------------------------------------------------------


def test_actual_on_a_holiday_is_the_last_close_before_never_after():
    dates = business_days(12)
    holiday = dates[8]
    prices = price_frame([100 + i for i in range(12)], dates).filter(pl.col("date") != holiday)
    history = history_frame(
        [
            forecast_row(dates[3], holiday, 103.0, 110.0),  # target on the holiday
            forecast_row(dates[4], dates[9], 104.0, 110.0),  # normal day
        ]
    )
    scored = score_matured(history, prices).sort("as_of")
    holiday_row = scored.row(0, named=True)
    assert holiday_row["actual_date"] == dates[7]
    assert holiday_row["actual"] == 107.0  # the close before, not 109 after the holiday
    assert scored["actual"].to_list() == [107.0, 109.0]
    assert scored["error"].to_list() == [3.0, 1.0]
    assert scored["rw_abs_error"].to_list() == [4.0, 5.0]
    assert scored["ape"][0] == pytest.approx(3.0 / 107.0 * 100.0)


def test_immature_forecasts_are_excluded():
    prices = price_frame([100.0 + i for i in range(10)])
    dates = prices["date"].to_list()
    history = history_frame(
        [
            forecast_row(dates[2], dates[7], 102, 105),
            forecast_row(dates[6], dates[9], 106, 105),  # matures on the last close: in
            forecast_row(dates[8], dates[9] + dt.timedelta(days=3), 108, 105),  # not yet
        ]
    )
    scored = score_matured(history, prices)
    assert scored["as_of"].to_list() == [dates[2], dates[6]]
    # judged on an earlier day, the second one is not matured either
    assert len(accuracy_conditions(scored, dates[8], ValidationSettings(min_matured=2))) == 0
    assert len(accuracy_conditions(scored, dates[9], ValidationSettings(min_matured=2))) == 1


def test_roles_served_includes_null_and_excludes_shadow():
    prices = price_frame([100.0 + i for i in range(12)])
    d = prices["date"].to_list()
    history = history_frame(
        [
            forecast_row(d[1], d[6], 101, 106, role="served"),
            forecast_row(d[2], d[7], 102, 106, role=None),
            forecast_row(d[3], d[8], 103, 99, role="shadow", model_version="v2"),
        ]
    )
    assert score_matured(history, prices)["as_of"].to_list() == [d[1], d[2]]
    assert score_matured(history, prices, role="shadow")["as_of"].to_list() == [d[3]]
    assert score_matured(history, prices, role=None).height == 3
    assert score_matured(history.drop("role"), prices).height == 3  # before roles: served


def test_naive_scale_and_hand_computed_rel_mae():
    values = [100.0, 102.0, 101.0, 105.0, 104.0, 108.0, 111.0, 107.0, 111.0, 115.0, 112.0, 116.0]
    prices = price_frame(values)
    d = prices["date"].to_list()
    # h = 5: index 4 has 5 closes (< h + 1: no scale); 5 and 6 have one and two h-step pairs
    history = history_frame(
        [
            forecast_row(d[4], d[9], values[4], 111.0),  # actual 115
            forecast_row(d[5], d[10], values[5], 110.0),  # actual 112
            forecast_row(d[6], d[11], values[6], 119.0),  # actual 116
        ]
    )
    scored = score_matured(history, prices).sort("as_of")
    assert scored["naive_scale"][0] is None
    assert scored["naive_scale"][1] == pytest.approx(8.0)  # |108 - 100|
    assert scored["naive_scale"][2] == pytest.approx((8.0 + 9.0) / 2)  # + |111 - 102|
    # errors: -4, -2, +3; random walk: |104 - 115| = 11, |108 - 112| = 4, |111 - 116| = 5
    s = summary(scored, ["horizon"]).row(0, named=True)
    assert s["n"] == 3
    assert s["mae"] == pytest.approx(3.0)
    assert s["rw_mae"] == pytest.approx(20.0 / 3.0)
    assert s["rel_mae"] == pytest.approx(9.0 / 20.0)
    assert s["mase"] == pytest.approx((2.0 / 8.0 + 3.0 / 8.5) / 2)  # null scale left out
    assert s["mape"] == pytest.approx((4 / 115 + 2 / 112 + 3 / 116) / 3 * 100)
    assert s["bias"] == pytest.approx(-1.0)


def test_random_walk_model_has_rel_mae_one():
    prices = wavy_prices()
    history = daily_history(prices, "1w", 100, 300, lambda p, a: p)
    scored = score_matured(history, prices)
    s = summary(scored, ["horizon"]).row(0, named=True)
    assert s["rel_mae"] == pytest.approx(1.0)
    assert s["n"] == 201
    roll = rolling_summary(scored, window=20)
    assert roll["rel_mae"].to_numpy() == pytest.approx(np.ones(roll.height))
    assert all(not c.firing for c in accuracy_conditions(scored, prices["date"].max()))


def test_rolling_summary_windows():
    prices = wavy_prices()
    history = daily_history(prices, "1w", 100, 160, lambda p, a: a + 2.0 * (a > p) - 1.0)
    scored = score_matured(history, prices)
    roll = rolling_summary(scored, window=10)
    assert roll.height == 61
    assert roll["n"].to_list()[:3] == [1, 2, 3] and set(roll["n"].to_list()[9:]) == {10}
    ordered = scored.sort("target_date")
    for k in (0, 5, 30, 60):
        window = ordered.slice(max(0, k - 9), min(10, k + 1))
        expected = summary(window, ["horizon"]).row(0, named=True)
        got = roll.row(k, named=True)
        assert got["target_date"] == ordered["target_date"][k]
        for m in ("n", "mae", "rw_mae", "rel_mae", "mase", "mape", "bias"):
            assert got[m] == pytest.approx(expected[m]), m


def test_biased_model_trips_accuracy_and_good_one_does_not():
    prices = wavy_prices()
    as_of = prices["date"].max()
    settings = ValidationSettings()
    rw_move = (prices["value"].shift(-5) - prices["value"]).abs().drop_nulls().mean()
    biased = daily_history(prices, "1w", 100, 300, lambda p, a: a + 3.0 * rw_move)
    good = daily_history(prices, "1w", 100, 300, lambda p, a: 0.7 * a + 0.3 * p)
    (bad_c,) = accuracy_conditions(score_matured(biased, prices), as_of, settings, link="run/1")
    (good_c,) = accuracy_conditions(score_matured(good, prices), as_of, settings)
    assert bad_c.firing and bad_c.kind == ACCURACY and bad_c.key == "accuracy/1w"
    assert bad_c.link == "run/1" and bad_c.horizon == "1w" and bad_c.as_of == as_of
    assert bad_c.evidence["rel_mae"] > settings.rel_mae_alert
    for k in ("n", "window", "rel_mae", "mae", "rw_mae", "mape", "mase", "rule"):
        assert k in bad_c.evidence
    assert bad_c.evidence["n"] == settings.window
    assert not good_c.firing
    assert good_c.evidence["rel_mae"] == pytest.approx(0.3)


def test_accuracy_needs_min_matured_and_absolute_mape_rule():
    prices = wavy_prices()
    as_of = prices["date"].max()
    few = daily_history(prices, "1w", 100, 108, lambda p, a: p)  # 9 < min_matured
    assert accuracy_conditions(score_matured(few, prices), as_of) == []
    # a model slightly better than the random walk, but with a MAPE above 1%
    good = score_matured(
        daily_history(prices, "1w", 100, 300, lambda p, a: 0.9 * p + 0.1 * a), prices
    )
    assert good.sort("target_date").tail(20)["ape"].mean() > 1.0
    (off,) = accuracy_conditions(good, as_of, ValidationSettings())
    (on,) = accuracy_conditions(good, as_of, ValidationSettings(absolute_mape_1w=1.0))
    assert not off.firing and on.firing and "MAPE" in on.evidence["rule"]


def test_duplicate_served_issue_keeps_the_last():
    prices = price_frame([100.0 + i for i in range(10)])
    d = prices["date"].to_list()
    history = history_frame(
        [
            forecast_row(d[1], d[6], 101, 90.0, created_at=dt.datetime(2022, 1, 4, 9)),
            forecast_row(
                d[1], d[6], 101, 106.0, created_at=dt.datetime(2022, 1, 4, 18), model_version="v2"
            ),
        ]
    )
    scored = score_matured(history, prices)
    assert scored["forecast"].to_list() == [106.0]


# ---- coverage, buckets, drivers ---------------------------------------------------------


def test_zone_hits_and_coverage_with_null_zones():
    prices = price_frame([100.0 + i for i in range(12)])
    d = prices["date"].to_list()
    history = history_frame(
        [
            # actual 106: inside both zones (bounds inclusive)
            forecast_row(d[1], d[6], 101, 105, p10=106.0, p90=107.0, lo90=100.0, hi90=106.0),
            # actual 107: outside 80%, inside 90%
            forecast_row(d[2], d[7], 102, 105, p10=100.0, p90=106.0, lo90=99.0, hi90=110.0),
            # actual 108: outside both
            forecast_row(d[3], d[8], 103, 105, p10=100.0, p90=104.0, lo90=99.0, hi90=105.0),
            # no zones: stays null and counts in neither coverage
            forecast_row(d[4], d[9], 104, 105),
            # only a lower 90% bound: still null
            forecast_row(d[5], d[10], 105, 105, p10=1.0, p90=None, lo90=1.0, hi90=None),
        ]
    )
    scored = score_matured(history, prices).sort("as_of")
    assert scored["in80"].to_list() == [True, False, False, None, None]
    assert scored["in90"].to_list() == [True, True, False, None, None]
    s = summary(scored, ["horizon"]).row(0, named=True)
    assert s["n"] == 5 and s["n_zones"] == 3
    assert s["coverage80"] == pytest.approx(1 / 3)
    assert s["coverage90"] == pytest.approx(2 / 3)
    roll = rolling_summary(scored, window=4).row(-1, named=True)
    assert roll["n"] == 4 and roll["n_zones"] == 2 and roll["coverage90"] == pytest.approx(0.5)


def test_coverage_conditions():
    prices = wavy_prices()
    as_of = prices["date"].max()

    def zone_missing_every_third(p, a, i):
        return (a - 1.0, a + 1.0) if i % 3 else (a + 1.0, a + 2.0)

    def zone_always(p, a, i):
        return (a - 1.0, a + 1.0)

    bad = score_matured(
        daily_history(prices, "1w", 100, 300, lambda p, a: p, zone_missing_every_third), prices
    )
    fine = score_matured(daily_history(prices, "1w", 100, 300, lambda p, a: p, zone_always), prices)
    no_zones = score_matured(daily_history(prices, "1w", 100, 300, lambda p, a: p), prices)
    (c_bad,) = coverage_conditions(bad, as_of, {"1w": 0.91}, link="x")
    (c_fine,) = coverage_conditions(fine, as_of, {"1w": 0.91})
    assert c_bad.firing and c_bad.kind == COVERAGE and c_bad.key == "coverage/1w"
    assert c_bad.evidence["coverage90"] < 0.81 and c_bad.evidence["achieved"] == 0.91
    assert not c_fine.firing
    assert coverage_conditions(no_zones, as_of, {"1w": 0.9}) == []
    # no achieved figure: judged against the nominal 90%
    (nominal,) = coverage_conditions(bad, as_of, {})
    assert nominal.evidence["achieved_source"] == "nominal" and nominal.firing


def test_move_buckets():
    # 100 closes alternating +-1% daily log returns: sd of the last 63 returns at index 99
    n = 100
    rets = np.array([0.01 if i % 2 else -0.01 for i in range(1, n)])
    base = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(rets)]))
    sd = np.std(np.diff(np.log(base))[-63:], ddof=1)
    one_sd = math.sqrt(5) * sd
    dates = business_days(n + 5)
    buckets = {}
    for multiple, name in ((0.2, "small"), (1.0, "medium"), (2.0, "large"), (-2.0, "large_down")):
        tail = base[-1] * np.exp(multiple * one_sd) * np.ones(5)
        prices = price_frame(np.concatenate([base, tail]), dates)
        history = history_frame([forecast_row(dates[n - 1], dates[n + 4], base[-1], base[-1])])
        row = score_matured(history, prices).row(0, named=True)
        assert row["move"] == pytest.approx(multiple * one_sd)
        assert row["move_sd"] == pytest.approx(one_sd)
        buckets[name] = row["move_bucket"]
    assert buckets == {
        "small": "small",
        "medium": "medium",
        "large": "large",
        "large_down": "large",
    }
    # fewer than 63 returns before as_of: no bucket
    short = price_frame(base[:40])
    d = short["date"].to_list()
    history = history_frame([forecast_row(d[30], d[35], base[30], base[30])])
    assert score_matured(history, short)["move_bucket"].to_list() == [None]


def test_top_driver_parsing():
    detail = [
        {"feature": "crude", "value": 1.0, "contribution_pct": 30.0, "model": "m", "used": True},
        {"feature": "palm", "value": 2.0, "contribution_pct": -45.0, "model": "m", "used": True},
        {"feature": "dxy", "value": 3.0, "contribution_pct": 90.0, "model": "m", "used": False},
        {"feature": "cot", "value": 4.0, "contribution_pct": None, "model": "m", "used": True},
    ]
    assert top_driver(json.dumps(detail)) == "palm"  # largest |pct| among used drivers
    assert top_driver(detail) == "palm"
    assert top_driver(json.dumps(json.dumps(detail))) == "palm"
    assert top_driver(None) is None
    assert top_driver("not json") is None
    assert top_driver("[]") is None
    assert top_driver(json.dumps([detail[2]])) is None  # only an unused driver

    prices = price_frame([100.0 + i for i in range(10)])
    d = prices["date"].to_list()
    history = history_frame(
        [
            forecast_row(d[1], d[6], 101, 100, drivers_detail=json.dumps(detail)),
            forecast_row(d[2], d[7], 102, 100, drivers_detail=None),
        ]
    )
    scored = score_matured(history, prices).sort("as_of")
    assert scored["top_driver"].to_list() == ["palm", None]
    by_driver = summary(scored, ["horizon", "top_driver"])
    assert by_driver["top_driver"].to_list() == ["palm", None]
    assert by_driver["n"].to_list() == [1, 1]


def test_summary_groupings():
    prices = wavy_prices()
    one_w = daily_history(prices, "1w", 100, 200, lambda p, a: 0.5 * (p + a), regime="bull")
    one_m = daily_history(prices, "1m", 100, 200, lambda p, a: p, regime="bear")
    scored = score_matured(pl.concat([one_w, one_m]), prices)
    by_h = summary(scored, ["horizon"])
    assert by_h["horizon"].to_list() == ["1w", "1m"]
    assert by_h["rel_mae"].to_list() == pytest.approx([0.5, 1.0])
    by_regime = summary(scored, ["horizon", "regime"])
    assert by_regime.select("horizon", "regime").rows() == [("1w", "bull"), ("1m", "bear")]
    by_move = summary(scored, ["horizon", "move_bucket"])
    assert by_move.filter(pl.col("horizon") == "1w")["move_bucket"].to_list() == [
        "small",
        "medium",
        "large",
    ]
    assert by_move["n"].sum() == scored.height
    empty = summary(scored.clear(), ["horizon", "regime"])
    assert empty.is_empty() and "rel_mae" in empty.columns


# ---- regime monitor ---------------------------------------------------------------------


def test_regime_monitor_flags_only_the_undercovering_regime():
    prices = wavy_prices()
    as_of = prices["date"].max()

    def zone(p, a, i):  # inside for every index except the crisis ones below
        return (a + 1.0, a + 2.0) if 150 <= i < 162 and i % 2 == 0 else (a - 1.0, a + 1.0)

    history = daily_history(prices, "1w", 100, 300, lambda p, a: p, zone).with_columns(
        regime=pl.when(pl.col("as_of").is_between(prices["date"][150], prices["date"][161]))
        .then(pl.lit("crisis"))
        .when(pl.col("as_of").is_between(prices["date"][200], prices["date"][203]))
        .then(pl.lit("bear"))  # 4 forecasts only, one miss below: too few to judge
        .otherwise(pl.lit("normal"))
    )
    history = history.with_columns(
        lo90=pl.when(pl.col("as_of") == prices["date"][201])
        .then(pl.col("hi90") + 1.0)
        .otherwise(pl.col("lo90")),
    )
    scored = score_matured(history, prices)
    table = regime_coverage_monitor(scored, "crisis", {"1w": 0.9})
    assert table.columns == [
        "horizon",
        "regime",
        "n",
        "coverage90",
        "achieved",
        "undercovering",
        "current",
    ]
    rows = {r["regime"]: r for r in table.iter_rows(named=True)}
    assert rows["crisis"]["n"] == 12 and rows["crisis"]["coverage90"] == pytest.approx(0.5)
    assert rows["crisis"]["undercovering"] and rows["crisis"]["current"]
    assert rows["bear"]["coverage90"] == pytest.approx(0.75) and not rows["bear"]["undercovering"]
    assert not rows["normal"]["undercovering"] and rows["normal"]["coverage90"] == 1.0
    assert table.filter(pl.col("undercovering"))["regime"].to_list() == ["crisis"]

    (fired,) = regime_conditions(scored, as_of, "crisis", {"1w": 0.9}, link="r")
    assert fired.firing and fired.kind == REGIME_FAILURE and fired.key == "regime_failure/1w/crisis"
    assert fired.evidence["regime"] == "crisis" and fired.evidence["n"] == 12
    (calm,) = regime_conditions(scored, as_of, "normal", {"1w": 0.9})
    assert not calm.firing
    assert regime_conditions(scored, as_of, "bear", {"1w": 0.9}) == []  # n 4 < 8
    assert regime_conditions(scored, as_of, "bull", {"1w": 0.9}) == []  # never seen


# ---- plot, settings, empties ------------------------------------------------------------


def test_validation_plot_is_written(tmp_path):
    prices = wavy_prices()
    frames = [
        daily_history(
            prices,
            "1w",
            100,
            250,
            lambda p, a: 0.8 * a + 0.2 * p,
            lambda p, a, i: (a - 15.0, a + 15.0),
        ),
        daily_history(prices, "1m", 100, 250, lambda p, a: p),
    ]
    scored = score_matured(pl.concat(frames), prices)
    out = validation_plot(
        scored, rolling_summary(scored, 20), tmp_path / "plots" / "val.png", dpi=50
    )
    assert out.exists() and out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = validation_plot(
        scored.clear(), rolling_summary(scored.clear(), 20), tmp_path / "empty.png"
    )
    assert empty.stat().st_size > 0


def test_empty_inputs_and_settings_validation():
    prices = wavy_prices()
    scored = score_matured(pl.DataFrame(), prices)
    assert scored.is_empty() and "rel_mae" not in scored.columns and "in90" in scored.columns
    assert rolling_summary(scored, 20).is_empty()
    assert accuracy_conditions(scored, dt.date(2024, 1, 1)) == []
    assert coverage_conditions(scored, dt.date(2024, 1, 1), {}) == []
    assert regime_conditions(scored, dt.date(2024, 1, 1), "normal", {}) == []
    history = daily_history(prices, "1w", 100, 110, lambda p, a: p)
    assert score_matured(history, prices.clear()).is_empty()
    with pytest.raises(ValueError, match="unknown horizon"):
        score_matured(history.with_columns(horizon=pl.lit("2w")), prices)
    with pytest.raises(ValueError):
        ValidationSettings(window=0)
    with pytest.raises(ValueError):
        ValidationSettings(absolute_mape_1w=0.0)
    defaults = ValidationSettings()
    assert (defaults.window, defaults.rel_mae_alert, defaults.min_matured) == (20, 1.10, 10)
    assert defaults.absolute_mape_1w is None
    assert (defaults.coverage_margin, defaults.regime_min_n) == (0.15, 8)
    # the code's defaults are the levels frozen in monitoring.yaml
    from cbi_platform.operations.config import load_monitoring

    assert load_monitoring().validation == defaults
