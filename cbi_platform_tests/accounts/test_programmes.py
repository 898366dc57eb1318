"""The buyer's programme: validation with the field named, the default, the stable hash, the
backtest queue's caching, isolation between buyers, and a failure written as failed."""

from __future__ import annotations

import pytest

from cbi_platform.accounts import programmes as pg
from cbi_platform.accounts.store import AccountStore
from cbi_platform.procurement.programme import load_config
from cbi_platform_tests.accounts.programme_home import add_user

GOOD = {
    "railcar_lb": 180_000,
    "railcars_per_window": 10,
    "window_days": 21,
    "carry_cents_per_lb_month": 0.25,
    "max_worst_shortfall_cents": 2.0,
}


@pytest.fixture
def store(tmp_path) -> AccountStore:
    return AccountStore.for_home(tmp_path, env={})


def test_the_default_is_procurement_yaml_and_reproduces_its_programme():
    default = pg.default_programme()
    base = load_config().programme
    assert default.programme() == base
    assert default.total_lb == 1_800_000
    assert pg.validate_programme(GOOD) == default


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("railcar_lb", 999, "between 1000 and 1e+06 lb"),
        ("railcar_lb", 1_000_001, "between 1000 and 1e+06 lb"),
        ("railcar_lb", "a lot", "must be a number"),
        ("railcar_lb", None, "is required"),
        ("railcars_per_window", 0, "between 1 and 1000 railcars"),
        ("railcars_per_window", 1001, "between 1 and 1000 railcars"),
        ("railcars_per_window", 2.5, "whole number of railcars"),
        ("railcars_per_window", True, "must be a number"),
        ("window_days", 4, "between 5 and 126 trading days"),
        ("window_days", 127, "between 5 and 126 trading days"),
        ("window_days", 21.5, "whole number of trading days"),
        ("carry_cents_per_lb_month", -0.01, "between 0 and 5 c/lb per month"),
        ("carry_cents_per_lb_month", 5.01, "between 0 and 5 c/lb per month"),
        ("carry_cents_per_lb_month", "nan", "finite"),
        ("max_worst_shortfall_cents", -1, "between 0 and 20 c/lb"),
        ("max_worst_shortfall_cents", 20.5, "between 0 and 20 c/lb"),
        ("max_worst_shortfall_cents", "", "is required"),
    ],
)
def test_each_field_is_checked_against_its_stated_range(field, value, words):
    with pytest.raises(pg.ProgrammeError) as caught:
        pg.validate_programme({**GOOD, field: value})
    assert caught.value.field == field
    assert words in str(caught.value)
    assert field in str(caught.value)


def test_the_bounds_themselves_are_accepted():
    low = {name: bounds[0] for name, bounds in pg.BOUNDS.items()}
    high = {name: bounds[1] for name, bounds in pg.BOUNDS.items()}
    assert pg.validate_programme(low).window_days == 5
    assert pg.validate_programme(high).railcars_per_window == 1000


def test_volume_as_total_lb_and_unknown_fields():
    rest = {k: GOOD[k] for k in ("window_days", "carry_cents_per_lb_month")}
    rest["max_worst_shortfall_cents"] = 2.0
    lot = pg.validate_programme({**rest, "total_lb": 2_500_000})
    assert (lot.railcar_lb, lot.railcars_per_window, lot.total_lb) == (2_500_000, 1, 2_500_000)
    cars = pg.validate_programme({**rest, "total_lb": 900_000, "railcar_lb": 180_000})
    assert (cars.railcars_per_window, cars.total_lb) == (5, 900_000)
    with pytest.raises(pg.ProgrammeError, match="whole number of railcars") as caught:
        pg.validate_programme({**rest, "total_lb": 1_000_000, "railcar_lb": 180_000})
    assert caught.value.field == "total_lb"
    with pytest.raises(pg.ProgrammeError, match="not both"):
        pg.validate_programme({**GOOD, "total_lb": 1_800_000})
    with pytest.raises(pg.ProgrammeError, match="unknown field") as caught:
        pg.validate_programme({**GOOD, "price_ceiling": 40})
    assert caught.value.field == "price_ceiling"


def test_the_hash_is_stable_and_changes_with_what_changes_the_backtest():
    a = pg.validate_programme(GOOD)
    same = pg.validate_programme({k: str(v) for k, v in GOOD.items()})  # form fields: text
    assert (
        pg.programme_hash(a) == pg.programme_hash(same) == pg.programme_hash(pg.default_programme())
    )
    assert len(pg.programme_hash(a)) == 64
    changed = {
        name: pg.programme_hash(pg.validate_programme({**GOOD, name: value}))
        for name, value in (
            ("railcars_per_window", 20),
            ("railcar_lb", 190_000),
            ("window_days", 63),
            ("carry_cents_per_lb_month", 0.3),
            ("max_worst_shortfall_cents", 1.0),
        )
    }
    assert len(set(changed.values()) | {pg.programme_hash(a)}) == 6


def test_same_programme_twice_queues_one_backtest_and_a_ready_one_is_cached(store):
    programme = pg.validate_programme(GOOD)
    first, queued = pg.request_backtest(store, programme, "2025-03-28")
    again, queued_again = pg.request_backtest(store, programme, "2025-03-28")
    assert (first["status"], queued, again["status"], queued_again) == (
        "queued",
        True,
        "queued",
        False,
    )
    assert [q.programme_hash for q in pg.queued_backtests(store)] == [pg.programme_hash(programme)]
    # a bigger volume is another programme: a second row
    bigger = pg.validate_programme({**GOOD, "railcars_per_window": 20})
    pg.request_backtest(store, bigger, "2025-03-28")
    assert len(pg.queued_backtests(store)) == 2
    # ready for this date: cached, nothing queued again
    pg.mark_running(store, first["programme_hash"], "run-1")
    running, _ = pg.request_backtest(store, programme, "2025-03-28")
    assert running["status"] == "running" and running["run_id"] == "run-1"
    pg.mark_ready(store, first["programme_hash"], {"windows": 7}, "2025-03-28")
    cached, queued = pg.request_backtest(store, programme, "2025-03-28")
    assert (cached["status"], queued, cached["result"]) == ("ready", False, {"windows": 7})
    assert [q.programme_hash for q in pg.queued_backtests(store)] == [pg.programme_hash(bigger)]
    # new data: the cached result is outdated and a request runs it again
    status = pg.backtest_status(store, programme, "2025-03-31")
    assert status["status"] == "ready" and status["outdated"] and status["as_of"] == "2025-03-28"
    requeued, queued = pg.request_backtest(store, programme, "2025-03-31")
    assert (requeued["status"], queued, requeued["as_of"], requeued["result"]) == (
        "queued",
        True,
        "2025-03-31",
        None,
    )


def test_a_failed_backtest_is_written_failed_and_may_be_asked_for_again(store):
    programme = pg.validate_programme(GOOD)
    view, _ = pg.request_backtest(store, programme, "2025-03-28")
    [queued] = pg.queued_backtests(store)

    def no_series(_programme):
        raise ValueError("no decision forecasts for the horizons ['1w', '1m', '3m']")

    with pytest.raises(ValueError):
        pg.execute_backtest(store, queued, "run-9", no_series)
    failed = pg.backtest_status(store, programme, "2025-03-28")
    assert failed["status"] == "failed" and failed["run_id"] == "run-9"
    assert (
        failed["error"] == "ValueError: no decision forecasts for the horizons ['1w', '1m', '3m']"
    )
    again, queued_again = pg.request_backtest(store, programme, "2025-03-28")
    assert again["status"] == "queued" and queued_again and again["error"] is None
    [second] = pg.queued_backtests(store)
    assert second.run_key != queued.run_key  # a new Dagster run, even within the same second
    assert second.run_key.startswith(f"programme-{queued.programme_hash[:16]}-2025-03-28-")


def test_execute_writes_the_result_with_the_date_it_ran_on(store):
    programme = pg.validate_programme(GOOD)
    pg.request_backtest(store, programme, "2025-03-28")
    [queued] = pg.queued_backtests(store)
    result = pg.execute_backtest(
        store, queued, "run-2", lambda p: ({"lb": p.total_lb}, "2025-03-31")
    )
    assert result == {
        "lb": 1_800_000,
        "programme_hash": queued.programme_hash,
        "as_of": "2025-03-31",
    }
    status = pg.backtest_status(store, programme, "2025-03-31")
    assert (status["status"], status["outdated"], status["result"]) == ("ready", False, result)


def test_one_buyer_never_reads_or_changes_anothers_programme(store):
    alice, bob = add_user(store, "alice@example.com"), add_user(store, "bob@example.com")
    mine = pg.validate_programme({**GOOD, "railcars_per_window": 3, "window_days": 63})
    pg.set_programme(store, alice, mine)
    assert pg.get_programme(store, alice) == (mine, False)
    assert pg.get_programme(store, bob) == (pg.default_programme(), True)
    theirs = pg.validate_programme({**GOOD, "railcars_per_window": 40})
    pg.set_programme(store, bob, theirs)
    pg.set_programme(store, bob, theirs)  # setting again replaces, never adds
    assert pg.get_programme(store, alice) == (mine, False)
    assert pg.get_programme(store, bob) == (theirs, False)
    assert store.table_counts()["programmes"] == 2


def test_todays_recommendation_scaled_to_his_volume():
    rec = {"as_of": "2025-03-28", "action": "buy", "buy_lb": 180_000, "total_lb": 1_800_000}
    small = pg.validate_programme({**GOOD, "railcars_per_window": 5})
    double = pg.validate_programme({**GOOD, "railcars_per_window": 20})
    a, b = pg.scaled_recommendation(rec, small), pg.scaled_recommendation(rec, double)
    assert a["share"] == b["share"] == pytest.approx(0.1)
    assert (a["buy_lb"], a["buy_railcars"], a["window_lb"]) == pytest.approx((90_000, 0.5, 900_000))
    assert b["buy_lb"] == pytest.approx(4 * a["buy_lb"]) and b["buy_railcars"] == pytest.approx(2)
    assert pg.scaled_recommendation(None, small) is None
    # the platform logged even buying, the policy shown for every tolerance on the real record
    assert a["shown_policy"] == "even" and a["same_policy"] is False  # rec carries no policy
    assert pg.scaled_recommendation({**rec, "policy": "even"}, small)["same_policy"] is True
    assert pg.scaled_recommendation({**rec, "policy": "cvar"}, small)["same_policy"] is False
