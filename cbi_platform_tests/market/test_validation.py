import datetime as dt

import polars as pl
import pytest

from cbi_platform.market import validation as v
from cbi_platform.market.schema import MarketDataError, conform_prices


def _prices(rows):
    df = pl.DataFrame(rows, schema=["symbol", "date", "value"], orient="row")
    return conform_prices(
        df.with_columns(unit=pl.lit("x"), source=pl.lit("test"), published_at=pl.col("date"))
    )


def _daily(symbol, start, values):
    dates = pl.date_range(start, start + dt.timedelta(days=400), "1d", eager=True)
    dates = dates.filter(dates.dt.weekday() <= 5)[: len(values)]
    return [(symbol, d, float(x)) for d, x in zip(dates, values, strict=True)]


def test_clean_data_passes_every_rule():
    rows = _daily("ZL", dt.date(2024, 1, 1), [40 + 0.1 * i for i in range(100)])
    findings = v.validate_market_prices(_prices(rows), "ZL", dt.date(2024, 5, 20))
    assert all(f.passed for f in findings), v.format_report(findings)


def test_duplicate_dates_are_blocking_and_named():
    rows = _daily("ZL", dt.date(2024, 1, 1), [40.0] * 10)
    rows.append(rows[3])
    finding = v.check_duplicates(_prices(rows))
    assert not finding.passed and finding.severity == v.ERROR
    assert "ZL on 2024-01-04" in finding.message


def test_non_positive_target_blocks_but_driver_only_warns():
    rows = _daily("ZL", dt.date(2024, 1, 1), [40.0, 0.0, 41.0])
    rows += _daily("WTI", dt.date(2024, 1, 1), [20.0, -36.98, 18.0])
    prices = _prices(rows)
    target = v.check_target_positive(prices, "ZL")
    driver = v.check_driver_positive(prices, "ZL")
    assert not target.passed and target.severity == v.ERROR and "2024-01-02" in target.message
    assert not driver.passed and driver.severity == v.WARN and "-36.98" in driver.message
    with pytest.raises(MarketDataError, match="target_positive"):
        v.raise_on_errors(v.validate_market_prices(prices, "ZL"), where="test")


def test_gap_and_staleness_warnings_carry_dates():
    rows = _daily("ZL", dt.date(2024, 1, 1), [40.0] * 30)
    rows = rows[:10] + rows[20:]  # a two-week hole
    prices = _prices(rows)
    gaps = v.check_gaps(prices)
    assert not gaps.passed and "ZL" in gaps.evidence["gaps"]
    stale = v.check_staleness(prices, dt.date(2024, 6, 1))
    assert not stale.passed and stale.evidence["stale"]["ZL"]["business_days_behind"] > 50


def test_return_outlier_found_by_robust_z():
    values = [40 * (1 + 0.001 * ((-1) ** i)) for i in range(200)]
    values[120] = values[119] * 1.5
    finding = v.check_return_outliers(_prices(_daily("ZL", dt.date(2023, 1, 2), values)))
    assert not finding.passed
    assert any("ZL" in o for o in finding.evidence["outliers"])


def test_schema_failure_names_columns_and_stops_other_rules():
    broken = pl.DataFrame({"symbol": ["ZL"], "date": [dt.date(2024, 1, 1)], "value": [None]})
    broken = conform_prices(
        broken.with_columns(unit=pl.lit("x"), source=pl.lit("t"), published_at=pl.col("date"))
    )
    findings = v.validate_market_prices(broken, "ZL")
    assert len(findings) == 1 and not findings[0].passed
    assert findings[0].evidence["nulls"] == {"value": 1}
