"""The `files` source: manifest contract, canonical output, and one test per kind of bad input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
import yaml

from cbi_platform.market.files import load_files_source, read_series
from cbi_platform.market.manifest import SeriesSpec, load_manifest
from cbi_platform.market.schema import MARKET_PRICES_SCHEMA, MarketDataError

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_MANIFEST = REPO / "manifests" / "shared_data.yaml"


def write_csv(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def write_manifest(folder: Path, series: list[dict], **top) -> Path:
    manifest = {"version": 1, "target": series[0]["symbol"], "series": series} | top
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def csv_spec(path: str = "prices.csv", **fields) -> SeriesSpec:
    base = {"symbol": "WTI", "path": path, "unit": "USD/bbl", "format": "csv"}
    return SeriesSpec(**(base | fields))


def error_of(spec: SeriesSpec, folder: Path) -> str:
    with pytest.raises(MarketDataError) as caught:
        read_series(spec, folder)
    return str(caught.value)


# --- what a good file becomes ----------------------------------------------------------------


def test_single_csv_becomes_canonical_rows(tmp_path):
    write_csv(tmp_path, "prices.csv", "Date,Price\n2020-01-02,61.2\n2020-01-03,63.0\n")
    prices = read_series(csv_spec(), tmp_path)
    assert prices.schema == pl.Schema(MARKET_PRICES_SCHEMA)
    assert prices["date"].to_list() == [dt.date(2020, 1, 2), dt.date(2020, 1, 3)]
    assert prices["value"].to_list() == [61.2, 63.0]
    assert prices["published_at"].to_list() == prices["date"].to_list()
    assert set(prices["source"]) == {"files:prices"}
    assert set(prices["unit"]) == {"USD/bbl"}


def test_session_offset_moves_evening_bars_to_their_trading_date(tmp_path):
    stamps = [
        dt.datetime(2020, 1, 5, 22),
        dt.datetime(2020, 1, 6, 22),
        dt.datetime(2020, 1, 8, 10, 30),
    ]
    pl.DataFrame(
        {"datetime": stamps, "close": [30.0, 31.0, 32.0], "volume": [1.0, 2.0, 3.0]}
    ).write_parquet(tmp_path / "zl.parquet")
    spec = SeriesSpec(
        symbol="ZL",
        path="zl.parquet",
        unit="US cents/lb",
        format="parquet",
        date_column="datetime",
        value_column="close",
        volume_column="volume",
        session_offset_hours=6,
    )
    prices = read_series(spec, tmp_path)
    # Sunday 22:00 is Monday's bar; a holiday bar stamped mid-day keeps its own date.
    assert prices["date"].to_list() == [
        dt.date(2020, 1, 6),
        dt.date(2020, 1, 7),
        dt.date(2020, 1, 8),
    ]
    assert prices["volume"].to_list() == [1.0, 2.0, 3.0]


def test_wide_layout_drops_late_start_and_trailing_blanks(tmp_path):
    write_csv(
        tmp_path,
        "imf.csv",
        "Date,Palm oil,Soybean Oil\n1980-01-01,,500\n1980-02-01,410,510\n1980-03-01,420,\n",
    )
    palm = read_series(
        csv_spec("imf.csv", symbol="PALM_M", layout="wide", value_column="Palm oil"), tmp_path
    )
    soy = read_series(
        csv_spec("imf.csv", symbol="ZL_M", layout="wide", value_column="Soybean Oil"), tmp_path
    )
    assert palm["date"].to_list() == [dt.date(1980, 2, 1), dt.date(1980, 3, 1)]
    assert soy["value"].to_list() == [500.0, 510.0]


def test_long_layout_keeps_only_its_symbol(tmp_path):
    write_csv(
        tmp_path,
        "long.csv",
        "date,ticker,px\n2020-01-02,CL,61\n2020-01-02,CO,66\n2020-01-03,CL,62\n",
    )
    spec = csv_spec(
        "long.csv", layout="long", value_column="px", symbol_column="ticker", symbol_value="CL"
    )
    assert read_series(spec, tmp_path)["value"].to_list() == [61.0, 62.0]


def test_publication_lag_counts_business_days_from_period_end(tmp_path):
    write_csv(tmp_path, "cot.csv", "Date,net\n2024-06-04,1.5\n")  # a Tuesday
    write_csv(tmp_path, "imf.csv", "Date,px\n2024-08-01,900\n")  # August ends on a Saturday
    weekly = read_series(
        csv_spec("cot.csv", symbol="COT_ZL", frequency="weekly", publication_lag=4), tmp_path
    )
    monthly = read_series(
        csv_spec("imf.csv", symbol="ZL_M", frequency="monthly", publication_lag=10), tmp_path
    )
    # Tuesday's positions, released Friday after the close: usable the next Monday.
    assert weekly["published_at"].to_list() == [dt.date(2024, 6, 10)]
    # Saturday 31 Aug: business day 1 after it is Mon 2 Sep, business day 10 is Fri 13 Sep.
    assert monthly["published_at"].to_list() == [dt.date(2024, 9, 13)]


def test_non_positive_prices_are_kept(tmp_path):
    write_csv(
        tmp_path, "prices.csv", "Date,Price\n2020-04-17,18.27\n2020-04-20,-36.98\n2020-04-21,0\n"
    )
    assert read_series(csv_spec(), tmp_path)["value"].to_list() == [18.27, -36.98, 0.0]


def test_one_utc_offset_throughout_is_accepted(tmp_path):
    write_csv(
        tmp_path,
        "prices.csv",
        "Date,Price\n2020-01-02T21:00:00-05:00,1\n2020-01-03T21:00:00-05:00,2\n",
    )
    prices = read_series(csv_spec(), tmp_path)
    assert prices["date"].to_list() == [dt.date(2020, 1, 2), dt.date(2020, 1, 3)]


def test_bundle_has_source_notices_as_of_and_drops_short_gaps(tmp_path):
    write_csv(tmp_path, "zl.csv", "Date,Price\n2020-01-02,30\n2020-01-03,NA\n2020-01-06,31\n")
    write_csv(tmp_path, "wti.csv", "Date,Price\n2020-01-02,61\n")
    manifest = write_manifest(
        tmp_path,
        [
            {"symbol": "ZL", "path": "zl.csv", "unit": "US cents/lb"},
            {"symbol": "WTI", "path": "wti.csv", "unit": "USD/bbl"},
        ],
        name="demo",
        as_of="2020-01-06",
        target="WTI",
    )
    bundle = load_files_source(manifest)
    assert bundle.as_of == dt.date(2020, 1, 6)
    assert bundle.target == "WTI"  # the manifest's target, so callers need not re-read it
    assert set(bundle.prices["source"]) == {"files:demo"}
    assert bundle.prices.filter(pl.col("symbol") == "ZL")["value"].to_list() == [30.0, 31.0]
    assert bundle.news.height == 0
    notices = " | ".join(bundle.notices)
    assert "ZS, ZM, PALM, BRENT, DXY, USDBRL, RIN_D4" in notices
    assert "not in manifest: features that need them are dropped" in notices
    assert "no news" in notices
    assert "ZL: 1 missing value(s) in 1 short gap(s)" in notices


# --- bad input: one test per case, each asserting what the message says ----------------------


def test_missing_file_names_the_file_and_where_it_was_looked_for(tmp_path):
    message = error_of(csv_spec("nowhere/prices.csv"), tmp_path)
    assert str(tmp_path / "nowhere" / "prices.csv") in message
    assert "not found" in message and "fix the path" in message


def test_misspelled_column_suggests_the_closest(tmp_path):
    write_csv(tmp_path, "prices.csv", "Date,Price\n2020-01-02,1\n")
    message = error_of(csv_spec(value_column="Prce"), tmp_path)
    assert "prices.csv" in message
    assert "no column 'Prce' (value_column)" in message
    assert "Did you mean 'Price'?" in message
    assert "Columns in the file: Date, Price" in message


def test_missing_column_lists_the_columns_there_are(tmp_path):
    write_csv(tmp_path, "prices.csv", "Date,Price\n2020-01-02,1\n")
    message = error_of(csv_spec(value_column="Price", volume_column="volume"), tmp_path)
    assert "no column 'volume' (volume_column)" in message
    assert "Columns in the file: Date, Price" in message


def test_non_numeric_values_name_rows_lines_and_dates(tmp_path):
    write_csv(
        tmp_path,
        "prices.csv",
        'Date,Price\n2020-01-01,1\n2020-01-02,abc\n2020-01-03,"1,5"\n2020-01-06,2\n',
    )
    message = error_of(csv_spec(), tmp_path)
    assert "prices.csv" in message and "column 'Price'" in message
    assert "rows 2, 3 (file lines 3, 4; dates 2020-01-02, 2020-01-03)" in message
    assert "'abc', '1,5'" in message
    assert "plain numbers" in message


def test_header_shifted_by_one_column_is_detected(tmp_path):
    # An index column written without a name: every name sits one column to the left of its data.
    write_csv(tmp_path, "prices.csv", "Date,Price,Volume\n0,2020-01-02,61.2\n1,2020-01-03,63.0\n")
    message = error_of(csv_spec(date_column="Date", value_column="Price"), tmp_path)
    assert "prices.csv" in message
    assert "header seems shifted by one column" in message
    assert "'Date' holds numbers" in message and "'Price' holds dates" in message


def test_header_with_fewer_names_than_fields_is_detected(tmp_path):
    write_csv(tmp_path, "prices.csv", "Date,Price\n0,2020-01-02,61.2\n1,2020-01-03,63.0\n")
    message = error_of(csv_spec(), tmp_path)
    assert "header seems shifted by one column" in message
    assert "'0,2020-01-02,61.2'" in message


def test_unsorted_dates_name_the_first_out_of_order_row(tmp_path):
    write_csv(
        tmp_path,
        "prices.csv",
        "Date,Price\n2020-01-02,1\n2020-01-06,2\n2020-01-03,3\n2020-01-07,4\n",
    )
    message = error_of(csv_spec(), tmp_path)
    assert "prices.csv" in message
    assert "not in ascending order: row 3 (file line 4) has 2020-01-03, after 2020-01-06" in message
    assert "sort the file by date" in message


def test_duplicate_dates_after_session_offset_are_named(tmp_path):
    stamps = [
        dt.datetime(2020, 1, 6, 22),
        dt.datetime(2020, 1, 7, 10, 30),
        dt.datetime(2020, 1, 7, 22),
    ]
    pl.DataFrame({"datetime": stamps, "close": [1.0, 2.0, 3.0]}).write_parquet(
        tmp_path / "zl.parquet"
    )
    spec = SeriesSpec(
        symbol="ZL",
        path="zl.parquet",
        unit="US cents/lb",
        format="parquet",
        date_column="datetime",
        value_column="close",
        session_offset_hours=6,
    )
    message = error_of(spec, tmp_path)
    assert "zl.parquet" in message
    assert "duplicate dates (after session_offset_hours=6): 2020-01-07 (rows 1, 2)" in message
    assert "check session_offset_hours" in message


def test_mixed_utc_offsets_are_rejected(tmp_path):
    write_csv(
        tmp_path,
        "prices.csv",
        "Date,Price\n2020-01-02 21:00:00+00:00,1\n2020-01-03 16:00:00-05:00,2\n",
    )
    message = error_of(csv_spec(), tmp_path)
    assert "prices.csv" in message and "mixes time zones" in message
    assert "+00:00 in row 1" in message and "-05:00 in row 2" in message
    assert "convert every timestamp to one UTC offset" in message


def test_naive_and_aware_timestamps_mixed_are_rejected(tmp_path):
    write_csv(tmp_path, "prices.csv", "Date,Price\n2020-01-02 21:00:00,1\n2020-01-03T21:00:00Z,2\n")
    message = error_of(csv_spec(), tmp_path)
    assert "mixes time zones" in message
    assert "without a UTC offset in row 1" in message and "with one in row 2" in message


def test_unparseable_dates_name_rows_and_values(tmp_path):
    write_csv(tmp_path, "prices.csv", "Date,Price\n2020-01-02,1\n2020-13-01,2\n02/01/2020,3\n")
    message = error_of(csv_spec(), tmp_path)
    assert "column 'Date' has values that are not dates in rows 2, 3 (file lines 3, 4)" in message
    assert "'2020-13-01', '02/01/2020'" in message and "ISO 8601" in message


def test_empty_file_is_rejected(tmp_path):
    write_csv(tmp_path, "prices.csv", "")
    write_csv(tmp_path, "header_only.csv", "Date,Price\n")
    assert "prices.csv" in (message := error_of(csv_spec(), tmp_path)) and "empty" in message
    message = error_of(csv_spec("header_only.csv"), tmp_path)
    assert "header_only.csv" in message and "no data rows" in message


def test_nan_run_longer_than_max_names_its_first_and_last_date(tmp_path):
    rows = ["2020-01-01,1", "2020-01-02,", "2020-01-03,NaN", "2020-01-06,", "2020-01-07,2"]
    write_csv(tmp_path, "prices.csv", "Date,Price\n" + "\n".join(rows) + "\n")
    message = error_of(csv_spec(max_nan_run=2), tmp_path)
    assert "prices.csv" in message and "column 'Price'" in message
    assert "3 missing values in a row from 2020-01-02 to 2020-01-06" in message
    assert "max_nan_run=2" in message
    assert read_series(csv_spec(max_nan_run=3), tmp_path)["value"].to_list() == [1.0, 2.0]


def test_manifest_with_unknown_symbol_lists_known_and_closest(tmp_path):
    manifest = write_manifest(tmp_path, [{"symbol": "BRENTT", "path": "b.csv", "unit": "USD/bbl"}])
    with pytest.raises(MarketDataError) as caught:
        load_manifest(manifest)
    message = str(caught.value)
    assert str(manifest) in message and "series #1 (BRENTT)" in message
    assert "unknown symbol 'BRENTT'" in message and "Did you mean 'BRENT'?" in message
    assert "ZL, ZS, ZM, PALM, WTI, BRENT" in message


def test_manifest_with_unknown_key_names_key_and_series(tmp_path):
    manifest = write_manifest(
        tmp_path, [{"symbol": "ZL", "path": "zl.csv", "unit": "US cents/lb", "value_col": "close"}]
    )
    with pytest.raises(MarketDataError) as caught:
        load_manifest(manifest)
    message = str(caught.value)
    assert str(manifest) in message and "series #1 (ZL)" in message
    assert "unknown key 'value_col'" in message and "Did you mean 'value_column'?" in message


@pytest.mark.parametrize(
    ("top", "series", "expected"),
    [
        ({"version": 2}, {}, "version must be 1"),
        ({"target": "ZS"}, {}, "target 'ZS' must be the symbol of one of the series"),
        ({}, {"frequency": "weekly"}, "'publication_lag' is required for weekly series"),
        ({}, {"path": "zl.txt"}, "cannot infer the format of 'zl.txt'"),
        ({}, {"layout": "wide"}, "layout wide needs 'value_column'"),
    ],
)
def test_manifest_contract_violations(tmp_path, top, series, expected):
    manifest = write_manifest(
        tmp_path, [{"symbol": "ZL", "path": "zl.csv", "unit": "US cents/lb"} | series], **top
    )
    with pytest.raises(MarketDataError, match=expected) as caught:
        load_manifest(manifest)
    assert str(manifest) in str(caught.value)


def test_bundle_errors_name_the_manifest_and_the_data_file(tmp_path):
    manifest = write_manifest(tmp_path, [{"symbol": "ZL", "path": "zl.csv", "unit": "US cents/lb"}])
    with pytest.raises(MarketDataError) as caught:
        load_files_source(manifest)
    assert str(manifest) in str(caught.value) and "zl.csv (series ZL): file not found" in str(
        caught.value
    )


# --- the real data beside the repository (skips when absent) ---------------------------------


@pytest.fixture(scope="module")
def shared_bundle():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return load_files_source(EXAMPLE_MANIFEST)


def test_example_manifest_loads_every_series(shared_bundle):
    manifest = load_manifest(EXAMPLE_MANIFEST)
    assert manifest.target == "ZL" and manifest.as_of == dt.date(2024, 6, 21)
    assert set(shared_bundle.prices["symbol"]) == set(manifest.symbols)
    assert "PALM, DXY, USDBRL, RIN_D4 not in manifest: features that need them are dropped" in (
        shared_bundle.notices
    )


def test_real_zl_has_trading_dates_only(shared_bundle):
    zl = shared_bundle.prices.filter(pl.col("symbol") == "ZL")
    assert zl.height == 5000
    assert zl["date"].is_unique().all()
    assert (zl["date"].dt.weekday() <= 5).all()
    # The first bar is stamped Thursday 2004-08-19 21:00: Friday's session.
    raw = pl.read_parquet(SHARED_DATA / "cbot_soy_complex" / "ZL_1D.parquet", columns=["datetime"])
    assert raw["datetime"][0] == dt.datetime(2004, 8, 19, 21)
    assert zl["date"][0] == dt.date(2004, 8, 20)
    assert zl["date"][-1] == shared_bundle.as_of


def test_real_cot_is_published_after_its_as_of_date(shared_bundle):
    cot = shared_bundle.prices.filter(pl.col("symbol").str.starts_with("COT_"))
    assert cot.height > 0
    assert (cot["published_at"] > cot["date"]).all()


def test_real_wti_keeps_its_negative_print(shared_bundle):
    wti = shared_bundle.prices.filter(
        (pl.col("symbol") == "WTI") & (pl.col("date") == dt.date(2020, 4, 20))
    )
    assert wti["value"].to_list() == [-36.98]
