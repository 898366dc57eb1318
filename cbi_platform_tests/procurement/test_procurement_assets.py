"""The procurement assets end to end on a small manifest: the daily decision forecasts are the
walk-forward's versions fed each day (point in time, reproducing the ensemble at every origin),
the backtest and its look-ahead alarm, today's recommendation, its log and the
decision-quality monitor, and `cbi recommend`."""

import datetime as dt
import json

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from cbi_platform.defs.ensemble.assets import horizon_context
from cbi_platform.defs.pipeline import (
    ALL_ASSETS,
    BACKTEST,
    DECISION,
    HORIZON,
    SHARED,
)
from cbi_platform.defs.procurement.assets import procurement_recommendation
from cbi_platform.evaluation import horizon_run
from cbi_platform.procurement import backtest as bt
from cbi_platform.procurement.decision_series import build_decision_series, skill_alarm
from cbi_platform.procurement.live import (
    RecommendationLog,
    month_window,
    prob_up_from_zones,
    quality_condition,
)
from cbi_platform.procurement.programme import load_config
from cbi_platform_tests.conftest import file_resources, write_small_manifest
from cbi_platform_tests.defs.test_model_assets import SMALL

pytestmark = pytest.mark.slow
H = "1m"
# Columns that hold what happened at a row's target date (unknown before it).
OUTCOME_COLUMNS = ("actual", "target_price", "target_logret")


def _run(resources, instance, selection, partition=None):
    result = dg.materialize(
        ALL_ASSETS,
        selection=selection,
        partition_key=partition,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("procurement")
    data = tmp / "data"
    data.mkdir()
    manifest = write_small_manifest(data, n_days=1400)
    home = tmp / "home"
    resources = {**file_resources(manifest, home), "protocol": SMALL}
    instance = dg.DagsterInstance.ephemeral()
    _run(resources, instance, SHARED)
    _run(resources, instance, HORIZON, H)
    decision = _run(resources, instance, DECISION, H)
    backtest = _run(resources, instance, BACKTEST)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        tables = {
            t: con.sql(f"select * from cbi.{t}").pl()
            for t in (
                "features",
                "oof_predictions",
                "ensemble_predictions",
                "ensemble_weights",
                "target_zones",
                "detected_regimes",
                "volatility_forecasts",
                "market_prices",
                "decision_forecasts",
                "procurement_backtest",
                "procurement_policy_record",
            )
        }
    return {
        "home": home,
        "resources": resources,
        "instance": instance,
        "tables": tables,
        "decision": decision,
        "backtest": backtest,
    }


def _closes(t) -> pl.DataFrame:
    zl = t["market_prices"].filter(pl.col("symbol") == "ZL")
    return zl.select("date", price="value").sort("date")


def test_decision_forecasts_are_the_walk_forward_versions_fed_each_day(trained):
    t = trained["tables"]
    series = t["decision_forecasts"].sort("date")
    features = t["features"].filter(pl.col("horizon") == H).sort("date")
    ens = t["ensemble_predictions"].filter(pl.col("horizon") == H)
    first_scored = ens.filter(pl.col("role") == "scored")["origin"].min()
    # Every trading day from the first scored origin, one row each, usable on its own date.
    expected_days = features.filter(pl.col("date") >= first_scored)["date"]
    assert series["date"].to_list() == expected_days.to_list()
    assert (series["known_at"] == series["date"]).all()
    assert (series["state_origin"] <= series["date"]).all()
    # The state used is the latest origin on or before the day.
    origins = sorted(ens["origin"].to_list())
    for day, origin in series.select("date", "state_origin").iter_rows():
        assert origin == max(o for o in origins if o <= day)
    # The price is that day's close, never a later one.
    joined = series.join(features.select("date", close="price"), on="date")
    assert (joined["price"] == joined["close"]).all()
    # On every origin day the daily forecast is the walk-forward ensemble's forecast exactly.
    on_origin = series.join(
        ens.select(pl.col("origin").alias("date"), "forecast"), on="date", suffix="_ens"
    )
    assert on_origin.height == ens.filter(pl.col("origin") >= first_scored).height
    np.testing.assert_allclose(on_origin["forecast"], on_origin["forecast_ens"], rtol=1e-9)
    # Zones are ordered, P(up) is a probability.
    q = series.select("p10", "p30", "p50", "p70", "p90").drop_nulls().to_numpy()
    assert q.shape[0] > 0 and np.all(np.diff(q, axis=1) >= 0)
    up = series["prob_up"].drop_nulls()
    assert up.len() > 0 and ((up >= 0) & (up <= 1)).all()
    checks = {e.check_name: e for e in trained["decision"].get_asset_check_evaluations()}
    assert checks["decision_forecasts_point_in_time"].passed


def test_a_day_of_the_series_does_not_change_when_everything_after_it_is_cut(trained):
    t = trained["tables"]
    series = t["decision_forecasts"].sort("date")
    ens = t["ensemble_predictions"].filter(pl.col("horizon") == H)
    ctx_full, _ = horizon_context(H, t["detected_regimes"], t["volatility_forecasts"])
    scored = sorted(ens.filter(pl.col("role") == "scored")["origin"].to_list())
    day = series.filter(pl.col("date") > scored[len(scored) // 2])["date"][3]  # between origins

    def cut(frame: pl.DataFrame, column: str) -> pl.DataFrame:
        """Rows up to the day, and on them no outcome that resolves after it: a target (and
        the actual close at it) dated after the day is not known on the day."""
        kept = frame.filter(pl.col(column) <= day)
        if "target_date" not in kept.columns:
            return kept
        unresolved = pl.col("target_date").is_null() | (pl.col("target_date") > day)
        return kept.with_columns(
            pl.when(unresolved).then(None).otherwise(pl.col(c)).alias(c)
            for c in OUTCOME_COLUMNS
            if c in kept.columns
        )

    # The cut bites: each table with targets holds outcomes after the day that it nulls.
    for name, column in (
        ("features", "date"),
        ("oof_predictions", "origin"),
        ("target_zones", "origin"),
    ):
        late = t[name].filter((pl.col(column) <= day) & (pl.col("target_date") > day))
        outcomes = [c for c in OUTCOME_COLUMNS if c in late.columns]
        assert (
            outcomes and late.select(pl.any_horizontal(pl.col(outcomes).is_not_null()).any()).item()
        ), name
    # Features, regimes and closes truncated at the day; walk-forward tables cut at their
    # origins (their rows at an origin only use what was known there, which the OOF gates test),
    # with every outcome that resolves after the day nulled.
    again, _ = build_decision_series(
        cut(t["features"], "date"),
        cut(t["oof_predictions"], "origin"),
        cut(ens, "origin"),
        cut(t["ensemble_weights"], "origin"),
        cut(t["target_zones"], "origin"),
        cut(t["detected_regimes"], "date"),
        cut(ctx_full, "origin"),
        H,
        horizon_run.ProtocolConfig(protocol=SMALL.protocol(), n_workers=1),
        start=day,
        specs=horizon_run.zoo_specs(H, tuple(SMALL.model_kinds)),
    )
    assert again.height == 1
    full = series.filter(pl.col("date") == day)
    assert again["state_origin"][0] == full["state_origin"][0]
    for column in ("price", "forecast", "p10", "p50", "p90", "prob_up"):
        assert again[column][0] == pytest.approx(full[column][0], rel=1e-12), column


def test_members_refitted_for_a_state_reproduce_the_walk_forward_forecasts(trained):
    """The member path (states where the ensemble is not the random walk alone): each member
    fitted at its OOF `fitted_at` on the rows known then predicts exactly its OOF forecast."""
    from cbi_platform.procurement.decision_series import RefitSchedule

    t = trained["tables"]
    features = t["features"].filter(pl.col("horizon") == H).sort("date")
    oof = t["oof_predictions"].filter(pl.col("horizon") == H)
    specs = horizon_run.zoo_specs(H, tuple(SMALL.model_kinds))
    schedule = RefitSchedule(oof, specs)
    scored = sorted(oof.filter(pl.col("role") == "scored")["origin"].unique().to_list())
    closes = features["price"].to_numpy()
    for origin in (scored[0], scored[len(scored) // 2]):
        members = schedule.members_at(features, t["detected_regimes"], H, origin)
        i = features["date"].to_list().index(origin)
        x = (
            features[i : i + 1]
            .select([c for c in features.columns if c.startswith("f_")])
            .to_numpy()
        )
        at = oof.filter(pl.col("origin") == origin)
        for name, model in members.items():
            expected = at.filter(pl.col("model") == name)["forecast_logret"][0]
            got = float(np.asarray(model.predict(x, closes[: i + 1])).reshape(-1)[0])
            assert got == pytest.approx(expected, abs=1e-9), (name, origin)
    # Fits are shared between origins exactly where the walk-forward reused a model.
    assert schedule.fits == len(
        {
            (m, f)
            for m, o, f in oof.filter(pl.col("origin").is_in([scored[0], scored[len(scored) // 2]]))
            .select("model", "origin", "fitted_at")
            .iter_rows()
            if f is not None
        }
    )


def test_a_member_refit_off_by_1e_7_stops_the_build(trained, monkeypatch):
    """On each origin day the series checks every member the ensemble uses against its own
    walk-forward forecast (1e-9 in log return for float64 members). A refit 1e-7 off, which the
    ensemble-level check (1e-6, and weighted) lets through, raises and names the member."""
    from cbi_platform.models.registry import build_model

    t = trained["tables"]
    ens = t["ensemble_predictions"].filter(pl.col("horizon") == H).sort("origin")
    weights = t["ensemble_weights"].filter(
        (pl.col("horizon") == H) & (pl.col("model") != "random_walk") & (pl.col("weight") != 0)
    )
    origins = ens["origin"].to_list()
    # On this small run the scored states are all the random walk; development ones are not.
    fitted = [o for o in origins[:-1] if o in set(weights["origin"].to_list())]
    assert fitted, "no origin where the ensemble uses a member: nothing to perturb"
    origin = fitted[-1]
    next_origin = origins[origins.index(origin) + 1]
    specs = horizon_run.zoo_specs(H, tuple(SMALL.model_kinds))
    by_name = {s.name: s for s in specs}
    member = weights.filter(pl.col("origin") == origin).sort("weight", descending=True)["model"][0]
    ctx, _ = horizon_context(H, t["detected_regimes"], t["volatility_forecasts"])

    def build():
        return build_decision_series(
            t["features"].filter(pl.col("date") < next_origin),  # the one state's days
            t["oof_predictions"],
            ens,
            t["ensemble_weights"],
            t["target_zones"],
            t["detected_regimes"],
            ctx,
            H,
            horizon_run.ProtocolConfig(protocol=SMALL.protocol(), n_workers=1),
            start=origin,
            specs=specs,
        )

    series, stats = build()  # unperturbed: every member reproduces
    assert stats.fitted_states == 1 and series["date"][0] == origin
    expected = ens.filter(pl.col("origin") == origin)["forecast"][0]
    assert series["forecast"][0] == pytest.approx(expected, rel=1e-9)

    model_class = type(build_model(by_name[member]))
    original = model_class.predict
    monkeypatch.setattr(
        model_class,
        "predict",
        lambda self, X, prices: np.asarray(original(self, X, prices), float) + 1e-7,
    )
    with pytest.raises(ValueError, match=f"{H}: member .* at origin {origin}.* gap 1e-07"):
        build()


def test_a_planted_look_ahead_is_caught_by_the_skill_alarm_and_the_backtest_alarm(trained):
    t = trained["tables"]
    series = t["decision_forecasts"]
    closes = _closes(t)
    assert skill_alarm(series, closes).passed
    # The leak: each day's "forecast" is the realised close h days later, stamped as known.
    future = closes.with_columns(ahead=pl.col("price").shift(-21)).select("date", "ahead")
    leaked = (
        series.join(future, on="date")
        .filter(pl.col("ahead").is_not_null())
        .with_columns(
            forecast=pl.col("ahead"),
            p50=pl.col("ahead"),
            p10=pl.col("ahead") * 0.99,
            p30=pl.col("ahead") * 0.995,
            p70=pl.col("ahead") * 1.005,
            p90=pl.col("ahead") * 1.01,
            cdf_logret=None,
            cdf_prob=None,
        )
        .drop("ahead")
    )
    alarm = skill_alarm(leaked, closes, min_rows=30)
    assert not alarm.passed and "too good to be true" in alarm.summary
    config = load_config()
    windows = bt.default_windows(
        closes, config.programme, config.backtest, start=leaked["date"].min()
    )
    result = bt.run_backtest(leaked, closes, config.programme, config.policies, windows)
    assert bt.lookahead_alarm(result, min_windows=5, min_rows=30).firing
    honest = bt.run_backtest(series, closes, config.programme, config.policies, windows)
    assert not bt.lookahead_alarm(honest, min_windows=5, min_rows=30).firing


def test_the_backtest_table_holds_every_policy_in_every_window(trained):
    t = trained["tables"]
    table = t["procurement_backtest"]
    names = set(load_config().names())
    assert set(table["policy"]) == names
    per_window = table.group_by("window_start").agg(pl.col("policy").n_unique())
    assert (per_window["policy"] == len(names)).all()
    even = table.filter(pl.col("policy") == "even")
    assert (even["savings_cents"].abs() < 1e-9).all()
    # Perfect foresight is the floor of every policy's cost in every window.
    assert (table["cost_cents"] >= table["pf_cost_cents"] - 1e-9).all()
    record = t["procurement_policy_record"]
    assert set(record["policy"]) == names
    checks = {e.check_name: e for e in trained["backtest"].get_asset_check_evaluations()}
    assert checks["procurement_no_lookahead"].passed
    assert (trained["home"] / "procurement" / "cumulative_savings.png").stat().st_size > 1000


def test_recommendation_is_logged_once_a_day_and_printed_by_the_cli(trained, capsys, monkeypatch):
    from cbi_platform.cli import main

    home = trained["home"]
    recommendation = dg.AssetSelection.assets(procurement_recommendation)
    first = _run(trained["resources"], trained["instance"], recommendation)
    again = _run(trained["resources"], trained["instance"], recommendation)
    logged = [
        e.materialization.metadata["logged"].value
        for e in (
            *first.get_asset_materialization_events(),
            *again.get_asset_materialization_events(),
        )
    ]
    assert logged == [1, 0]  # the same day and policy is not logged twice
    log = RecommendationLog(home / "operations.duckdb").frame()
    assert log.height == 1
    row = log.to_dicts()[0]
    policy = load_config().pipeline.recommend
    assert row["policy"] == policy and 0 <= row["buy_lb"] <= row["remaining_lb"]
    assert row["text"].startswith(f"Today ({row['as_of']}) the {policy} policy says")
    if policy == "even":
        assert "Even buying is shown because no forecast-driven policy saved" in row["text"]
    else:
        assert "Backtested over" in row["text"]
    assert f"{H}: " in row["text"] and "probability ZL is higher in 21 trading days" in row["text"]
    conditions = json.loads(
        pl.read_parquet(home / "operations.snapshots" / "ops.condition_log.parquet").filter(
            pl.col("kind") == "decision_quality"
        )["evidence"][0]
    )
    assert conditions["message"] == "no completed windows yet"
    monkeypatch.setenv("CBI_HOME", str(home))
    assert main(["recommend"]) == 0
    out = capsys.readouterr().out
    assert f"Procurement recommendation for {row['as_of']}" in out and row["text"] in out


def _log(days: list[dt.date], buys: list[float], policy: str) -> pl.DataFrame:
    rows = []
    for day, buy in zip(days, buys, strict=True):
        start, end = month_window(day)
        rows.append(
            {
                "as_of": day,
                "policy": policy,
                "window_start": start,
                "window_end": end,
                "buy_lb": buy,
            }
        )
    return pl.DataFrame(rows)


def test_decision_quality_fires_when_the_recommendations_buy_dear_and_not_when_cheap():
    config = load_config()
    policy = config.pipeline.recommend
    total = config.programme.total_lb
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(260)]
    days = [d for d in days if d.weekday() < 5]
    rng = np.random.default_rng(3)
    prices = pl.DataFrame(
        {"date": days, "price": 45 * np.exp(np.cumsum(0.02 * rng.standard_normal(len(days))))}
    )
    today = dt.date(2024, 10, 15)

    months = (
        prices.filter(pl.col("date") < dt.date(2024, 10, 1))
        .with_columns(month=pl.col("date").dt.month())
        .group_by("month", maintain_order=True)
        .agg("date", "price")
    )
    dear = _log(
        [d[int(np.argmax(p))] for d, p in zip(months["date"], months["price"], strict=True)],
        [total] * months.height,
        policy,
    )
    cheap = _log(
        [d[int(np.argmin(p))] for d, p in zip(months["date"], months["price"], strict=True)],
        [total] * months.height,
        policy,
    )
    fired, costs = quality_condition(dear, prices, config, today)
    assert costs.height == 9 and fired.firing and fired.kind == "decision_quality"
    assert fired.evidence["n_windows"] == config.pipeline.quality_windows
    calm, _ = quality_condition(cheap, prices, config, today)
    assert not calm.firing and calm.evidence["rolling_mean_shortfall_cents"] < 0
    # A window still open on `today` is not judged.
    _, partial = quality_condition(dear, prices, config, dt.date(2024, 9, 15))
    assert partial.height == 8


def test_probability_up_from_zones_reads_the_quantiles_in_log_price():
    row = {"price": 50.0, "p10": 45.0, "p30": 48.0, "p50": 50.0, "p70": 52.0, "p90": 55.0}
    assert prob_up_from_zones(row) == pytest.approx(0.5)
    assert prob_up_from_zones({**row, "price": 48.0}) == pytest.approx(0.7)
    assert prob_up_from_zones({**row, "price": 40.0}) == pytest.approx(0.9)
    assert prob_up_from_zones({**row, "p90": None}) is None


def test_policy_record_is_read_from_the_backtest_file_and_absent_without_one(tmp_path):
    from cbi_platform.procurement.live import policy_record

    assert policy_record(tmp_path, "cvar") is None  # a home where no backtest ran
    (tmp_path / "policy_record.json").write_text(
        json.dumps([{"policy": "cvar", "n_windows": 3}, {"policy": "even", "n_windows": 3}])
    )
    assert policy_record(tmp_path, "cvar") == {"policy": "cvar", "n_windows": 3}
    assert policy_record(tmp_path, "value_trigger") is None
