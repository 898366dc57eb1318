import datetime as dt

import polars as pl
import pytest

from cbi_platform.regimes.calendar import load_regime_calendar
from cbi_platform.regimes.datasets import write_regime_datasets


def test_shipped_calendar_weights():
    cal = load_regime_calendar()
    dates = pl.Series(
        [
            dt.date(2024, 5, 1),
            dt.date(2018, 3, 1),
            dt.date(2022, 1, 3),
            dt.date(2008, 10, 1),
            dt.date(2020, 3, 2),
            dt.date(2020, 2, 14),
            dt.date(2012, 6, 1),
            dt.date(2009, 7, 1),
        ]
    )
    out = cal.label(dates)
    assert out["calendar_regime"].to_list() == [
        "trump_2.0",
        "trade_war",
        "inflation",
        "crisis",
        "crisis",
        "historical",
        "historical",
        "historical",
    ]
    assert out["regime_weight"].to_list() == [5000, 1500, 1200, 800, 500, 50, 50, 50]


def test_overlapping_windows_are_refused(tmp_path):
    path = tmp_path / "cal.yaml"
    path.write_text(
        "default: {name: h, weight: 1}\nwindows:\n"
        "  - {name: a, start: 2020-01-01, end: 2020-12-31, weight: 2}\n"
        "  - {name: b, start: 2020-06-01, end: 2021-12-31, weight: 3}\n"
    )
    with pytest.raises(ValueError, match="overlap"):
        load_regime_calendar(path)


def test_regime_datasets_partition_every_row(tmp_path):
    dates = pl.date_range(dt.date(2007, 1, 1), dt.date(2024, 12, 31), "1d", eager=True)
    frame = pl.DataFrame({"date": dates, "f_x": range(len(dates))})
    summary = write_regime_datasets(frame, load_regime_calendar(), tmp_path)
    assert summary["rows"].sum() == frame.height
    crisis = pl.read_parquet(tmp_path / "crisis.parquet")
    assert set(crisis["regime_weight"].unique()) == {800.0, 500.0}
    assert crisis["date"].is_between(dt.date(2008, 1, 1), dt.date(2020, 12, 31)).all()
