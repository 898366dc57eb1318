"""Unit tests of the point-in-time feature build on small synthetic long tables."""

from __future__ import annotations

import datetime as dt
import math
import time

import numpy as np
import polars as pl
import pytest

from cbi_platform.features.build import (
    CENTS_PER_LB_TO_USD_PER_TONNE,
    FeatureResult,
    asof_join,
    build_features,
    return_clip,
)
from cbi_platform.features.contract import HORIZONS, META_COLUMNS, feature_columns
from cbi_platform.market.schema import MarketDataError, conform_prices
from cbi_platform_tests.features.conftest import ALL_SYMBOLS, make_prices


def _long(symbol: str, dates: list[dt.date], values: list[float], published=None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": symbol,
            "date": dates,
            "value": [float(v) for v in values],
            "unit": "x",
            "source": "test",
            "published_at": published if published is not None else dates,
        }
    )


def _row(frame: pl.DataFrame, day: dt.date) -> dict:
    rows = frame.filter(pl.col("date") == day).to_dicts()
    assert len(rows) == 1, day
    return rows[0]


def test_targets_are_h_trading_rows_ahead_not_calendar_days():
    # Thu, Fri, Mon, Tue, (Wed holiday), Thu, Fri, Mon: 5 rows ahead of Thu 2 Jan is Fri 10 Jan;
    # 5 calendar days ahead would be Tue 7 Jan (13.0).
    dates = [dt.date(2020, 1, d) for d in (2, 3, 6, 7, 9, 10, 13)]
    prices = conform_prices(_long("ZL", dates, [10, 11, 12, 13, 14, 15, 16]))
    frame = build_features(prices, "1w").frame
    assert frame["date"].to_list() == dates  # every target date is a row, the last ones too
    first = frame.row(0, named=True)
    assert first["target_date"] == dt.date(2020, 1, 10)
    assert first["target_price"] == 15.0
    assert first["target_logret"] == pytest.approx(math.log(15.0 / 10.0), abs=1e-15)
    second = frame.row(1, named=True)
    assert (second["target_date"], second["target_price"]) == (dt.date(2020, 1, 13), 16.0)
    assert frame["target_price"].tail(5).is_null().all()
    assert frame["target_date"].tail(5).is_null().all()
    assert (frame["horizon"] == "1w").all() and (frame["horizon_days"] == 5).all()
    assert frame["price"].to_list() == [10, 11, 12, 13, 14, 15, 16]


@pytest.mark.parametrize("horizon", list(HORIZONS))
def test_last_h_rows_have_null_targets_and_the_rest_look_h_rows_ahead(prices, horizon):
    h = HORIZONS[horizon]
    frame = build_features(prices, horizon).frame
    zl = prices.filter(pl.col("symbol") == "ZL").sort("date")
    assert frame.height == zl.height
    assert frame.columns[: len(META_COLUMNS)] == list(META_COLUMNS)
    for column in ("target_date", "target_price", "target_logret"):
        assert frame[column].tail(h).is_null().all()
        assert frame[column].head(frame.height - h).is_not_null().all()
    np.testing.assert_array_equal(frame["target_date"].head(-h), zl["date"].slice(h))
    np.testing.assert_allclose(frame["target_price"].head(-h), zl["value"].slice(h), rtol=0)
    np.testing.assert_allclose(
        frame["target_logret"].head(-h),
        np.log(zl["value"].slice(h).to_numpy() / zl["value"].head(-h).to_numpy()),
        rtol=1e-12,
    )


def test_cot_is_seen_only_from_its_published_at(prices):
    frame = build_features(prices, "1m").frame
    cot = prices.filter(pl.col("symbol") == "COT_ZL").sort("date")
    checked = 0
    for i in range(5, 40):
        previous, release = cot.row(i - 1, named=True), cot.row(i, named=True)
        tuesday, monday = release["date"], release["published_at"]
        assert (tuesday.weekday(), monday.weekday()) == (1, 0)
        friday = tuesday + dt.timedelta(days=3)
        for day in (tuesday, friday):  # as-of day and release Friday: last week's value
            assert _row(frame, day)["f_cot_zl_net"] == previous["value"]
        assert _row(frame, monday)["f_cot_zl_net"] == release["value"]
        change = release["value"] - cot["value"][i - 4]
        assert _row(frame, monday)["f_cot_zl_chg4"] == pytest.approx(change, abs=1e-12)
        checked += 1
    assert checked == 35


def test_asof_join_uses_publication_date_lag_and_staleness():
    base = pl.Series("date", [dt.date(2021, 3, d) for d in (1, 2, 3, 4, 5, 8, 26)])
    series = pl.DataFrame(
        {
            "date": [dt.date(2021, 2, 26), dt.date(2021, 3, 2), dt.date(2021, 3, 1)],
            "published_at": [dt.date(2021, 2, 26), dt.date(2021, 3, 4), dt.date(2021, 3, 5)],
            "value": [1.0, 2.0, 99.0],  # the 1 Mar row arrives after the 2 Mar row: never latest
        }
    )
    joined = asof_join(base, series, max_staleness_days=10)
    assert joined["date"].to_list() == base.to_list()
    assert joined["value"].to_list() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, None]
    early = pl.DataFrame(  # published "before" its own date: usable only from its date
        {"date": [dt.date(2021, 3, 3)], "published_at": [dt.date(2021, 3, 1)], "value": [5.0]}
    )
    assert asof_join(base, early)["value"].to_list()[:3] == [None, None, 5.0]


def test_missing_driver_drops_its_features_with_a_notice():
    without_palm = make_prices(600, symbols=tuple(s for s in ALL_SYMBOLS if s != "PALM"))
    result = build_features(without_palm, "1m")
    palm_features = {
        "f_palm_ret5",
        "f_palm_ret21",
        "f_soy_palm_spread",
        "f_soy_palm_spread_z63",
        "f_corr63_zl_palm",
    }
    assert set(result.dropped) == palm_features
    assert not palm_features & set(result.frame.columns)
    assert len(result.notices) == 1
    assert "PALM" in result.notices[0]
    assert all(name in result.notices[0] for name in palm_features)
    assert {"f_zs_ret5", "f_crush_usd_bu", "f_palm_m_chg3"} <= set(result.frame.columns)
    full = build_features(make_prices(600), "1m")
    assert full.notices == () and full.dropped == ()


def test_target_only_input_keeps_target_and_calendar_features():
    only_zl = make_prices(400, symbols=("ZL",))
    result = build_features(only_zl, "1w")
    assert isinstance(result, FeatureResult)
    assert "f_zl_ret5" in result.frame.columns and "f_month_sin" in result.frame.columns
    assert {n.split(" ")[0] for n in result.notices} == set(ALL_SYMBOLS) - {"ZL"}
    assert set(feature_columns(result.frame)) | set(result.dropped) == set(
        feature_columns(build_features(make_prices(400), "1w").frame)
    )


def test_missing_target_raises_naming_it():
    no_target = make_prices(300, symbols=("ZS", "ZM", "WTI"))
    with pytest.raises(MarketDataError, match="ZL"):
        build_features(no_target, "1m")


def test_unknown_horizon_raises(prices):
    with pytest.raises(ValueError, match="2w"):
        build_features(prices, "2w")


def test_negative_wti_print_yields_finite_features():
    at = 700
    data = make_prices(1000, negative_wti_on=at)
    frame = build_features(data, "1m").frame
    for column in feature_columns(frame):
        values = frame[column]
        assert not values.is_nan().any() and not values.is_infinite().any(), column
        assert values.slice(300).null_count() == 0, column  # nulls only in the warm-up
    print_day = data.filter((pl.col("symbol") == "WTI") & (pl.col("value") < 0))["date"][0]
    window = frame.filter(
        pl.col("date").is_between(
            print_day - dt.timedelta(days=3), print_day + dt.timedelta(days=30)
        )
    )
    for column in ("f_wti_ret5", "f_wti_ret21", "f_zl_wti_ratio", "f_corr63_zl_wti"):
        assert window[column].is_not_null().all(), column
    assert _row(frame, print_day)["f_wti_ret5"] == pytest.approx(-return_clip(5))


def test_full_input_gives_about_forty_features_none_empty(prices):
    frame = build_features(prices, "3m").frame
    features = feature_columns(frame)
    assert 40 <= len(features) <= 50
    assert len(set(features)) == len(features)
    assert not [c for c in features if frame[c].is_null().all()]
    warm = frame.slice(300)  # past every warm-up window
    assert not [c for c in features if warm[c].null_count() > 0]


def test_target_and_cross_series_features_match_hand_computation(prices):
    frame = build_features(prices, "1m").frame
    zl = prices.filter(pl.col("symbol") == "ZL").sort("date")
    p = zl["value"].to_numpy()
    i = 700
    day = zl["date"][i]
    row = _row(frame, day)
    daily = np.diff(np.log(p))
    assert row["f_zl_ret5"] == pytest.approx(math.log(p[i] / p[i - 5]), abs=1e-12)
    assert row["f_zl_ret1_lag1"] == pytest.approx(math.log(p[i - 1] / p[i - 2]), abs=1e-12)
    assert row["f_zl_ret5_lag5"] == pytest.approx(math.log(p[i - 5] / p[i - 10]), abs=1e-12)
    vol = np.std(daily[i - 21 : i], ddof=1) * math.sqrt(252)
    assert row["f_zl_vol21"] == pytest.approx(vol, rel=1e-9)
    assert row["f_zl_mom63"] == pytest.approx(math.log(p[i] / p[i - 62 : i + 1].mean()), rel=1e-9)
    assert row["f_zl_dist_high252"] == pytest.approx(
        math.log(p[i] / p[i - 251 : i + 1].max()), abs=1e-12
    )

    def level(symbol: str) -> float:
        return prices.filter((pl.col("symbol") == symbol) & (pl.col("date") == day))["value"][0]

    zs, zm = level("ZS"), level("ZM")
    assert row["f_crush_usd_bu"] == pytest.approx(zm * 0.022 + p[i] * 0.11 - zs / 100, rel=1e-12)
    assert row["f_oil_share"] == pytest.approx(p[i] * 0.11 / (p[i] * 0.11 + zm * 0.022))
    palm = prices.filter((pl.col("symbol") == "PALM") & (pl.col("date") <= day)).sort("date")
    spread = p[i] * CENTS_PER_LB_TO_USD_PER_TONNE - palm["value"][-1]
    assert row["f_soy_palm_spread"] == pytest.approx(spread, rel=1e-12)
    assert row["f_month_sin"] == pytest.approx(math.sin(2 * math.pi * (day.month - 1) / 12))
    assert row["f_dow"] == day.isoweekday()


def test_build_is_fast_on_26_years_of_daily_data():
    data = make_prices(6800, seed=3)
    build_features(data, "1m")  # warm polars up
    started = time.perf_counter()
    frame = build_features(data, "12m").frame
    elapsed = time.perf_counter() - started
    assert frame.height == 6800
    assert elapsed < 1.0, f"build took {elapsed:.2f}s"
