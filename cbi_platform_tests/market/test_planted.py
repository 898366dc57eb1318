"""The soak's planted data faults: each bad day is refused by validation with the column and
rows named; a late revision is delivered as data."""

import datetime as dt
import json

import polars as pl
import pytest

from cbi_platform import clock
from cbi_platform.market.planted import PlantedDataError, PlantedFault, plant, read_planted
from cbi_platform.market.sources import SourceConfig, load_market
from cbi_platform.market.validation import raise_on_errors, validate_market_prices

DAY = dt.date(2025, 7, 14)


@pytest.fixture
def feed(tmp_path, monkeypatch):
    """The simulated live feed as the soak reads it, with a planted-fault file."""
    monkeypatch.setenv("CBI_CLOCK_FILE", str(tmp_path / "clock"))
    planted = tmp_path / "planted.json"
    monkeypatch.setenv("CBI_PLANTED_DATA", str(planted))

    def deliver(day, faults=None):
        clock.write_clock_file(tmp_path / "clock", day)
        if faults is None:
            planted.unlink(missing_ok=True)
        else:
            planted.write_text(json.dumps(faults))
        config = SourceConfig(kind="simulated", simulator_live=True, replay_through=day)
        return load_market(config).prices

    return deliver


def _refusal(prices) -> str:
    findings = validate_market_prices(prices, "ZL", DAY)
    with pytest.raises(Exception) as caught:
        raise_on_errors(findings, where="market_prices (source simulated)")
    return str(caught.value)


def test_a_negative_price_is_refused_naming_the_day(feed):
    message = _refusal(feed(DAY, [{"kind": "negative_price", "day": DAY.isoformat()}]))
    assert "non-positive ZL" in message and DAY.isoformat() in message


def test_a_duplicate_date_is_refused_naming_the_pair(feed):
    message = _refusal(feed(DAY, [{"kind": "duplicate_date", "day": DAY.isoformat()}]))
    assert "duplicate (symbol, date)" in message and DAY.isoformat() in message


def test_a_missing_column_is_refused_naming_it(feed):
    message = _refusal(feed(DAY, [{"kind": "missing_column", "day": DAY.isoformat()}]))
    assert "published_at" in message


def test_a_bad_day_is_bad_on_that_day_only_and_the_clean_feed_is_untouched(feed):
    clean = feed(DAY)
    planted = [{"kind": "negative_price", "day": DAY.isoformat()}]
    assert feed(DAY - dt.timedelta(days=3), planted).equals(feed(DAY - dt.timedelta(days=3)))
    next_day = feed(DAY + dt.timedelta(days=1), planted)
    on_day = (pl.col("symbol") == "ZL") & (pl.col("date") == DAY)
    assert next_day.filter(on_day)["value"].item() == clean.filter(on_day)["value"].item() > 0


def test_a_late_revision_changes_a_past_close_from_its_day_on(feed):
    revised = DAY - dt.timedelta(days=10)
    planted = [
        {
            "kind": "late_revision",
            "day": DAY.isoformat(),
            "revised": revised.isoformat(),
            "factor": 1.05,
        }
    ]

    def close(prices):
        row = prices.filter((pl.col("symbol") == "ZL") & (pl.col("date") == revised))
        return row["value"].item(), row["published_at"].item()

    before, _ = close(feed(DAY - dt.timedelta(days=1), planted))
    after, published = close(feed(DAY + dt.timedelta(days=3), planted))
    assert after == pytest.approx(before * 1.05) and published == DAY
    prices = feed(DAY, planted)
    findings = validate_market_prices(prices, "ZL", DAY)
    raise_on_errors(findings, where="market_prices")  # a revision is data, not an error


def test_an_unreadable_plant_names_the_file_and_entry(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('[{"kind": "typo", "day": "2025-07-14"}]')
    with pytest.raises(PlantedDataError, match=r"p\.json: entry 0: kind 'typo'"):
        read_planted(bad)
    assert read_planted(tmp_path / "absent.json") == []


def test_plant_leaves_other_symbols_alone():
    prices = pl.DataFrame(
        {
            "symbol": ["ZL", "ZS"],
            "date": [DAY, DAY],
            "value": [40.0, 1000.0],
            "published_at": [DAY, DAY],
        }
    )
    out = plant(prices, "ZL", DAY, [PlantedFault("negative_price", DAY)])
    assert out["value"].to_list() == [-40.0, 1000.0]
