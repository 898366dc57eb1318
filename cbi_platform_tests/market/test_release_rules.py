"""Weekly COT is never usable before the CFTC released it, holiday weeks included.

A fixed publication_lag of 4 business days is right for an ordinary Tuesday as-of date and
wrong for the Monday as-of dates of holiday weeks: Monday + 4 is the release Friday itself.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
import yaml

from cbi_platform.market.files import load_files_source, read_series
from cbi_platform.market.manifest import SeriesSpec, load_manifest
from cbi_platform.market.release_calendar import cftc_weekly_release, us_federal_holidays
from cbi_platform.market.schema import MarketDataError

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_MANIFEST = REPO / "manifests" / "shared_data.yaml"
D = dt.date


def _friday_of_week(day: pl.Expr) -> pl.Expr:
    return day + pl.duration(days=5 - day.dt.weekday().cast(pl.Int64))


def _cot_spec(path: str, **fields) -> SeriesSpec:
    base = {
        "symbol": "COT_ZL",
        "path": path,
        "unit": "% of open interest",
        "format": "csv",
        "frequency": "weekly",
        "release_rule": "cftc_weekly",
    }
    return SeriesSpec(**(base | fields))


def _write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


# --- the rule on a small synthetic frame -------------------------------------------------------


def test_cftc_rule_on_ordinary_monday_and_holiday_weeks(tmp_path):
    _write(
        tmp_path,
        "cot.csv",
        "Date,net\n"
        "2020-12-21,1.0\n"  # Monday as-of, Dec 24 closure + Dec 25: released Mon 12-28
        "2024-06-04,2.0\n"  # ordinary Tuesday: released Fri 06-07, usable Mon 06-10
        "2024-06-18,3.0\n"  # Juneteenth Wed 06-19: released Mon 06-24 (CFTC schedule)
        "2024-11-26,4.0\n"  # Thanksgiving Thu: released Mon 12-02 (CFTC schedule)
        "2025-11-10,5.0\n",  # Monday as-of, Veterans Day Tue: released Fri 11-14 (CFTC)
    )
    frame = read_series(_cot_spec("cot.csv"), tmp_path)
    releases = cftc_weekly_release(frame["date"])["release"].to_list()
    assert releases == [
        D(2020, 12, 28),
        D(2024, 6, 7),
        D(2024, 6, 24),
        D(2024, 12, 2),
        D(2025, 11, 14),
    ]
    # Released at 15:30 ET, after the CBOT close: usable the next weekday.
    assert frame["published_at"].to_list() == [
        D(2020, 12, 29),
        D(2024, 6, 10),
        D(2024, 6, 25),
        D(2024, 12, 3),
        D(2025, 11, 17),
    ]


def test_monday_as_of_is_usable_only_after_its_friday_release(tmp_path):
    """With the old publication_lag: 4, Monday 2017-07-03 was usable Fri 07-07, the release day
    (the report comes out at 15:30 ET, after the CBOT close)."""
    _write(tmp_path, "cot.csv", "Date,net\n2017-07-03,1.0\n2017-07-11,2.0\n")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "target": "COT_ZL",
                "series": [
                    {
                        "symbol": "COT_ZL",
                        "path": "cot.csv",
                        "frequency": "weekly",
                        "unit": "% of open interest",
                        "release_rule": "cftc_weekly",
                    }
                ],
            }
        )
    )
    prices = load_files_source(manifest).prices
    fridays = prices.select(_friday_of_week(pl.col("date"))).to_series()
    assert (prices["published_at"] > fridays).all()
    assert prices["published_at"].to_list() == [D(2017, 7, 10), D(2017, 7, 17)]


def test_federal_holidays_follow_the_observed_rules():
    days = set(us_federal_holidays(2020, 2022))
    assert {D(2020, 7, 3), D(2020, 11, 26), D(2020, 12, 24), D(2020, 12, 25)} <= days
    assert D(2021, 6, 18) in days and D(2020, 6, 19) not in days  # Juneteenth from 2021
    assert D(2021, 12, 31) in days  # New Year 2022 is a Saturday: observed on Friday
    assert D(2022, 1, 17) in days and D(2022, 10, 10) in days  # MLK, Columbus Day
    assert all(day.weekday() < 5 for day in days)


def test_weekend_as_of_dates_are_rejected_with_file_column_and_rows(tmp_path):
    _write(tmp_path, "cot.csv", "Date,net\n2024-06-04,1.0\n2024-06-08,2.0\n")
    with pytest.raises(MarketDataError) as caught:
        read_series(_cot_spec("cot.csv"), tmp_path)
    message = str(caught.value)
    assert "cot.csv" in message and "column 'Date'" in message
    assert "row 2 (file line 3; date 2024-06-08)" in message


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"release_rule": "cftc"}, "release_rule must be one of cftc_weekly"),
        ({"release_rule": "cftc_weekly", "frequency": "daily"}, "applies to weekly series"),
        (
            {"release_rule": "cftc_weekly", "publication_lag": 4},
            "set either release_rule or publication_lag, not both",
        ),
    ],
)
def test_release_rule_is_validated_naming_file_and_series(tmp_path, fields, expected):
    series = {"symbol": "COT_ZL", "path": "cot.csv", "unit": "pct", "frequency": "weekly"}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        yaml.safe_dump({"version": 1, "target": "COT_ZL", "series": [series | fields]})
    )
    with pytest.raises(MarketDataError, match=expected) as caught:
        load_manifest(manifest)
    assert str(manifest) in str(caught.value) and "series #1 (COT_ZL)" in str(caught.value)


# --- the real data beside the repository (skips when absent) -----------------------------------


@pytest.fixture(scope="module")
def shared_cot():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    prices = load_files_source(EXAMPLE_MANIFEST).prices
    return prices.filter(pl.col("symbol").str.starts_with("COT_"))


def test_real_cot_is_never_usable_before_the_friday_of_its_week(shared_cot):
    cot = shared_cot.with_columns(friday=_friday_of_week(pl.col("date")))
    assert cot.height == 3 * 1066
    early = cot.filter(pl.col("published_at") <= pl.col("friday"))
    assert early.height == 0, early.head(10)
    mondays = cot.filter((pl.col("symbol") == "COT_ZL") & (pl.col("date").dt.weekday() == 1))
    assert mondays["date"].to_list() == [
        D(2003, 12, 22),
        D(2004, 4, 12),
        D(2006, 7, 3),
        D(2008, 12, 22),
        D(2009, 11, 9),
        D(2012, 12, 24),
        D(2012, 12, 31),
        D(2017, 7, 3),
        D(2018, 12, 24),
        D(2018, 12, 31),
        D(2020, 12, 21),
        D(2023, 7, 3),
    ]
    assert (mondays["published_at"] > mondays["date"] + dt.timedelta(days=4)).all()
