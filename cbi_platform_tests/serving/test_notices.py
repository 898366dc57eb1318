"""The three things a buyer must never misread, each as its own kind and one plain sentence."""

from __future__ import annotations

import datetime as dt

from cbi_platform.serving.notices import (
    PROVISIONAL,
    RANDOM_WALK_KIND,
    STALE,
    health_of,
    is_random_walk,
    notices,
)

MODEL = {
    "horizon": "1m",
    "as_of": dt.date(2026, 12, 4),
    "price": 45.5,
    "combiner": "inverse_error",
    "shrink_weight": 0.7,
    "driver_note": "exact",
    "provisional": False,
    "failed_gates": [],
}
FRESH = {
    "status": "ok",
    "data_last_date": "2026-12-04",
    "business_days_behind": 0,
    "data_reference_date": "2026-12-04",
    "max_business_days_behind": 2,
}


def test_a_model_forecast_on_fresh_data_has_no_notice():
    assert notices(MODEL, FRESH) == []
    assert notices(MODEL, None) == []


def test_provisional_names_the_failed_gates():
    record = {**MODEL, "provisional": True, "failed_gates": ["90% coverage 0.74 is low"]}
    (notice,) = notices(record, FRESH)
    assert notice.kind == PROVISIONAL and notice.label == "Provisional forecast"
    assert notice.sentence == (
        "This forecast is provisional: no model version passed the promotion checks "
        "(90% coverage 0.74 is low), so its zones are less trustworthy than usual."
    )
    (bare,) = notices({**MODEL, "provisional": True, "failed_gates": []}, FRESH)
    assert "(see the model card)" in bare.sentence


def test_stale_data_says_the_last_close_and_how_far_behind():
    health = {
        **FRESH,
        "status": "stale",
        "data_last_date": "2026-11-27",
        "business_days_behind": 6,
        "data_reference_date": "2026-12-07",
    }
    (notice,) = notices(MODEL, health)
    assert notice.kind == STALE
    assert notice.sentence.startswith(
        "Data are stale: the last close is 2026-11-27, 6 business days before 2026-12-07"
    )
    assert "up to 2 business days behind" in notice.sentence


def test_stale_by_the_refresh_check_alone_still_says_so():
    health = {**FRESH, "status": "stale"}  # 0 days behind, but the freshness check fires
    (notice,) = notices(MODEL, health)
    assert notice.kind == STALE
    assert "the daily refresh found the market data out of date" in notice.sentence
    assert "(the last close is 2026-12-04)" in notice.sentence


def test_the_random_walk_says_the_best_estimate_is_todays_price():
    for record in (
        {**MODEL, "combiner": "random_walk"},
        {**MODEL, "shrink_weight": 0.0},
        {**MODEL, "driver_note": "the ensemble is the random walk here: no member beat it"},
    ):
        assert is_random_walk(record)
        (notice,) = notices(record, FRESH)
        assert notice.kind == RANDOM_WALK_KIND
        assert notice.sentence == (
            "This forecast is the random walk: no model beat 'no change' on past data 1 month "
            "ahead, so the best estimate is today's price (45.50 c/lb); the zones show how far "
            "it may move."
        )
    assert not is_random_walk(MODEL)


def test_all_three_at_once_come_stale_first_each_its_own_kind():
    record = {**MODEL, "combiner": "random_walk", "provisional": True, "failed_gates": ["x"]}
    found = notices(record, {**FRESH, "status": "stale"})
    assert [n.kind for n in found] == [STALE, PROVISIONAL, RANDOM_WALK_KIND]
    assert len({n.label for n in found}) == 3 and len({n.sentence for n in found}) == 3


def test_health_from_a_record_alone_matches_the_apis_rule():
    late = {**MODEL, "data_last_date": dt.date(2026, 11, 27), "data_business_days_behind": 6,
            "data_reference_date": dt.date(2026, 12, 7)}  # fmt: skip
    (notice,) = notices(late, health_of(late, 2))
    assert notice.sentence.startswith(
        "Data are stale: the last close is 2026-11-27, 6 business days before 2026-12-07"
    )
    on_time = {**late, "data_business_days_behind": 2}
    assert notices(on_time, health_of(on_time, 2)) == []
    assert [n.kind for n in notices(on_time, health_of(on_time, 2, stale_condition=True))] == [
        STALE
    ]
