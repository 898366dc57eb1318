"""GET /calibration/{horizon}, /intelligence and /notices on a home written by the platform's
own writers (`insight_home`): the numbers are recomputed here from the same rows."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from cbi_platform.api import create_app
from cbi_platform.api.keys import create_key
from cbi_platform.operations.market_state import market_state_path
from cbi_platform_tests.api.insight_home import (
    WALK_FORWARD_HELD_P30_P70,
    WALK_FORWARD_ORIGINS,
    build_insight_home,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return build_insight_home(tmp_path_factory.mktemp("insight_home"))


@pytest.fixture(scope="module")
def client(home):
    key, _ = create_key(home.path, "insight")
    with TestClient(create_app(home.path, max_business_days_behind=2)) as c:
        c.headers["X-API-Key"] = key
        yield c


def _served_outcomes(home, horizon: str) -> list[tuple[float, float, float, float, float]]:
    """(p10, p30, p70, p90, actual) of every served forecast whose target date has a close."""
    history = home.store.history("served").filter(pl.col("horizon") == horizon)
    closes = dict(zip(home.days, home.prices, strict=True))
    out = []
    for r in history.sort("as_of").iter_rows(named=True):
        if r["target_date"] in closes:
            out.append((r["p10"], r["p30"], r["p70"], r["p90"], closes[r["target_date"]]))
    return out


def test_calibration_counts_the_matured_served_forecasts(client, home):
    body = client.get("/calibration/1w").json()
    outcomes = _served_outcomes(home, "1w")[-90:]
    assert body["source"] == "served" and body["n_matured"] == len(outcomes) == 55
    inner, outer = body["hit_rates"]
    held_inner = sum(p30 <= a <= p70 for _, p30, p70, _, a in outcomes)
    held_outer = sum(p10 <= a <= p90 for p10, _, _, p90, a in outcomes)
    assert (inner["held"], inner["n"]) == (held_inner, 55)
    assert (outer["held"], outer["n"]) == (held_outer, 55)
    assert inner["n_effective"] == 11  # 55 daily origins, 5-day windows: 1 in 5 is independent
    assert inner["sentence"].startswith(f"The 1w P30–P70 range held {held_inner} of the last 55")
    assert [z["actual"] for z in body["zones"]] == [a for *_, a in outcomes]
    assert f"inside P10–P90 on {held_outer} of them" in body["summary"]
    assert "effective sample size" in body["method"]


def test_calibration_falls_back_to_the_published_walk_forward(client):
    body = client.get("/calibration/12m").json()  # no 12m forecast has matured in 60 days
    assert body["source"] == "walk_forward"
    assert "walk-forward" in body["label"] and "never served" in body["label"]
    inner = body["hit_rates"][0]
    assert (inner["held"], inner["n"]) == (WALK_FORWARD_HELD_P30_P70, WALK_FORWARD_ORIGINS)
    assert body["hit_rates"][1]["held"] == 2 * WALK_FORWARD_HELD_P30_P70
    assert len(body["zones"]) == WALK_FORWARD_ORIGINS


def test_calibration_without_either_is_an_empty_state(client):
    body = client.get("/calibration/6m").json()
    assert body["source"] == "none" and body["zones"] == [] and body["n_matured"] == 0
    assert "fills in as forecasts mature" in body["label"]


def test_calibration_refuses_an_unknown_horizon_and_a_missing_key(client, home):
    bad = client.get("/calibration/2w")
    assert bad.status_code == 422 and "horizon" in bad.json()["message"]
    anonymous = TestClient(create_app(home.path, max_business_days_behind=2))
    assert anonymous.get("/calibration/1w").status_code == 401
    assert anonymous.get("/intelligence").status_code == 401
    assert anonymous.get("/notices").status_code == 401


def test_notices_per_horizon(client):
    body = client.get("/notices").json()
    kinds = {h["horizon"]: [n["kind"] for n in h["notices"]] for h in body["horizons"]}
    assert kinds == {
        "1w": [],
        "1m": [],
        "3m": ["random_walk"],
        "6m": ["random_walk"],
        "12m": ["provisional", "random_walk"],
    }
    twelve = next(h for h in body["horizons"] if h["horizon"] == "12m")["notices"]
    assert "90% coverage 0.740 is not within 5% of 0.90" in twelve[0]["sentence"]


def test_notices_say_stale_first_when_the_refresh_finds_stale_data(tmp_path):
    home = build_insight_home(tmp_path / "stale", stale=True)
    key, _ = create_key(home.path, "s")
    with TestClient(create_app(home.path, max_business_days_behind=2)) as c:
        body = c.get("/notices", headers={"X-API-Key": key}).json()
    assert body["health_status"] == "stale"
    for h in body["horizons"]:
        assert h["notices"][0]["kind"] == "stale"
        assert h["notices"][0]["sentence"].startswith("Data are stale:")


def test_intelligence_has_each_item_with_its_freshness(client, home):
    body = client.get("/intelligence").json()
    items = {i["key"]: i for i in body["items"]}
    assert list(items) == [
        "regime",
        "volatility",
        "correlation_soy_palm",
        "correlation_soy_crude",
        "cot",
        "news",
    ]
    state = json.loads(market_state_path(home.path).read_text())
    regime = items["regime"]
    spell = state["regime"]
    assert regime["status"] == "ok" and regime["as_of"] == spell["as_of"]
    assert f"since {spell['since']}: {spell['trading_days']} trading day" in regime["text"]
    assert "bull 70%, normal 20%, bear 8%, crisis 2%" in regime["text"]
    assert regime["freshness"] == f"as of {home.last_day} · current" and not regime["stale"]
    # The 1m volatility against its own earlier values, recomputed from the served history.
    served = home.store.history("served").filter(pl.col("horizon") == "1m").sort("as_of")
    vols = served["volatility"].to_numpy()
    percentile = np.mean(vols[:-1] <= vols[-1]) * 100
    annual = vols[-1] * np.sqrt(252 / 21)
    assert items["volatility"]["detail"]["horizon"] == "1m"
    assert f"{100 * annual:.1f}% a year" in items["volatility"]["text"]
    assert (
        f"higher than {percentile:.0f}% of its {len(vols) - 1} earlier"
        in (items["volatility"]["text"])
    )
    crude = items["correlation_soy_crude"]
    assert crude["status"] == "ok" and "usual range" in crude["text"]
    cot = items["cot"]
    assert cot["status"] == "ok" and f"report of {state['cot']['as_of']}" in cot["text"]
    assert cot["stale"] is False  # weekly: current while at most 10 business days old
    assert items["news"]["status"] == "ok" and "from 8 articles" in items["news"]["text"]


def test_intelligence_says_what_is_absent_instead_of_inventing(tmp_path, home):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(home.path, bare)
    state = json.loads(market_state_path(bare).read_text())
    state["cot"] = None
    state["correlations"] = [
        {"pair": "soy_palm", "name": "Soy–palm", "partner": None, "as_of": None,
         "skipped": "no daily series for any of PALM (only monthly PALM_M, too coarse)"},
    ]  # fmt: skip
    state["regime"]["as_of"] = "2025-03-14"  # two weeks old: stale
    market_state_path(bare).write_text(json.dumps(state))
    (bare / "published" / "news_sentiment.json").unlink()
    key, _ = create_key(bare, "b")
    with TestClient(create_app(bare, max_business_days_behind=2)) as c:
        items = {
            i["key"]: i for i in c.get("/intelligence", headers={"X-API-Key": key}).json()["items"]
        }
    assert items["cot"]["status"] == "not_in_data"
    assert items["cot"]["text"] == "Not in this data: there is no CFTC COT series for ZL."
    assert items["correlation_soy_palm"]["status"] == "not_in_data"
    assert "only monthly PALM_M" in items["correlation_soy_palm"]["text"]
    assert items["news"]["status"] == "not_published"
    assert items["regime"]["stale"] is True
    assert (
        items["regime"]["freshness"]
        == "as of 2025-03-14 · stale: 10 business days before 2025-03-28"
    )


def test_answers_are_built_once_per_publication(tmp_path, home):
    import shutil

    from cbi_platform.api.data import HomeReader
    from cbi_platform.operations.market_state import publish_market_state

    copy = tmp_path / "copy"
    shutil.copytree(home.path, copy)
    reader = HomeReader(copy, max_business_days_behind=2)
    first = reader.intelligence()
    assert reader.intelligence() is first and reader.calibration("1w") is reader.calibration("1w")
    state = json.loads(market_state_path(copy).read_text())
    state["regime"] = {**state["regime"], "regime": "crisis", "trading_days": 2}
    publish_market_state(copy, state)
    second = json.loads(reader.intelligence())
    regime = next(i for i in second["items"] if i["key"] == "regime")
    assert regime["text"].startswith(f"Crisis since {state['regime']['since']}: 2 trading days")
    assert reader.market_state.loads == 2
