"""Zone methods: walk-forward, ordered, consistent, calibrated on known noise; scores and the
pre-registered selection rule on hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from cbi_platform.ensemble.conformal import ZONE_COLUMNS, coverage_interval, probability_between
from cbi_platform.ensemble.scoring_rules import interval_score, pinball_loss
from cbi_platform.ensemble.zone_methods import (
    CANDIDATE_METHODS,
    METHODS,
    ZoneConfig,
    choose_zone_method,
    target_zones,
    zone_scores,
)
from cbi_platform.features.contract import HORIZONS

SMALL = ZoneConfig(cqr_trees=15, cqr_refit_every=25, cqr_min_train=100, min_calibration=20)


def make_path(n_days: int, sigma: np.ndarray | float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 1.0, n_days - 1) * np.broadcast_to(sigma, (n_days - 1,))
    return np.log(45.0) + np.concatenate([[0.0], np.cumsum(steps)])


def make_data(
    logp: np.ndarray, first: int = 300, step: int = 5, seed: int = 7, horizon: str = "1w"
) -> dict:
    """Forecasts (origins every `step` days from `first`), history, features and context, all
    derived from one log-price path, so a perturbed path changes every later input at once."""
    n, h = len(logp), HORIZONS[horizon]
    days = np.busday_offset("2010-01-04", np.arange(n), roll="forward").astype("datetime64[D]")
    price = np.exp(logp)
    target_idx = np.arange(n) + h
    known = target_idx < n
    days_py = days.astype(object)
    target_date = [days_py[t] if k else None for t, k in zip(target_idx, known, strict=True)]
    target_logret = np.where(known, logp[np.minimum(target_idx, n - 1)] - logp, np.nan)
    daily = np.concatenate([[0.0], np.diff(logp)])
    vol20 = pl.Series(daily).rolling_std(20).fill_null(0.01).to_numpy()
    features = pl.DataFrame(
        {
            "date": days,
            "f_ret1": daily,
            "f_vol20": vol20,
            "target_date": pl.Series(target_date, dtype=pl.Date),
            "target_logret": pl.Series(target_logret).fill_nan(None),
        }
    )
    origins = np.arange(first, n, step)
    noise = np.random.default_rng(seed).normal(0.0, 0.002, len(origins))
    actual = [price[k + h] if k + h < n else None for k in origins]
    forecasts = pl.DataFrame(
        {
            "horizon": horizon,
            "model": "ensemble",
            "origin": days[origins],
            "target_date": pl.Series([target_date[k] for k in origins], dtype=pl.Date),
            "price": price[origins],
            "actual": pl.Series(actual, dtype=pl.Float64),
            "forecast_logret": noise,
            "forecast": price[origins] * np.exp(noise),
            "role": np.where(np.arange(len(origins)) < 40, "burn_in", "scored"),
        }
    )
    context = pl.DataFrame({"origin": days[origins], "vol_forecast": vol20[origins] * math.sqrt(h)})
    history = pl.DataFrame({"date": days, "price": price})
    return {"forecasts": forecasts, "context": context, "history": history, "features": features}


def zones_for(data: dict, method: str, config: ZoneConfig = SMALL) -> pl.DataFrame:
    return target_zones(
        data["forecasts"],
        data["context"],
        method,
        history=data["history"],
        features=data["features"],
        config=config,
    )


@pytest.fixture(scope="module")
def walk_forward_pair():
    """The same path, and one changed after day 600 (a volatility jump): origins up to the
    cutoff may not see the difference. Origins are 3 days apart with 21-day targets (seven
    earlier origins are still unresolved at each origin), and day 600 is one where cqr refits
    (every 25 origins from day 300), so a leak at the refit shows too."""
    logp = make_path(800, 0.01, seed=3)
    changed = logp.copy()
    extra = np.random.default_rng(99).normal(0.0, 0.03, len(logp) - 601)
    changed[601:] += np.cumsum(extra)
    base = make_data(logp, step=3, horizon="1m")
    return base, make_data(changed, step=3, horizon="1m"), base["history"]["date"][600]


@pytest.mark.parametrize("method", METHODS + CANDIDATE_METHODS)
def test_zones_are_walk_forward(method, walk_forward_pair):
    base, changed, cutoff = walk_forward_pair
    a, b = zones_for(base, method), zones_for(changed, method)
    early = pl.col("origin") <= cutoff
    a_early, b_early = a.filter(early), b.filter(early)
    assert a_early["p10"].is_not_null().sum() > 10  # the check covers real zones
    for col in (*ZONE_COLUMNS, "n_calibration"):
        assert a_early[col].equals(b_early[col]), f"{method}: {col} saw the future"
    assert a_early["cdf_logret"].to_list() == b_early["cdf_logret"].to_list()
    late_a, late_b = a.filter(~early), b.filter(~early)
    assert not late_a["p90"].equals(late_b["p90"]), "the perturbation must reach later zones"


@pytest.fixture(scope="module")
def gaussian():
    return make_data(make_path(2600, 0.01, seed=11))


@pytest.fixture(scope="module")
def gaussian_zones(gaussian):
    # no vol context (only split_vol needs it): split stays pooled, and the file stays fast
    plain = {**gaussian, "context": None}
    every = METHODS + CANDIDATE_METHODS
    return {m: zones_for(gaussian if m == "split_vol" else plain, m) for m in every}


@pytest.mark.parametrize("method", METHODS + CANDIDATE_METHODS)
def test_zones_are_ordered_and_probabilities_agree(method, gaussian_zones):
    zones = gaussian_zones[method].filter(pl.col("p10").is_not_null())
    assert zones.height > 100
    values = zones.select(ZONE_COLUMNS).to_numpy()
    assert np.all(np.diff(values, axis=1) >= -1e-12)
    assert set(zones.columns) >= {"calibration", "n_calibration", "n_calibration_independent"}
    for row in zones.sample(8, seed=0).iter_rows(named=True):
        x, p = np.asarray(row["cdf_logret"]), np.asarray(row["cdf_prob"])
        assert np.all(np.diff(x) >= 0) and np.all(np.diff(p) >= 0)
        assert p[0] == 0.0 and p[-1] == 1.0
        # split conformal quantiles are conservative by up to 2/(n+1) (see conformal.py)
        slack = 2 / (row["n_calibration"] + 1) if method in ("split", "split_vol") else 0.0
        for lo, hi, nominal in (("lo90", "hi90", 0.9), ("p10", "p90", 0.8), ("p30", "p70", 0.4)):
            prob = probability_between(row[lo], row[hi], row)
            assert nominal - 2e-3 <= prob <= nominal + slack + 2e-3, (lo, hi, prob)


@pytest.mark.parametrize("method", ["history", "rw_normal", "split"])
def test_coverage_near_nominal_on_iid_gaussian_returns(method, gaussian_zones):
    table = zone_scores(gaussian_zones[method], roles={"scored"})
    row = table.row(0, named=True)
    assert row["n"] > 200 and row["n_effective"] == row["n"]  # h = spacing: no overlap
    assert 0.85 <= row["coverage90"] <= 0.95
    assert 0.74 <= row["coverage80"] <= 0.86
    # sigma sqrt(h) = 2.24%: the 90% band is about 2 * 1.645 * 2.24% = 7.4% of the price wide
    assert 6.3 < row["width90_pct"] < 8.5


def test_aci_raises_coverage_after_a_volatility_jump():
    sigma = np.where(np.arange(1399) < 1000, 0.008, 0.02)
    data = {**make_data(make_path(1400, sigma, seed=5)), "context": None}  # split = pooled
    after = data["history"]["date"][1000]
    split = zone_scores(zones_for(data, "split").filter(pl.col("origin") > after), roles=None)
    aci = zone_scores(zones_for(data, "aci").filter(pl.col("origin") > after), roles=None)
    s, a = split.row(0, named=True), aci.row(0, named=True)
    assert s["n"] == a["n"] > 60
    assert s["coverage90"] < 0.7  # split, pooled on calm residuals, under-covers
    assert a["coverage90"] >= s["coverage90"] + 0.1
    assert a["coverage80"] > s["coverage80"]


def test_unknown_method_and_missing_inputs_are_refused(gaussian):
    with pytest.raises(ValueError, match="unknown zone method"):
        target_zones(gaussian["forecasts"], method="magic")
    with pytest.raises(ValueError, match="history"):
        target_zones(gaussian["forecasts"], method="rw_normal")
    with pytest.raises(ValueError, match="features"):
        target_zones(gaussian["forecasts"], method="cqr")


# ----------------------------------------------------------------------------- scores


def test_interval_score_hand_computed():
    actual, lo, hi = [10.0, 4.0, 13.0], [8.0, 8.0, 8.0], [12.0, 12.0, 12.0]
    # inside: width 4; 4 below: 4 + (2 / 0.2) * 4 = 44; 1 above: 4 + 10 = 14
    assert interval_score(actual, lo, hi, 0.2) == pytest.approx(62 / 3)
    # in % of price 100 / 50 / 200: 4, 88, 7
    assert interval_score(actual, lo, hi, 0.2, price=[100.0, 50.0, 200.0]) == pytest.approx(33.0)
    # alpha 0.1 doubles the penalty: 4, 4 + 20 * 4 = 84, 4 + 20 = 24
    assert interval_score(actual, lo, hi, 0.1) == pytest.approx(112 / 3)


def test_pinball_loss_hand_computed():
    # y - q = 2, 0, -3 at tau .1, .5, .9: 0.2, 0, 0.3
    assert pinball_loss([10.0], [[8.0, 10.0, 13.0]], (0.1, 0.5, 0.9)) == pytest.approx(0.5 / 3)
    assert pinball_loss([10.0], [[8.0, 10.0, 13.0]], (0.1, 0.5, 0.9), price=[50.0]) == (
        pytest.approx(1 / 3)
    )
    # rows: (1 -> .1, -1 -> .1), (-2 -> 1.8, 2 -> 1.8)
    assert pinball_loss([10.0, 20.0], [[9.0, 11.0], [22.0, 18.0]], (0.1, 0.9)) == pytest.approx(
        0.95
    )


def test_zone_scores_hand_computed():
    dates = pl.date_range(pl.date(2020, 1, 1), pl.date(2020, 1, 4), eager=True)
    frame = pl.DataFrame(
        {
            "horizon": "1w",
            "model": "ensemble",
            "origin": dates,
            "target_date": dates.dt.offset_by("1d"),
            "role": ["scored", "scored", "scored", "development"],
            "price": [100.0, 100.0, 100.0, 100.0],
            "actual": [100.0, 111.0, 80.0, 100.0],
            "lo90": [90.0] * 4,
            "p10": [92.0] * 4,
            "p30": [98.0] * 4,
            "p50": [100.0] * 4,
            "p70": [102.0] * 4,
            "p90": [108.0] * 4,
            "hi90": [110.0] * 4,
        }
    )
    row = zone_scores(frame, roles={"scored"}).row(0, named=True)
    assert row["n"] == 3 and row["n_effective"] == 3
    assert row["coverage40"] == pytest.approx(1 / 3)
    assert row["coverage80"] == pytest.approx(1 / 3)
    assert row["coverage90"] == pytest.approx(1 / 3)
    assert row["width80_pct"] == pytest.approx(16.0) and row["width90_pct"] == pytest.approx(20.0)
    # 80%: 16, 16 + 10 * 3 = 46, 16 + 10 * 12 = 136 -> 66; 90%: 20, 20 + 20, 20 + 200 -> 280/3
    assert row["interval80_pct"] == pytest.approx(66.0)
    assert row["interval90_pct"] == pytest.approx(280 / 3)
    # pinball, taus .1/.3/.5/.7/.9 at q 92/98/100/102/108:
    # y=100: .8 + .6 + 0 + .6 + .8 = 2.8; y=111: 1.9 + 3.9 + 5.5 + 6.3 + 2.7 = 20.3;
    # y=80: 10.8 + 12.6 + 10 + 6.6 + 2.8 = 42.8 -> 65.9 / 15
    assert row["pinball_pct"] == pytest.approx(65.9 / 15)
    everything = zone_scores(frame, roles=None).row(0, named=True)
    assert everything["n"] == 4


def test_zone_scores_interval_uses_the_effective_sample_size():
    """Coverage intervals count non-overlapping target windows, not rows: 20 daily origins
    with 10-day targets are 2 independent outcomes, so the interval is far wider than on 20."""
    origins = pl.date_range(pl.date(2020, 1, 1), pl.date(2020, 1, 20), eager=True)
    base = {
        "horizon": "1m",
        "model": "ensemble",
        "origin": origins,
        "role": "scored",
        "price": 100.0,
        "actual": [100.0] * 18 + [150.0] * 2,
        **{
            c: [float(v)] * 20
            for c, v in zip(ZONE_COLUMNS, (90, 92, 98, 100, 102, 108, 110), strict=True)
        },
    }
    apart = zone_scores(pl.DataFrame({**base, "target_date": origins}))  # no overlap
    shared = zone_scores(pl.DataFrame({**base, "target_date": origins.dt.offset_by("10d")}))
    a, s = apart.row(0, named=True), shared.row(0, named=True)
    assert a["coverage90"] == s["coverage90"] == pytest.approx(0.9)
    assert (a["n_effective"], s["n_effective"]) == (20, 2)
    assert (a["coverage90_lo"], a["coverage90_hi"]) == pytest.approx(coverage_interval(0.9, 20))
    assert (s["coverage90_lo"], s["coverage90_hi"]) == pytest.approx(coverage_interval(0.9, 2))
    assert s["coverage90_hi"] - s["coverage90_lo"] > 2 * (a["coverage90_hi"] - a["coverage90_lo"])
    assert a["coverage80_lo"] < 0.9 < a["coverage80_hi"]


# ----------------------------------------------------------------------------- selection rule


def dev_table(rows: dict[str, dict[str, tuple[float, float, float, float]]]) -> pl.DataFrame:
    """{method: {horizon: (interval80, interval90, coverage80, coverage90)}}."""
    return pl.DataFrame(
        [
            {
                "horizon": h,
                "method": m,
                "interval80_pct": v[0],
                "interval90_pct": v[1],
                "coverage80": v[2],
                "coverage90": v[3],
            }
            for m, by_h in rows.items()
            for h, v in by_h.items()
        ]
    )


def all_horizons(i80, i90, c80, c90, twelve=(1.0, 1.0, 0.8, 0.9)):
    return {
        "1w": (i80, i90, c80, c90),
        "1m": (i80, i90, c80, c90),
        "3m": (i80, i90, c80, c90),
        "6m": (i80, i90, c80, c90),
        "12m": twelve,
    }


def test_rule_picks_the_lowest_interval_score():
    table = dev_table(
        {
            "wide": all_horizons(12.0, 14.0, 0.80, 0.90),
            "sharp": all_horizons(10.0, 12.0, 0.70, 0.85),
        }
    )
    method, reason = choose_zone_method(table)
    assert method == "sharp"
    assert "sharp 11.000" in reason and "wide 13.000" in reason


def test_rule_breaks_ties_within_one_percent_by_coverage_error():
    table = dev_table(
        {
            "a": all_horizons(10.0, 12.0, 0.70, 0.80),  # 11.00, coverage error 0.10
            "b": all_horizons(10.1, 12.1, 0.79, 0.91),  # 11.10 (within 1%), error 0.01
            "c": all_horizons(10.5, 12.5, 0.80, 0.90),  # 11.50: not tied
        }
    )
    method, reason = choose_zone_method(table)
    assert method == "b"
    assert "tied" in reason


def test_rule_ignores_12m_and_methods_missing_a_horizon():
    missing_6m = all_horizons(1.0, 1.0, 0.8, 0.9)
    del missing_6m["6m"]
    table = dev_table(
        {
            "bad_12m": all_horizons(10.0, 12.0, 0.80, 0.90, twelve=(500.0, 900.0, 0.1, 0.2)),
            "good_12m": all_horizons(11.0, 13.0, 0.80, 0.90),
            "incomplete": missing_6m,
        }
    )
    assert choose_zone_method(table)[0] == "bad_12m"
    with pytest.raises(ValueError):
        choose_zone_method(dev_table({"incomplete": missing_6m}))


def test_history_vol_mr_leans_on_the_long_run_vol_at_long_horizons_only():
    """After a calm stretch and a volatile one, history_vol rescales long-horizon returns by the
    full ratio of today's vol to the calm vol; the mean-reverting term structure shrinks that
    at 12m and leaves 1w almost as it was."""
    rng = np.random.default_rng(5)
    sigma = np.concatenate([np.full(2400, 0.006), np.full(200, 0.025)])
    logp = np.log(40.0) + np.concatenate([[0.0], np.cumsum(rng.normal(0, sigma[1:]))])
    width = {}
    for horizon in ("1w", "12m"):
        data = make_data(logp, horizon=horizon)
        for method in ("history_vol", "history_vol_mr"):
            z = zones_for({**data, "context": None}, method).drop_nulls("p10").sort("origin")
            last = z.row(-1, named=True)
            width[(horizon, method)] = math.log(last["hi90"] / last["lo90"])
    assert width[("12m", "history_vol_mr")] < 0.8 * width[("12m", "history_vol")]
    assert width[("1w", "history_vol_mr")] == pytest.approx(width[("1w", "history_vol")], rel=0.1)
