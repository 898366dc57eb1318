"""The market-data checks run as one step: every rule reports under its own name, a failed
blocking rule stops what is downstream, a failed warning does not, and a rule that raises is
reported as that rule's failure while the others still report."""

import dagster as dg
import polars as pl

from cbi_platform.defs.market import checks as market_checks
from cbi_platform.defs.resources import build_resources


def _source():
    return build_resources({"CBI_SIM_END": "2025-03-31"})["market_source"]


def _prices() -> pl.DataFrame:
    return _source().load().prices  # what market_prices writes when its validation passes


def _run(frame: pl.DataFrame):
    @dg.asset(key=market_checks.MARKET_PRICES)
    def stand_in() -> pl.DataFrame:
        return frame

    @dg.asset(deps=[stand_in])
    def downstream() -> int:
        return 1

    return dg.materialize(
        [stand_in, downstream, market_checks.market_prices_checks],
        resources={"market_source": _source()},
        raise_on_error=False,
    )


NAMES = {name for name, *_ in market_checks.RULES}


def test_good_prices_pass_every_rule_in_one_step():
    result = _run(_prices())
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == NAMES
    blocking = {e.check_name for e in evaluations.values() if e.blocking}
    assert blocking == {name for name, b, *_ in market_checks.RULES if b}
    assert all(e.passed for e in evaluations.values() if e.blocking)
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert "market_prices_checks" in steps and "downstream" in steps


def test_a_failed_blocking_rule_stops_downstream():
    frame = _prices()
    result = _run(pl.concat([frame, frame.tail(1)]))  # one duplicate (symbol, date)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == NAMES
    assert not evaluations["market_prices_duplicate_dates"].passed
    assert evaluations["market_prices_gaps"].passed  # the other rules still reported
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert "downstream" not in materialized and not result.success


def test_a_raising_rule_is_reported_as_its_own_failure(monkeypatch):
    def broken(df, src):
        raise ValueError("rule broke")

    rules = [
        (name, blocking, description, broken if name == "market_prices_gaps" else rule)
        for name, blocking, description, rule in market_checks.RULES
    ]
    monkeypatch.setattr(market_checks, "RULES", rules)
    result = _run(_prices())
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == NAMES
    gaps = evaluations["market_prices_gaps"]
    assert not gaps.passed and not gaps.blocking
    assert "rule broke" in (gaps.description or "")
    assert all(e.passed for e in evaluations.values() if e.blocking)
    # a failed warning does not stop what is downstream
    assert result.success
