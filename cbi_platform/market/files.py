"""The `files` market-data source: CSV/Parquet files described by a YAML manifest.

Each file is read as shipped and mapped onto the canonical long table; anything that would make
the table wrong (missing columns, text in numbers, shifted headers, unsorted or duplicate dates,
mixed time zones, long gaps) is a MarketDataError naming the file, column and rows. Values that
are merely suspicious (negative prices, thin volumes) are kept: judging them is validation's job.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from cbi_platform.market.manifest import Manifest, NewsSpec, SeriesSpec, load_manifest
from cbi_platform.market.release_calendar import cftc_weekly_release
from cbi_platform.market.schema import (
    SYMBOLS,
    MarketBundle,
    MarketDataError,
    conform_news,
    conform_prices,
    empty_news,
)

# Cell contents that mean "no value" rather than "a value that is not a number".
MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "none", ".", "-", "#n/a")
# A column "looks like" dates or numbers when at least this share of its non-missing cells do.
LOOKS_LIKE_SHARE = 0.8
MAX_LISTED = 5
DATE_COLUMN_CANDIDATES = ("date", "datetime", "timestamp", "time")
_DATETIME_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M")
_TIME_THEN_OFFSET = r"[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})$"
_ROW = "__row"


def load_files_source(manifest_path: str | Path) -> MarketBundle:
    """Read every series a manifest describes, and its news file if it names one, into one
    canonical bundle (news empty without a `news` key)."""
    manifest = load_manifest(manifest_path)
    frames: list[pl.DataFrame] = []
    notices: list[str] = []
    tables: dict[tuple[Path, str], pl.DataFrame] = {}  # several series may share one file
    for spec in manifest.series:
        try:
            frame, series_notices = _read_series(
                spec, manifest.directory, manifest.source_name, tables
            )
        except MarketDataError as error:
            raise MarketDataError(f"manifest {manifest.path}: {error}") from error
        frames.append(frame)
        notices.extend(series_notices)

    prices = conform_prices(pl.concat(frames, how="vertical"))
    missing = [s for s in SYMBOLS if s != manifest.target and s not in manifest.symbols]
    if missing:
        notices.append(f"{', '.join(missing)} not in manifest: features that need them are dropped")
    if manifest.news is None:
        news = empty_news()
        notices.append(f"manifest {manifest.path.name} has no news: news is empty")
    else:
        try:
            news, news_notices = read_news(manifest.news, manifest.directory, manifest.source_name)
        except MarketDataError as error:
            raise MarketDataError(f"manifest {manifest.path}: {error}") from error
        notices.extend(news_notices)
    if manifest.as_of is not None:
        notices.extend(_after_as_of_notices(prices, manifest))
    return MarketBundle(
        prices=prices,
        news=news,
        target=manifest.target,
        notices=tuple(notices),
        as_of=manifest.as_of,
    )


def read_series(
    spec: SeriesSpec, manifest_dir: str | Path, *, source: str | None = None
) -> pl.DataFrame:
    """One series in the canonical schema; `source` defaults to files:<data file stem>."""
    frame, _ = _read_series(spec, Path(manifest_dir), source, {})
    return frame


def _read_series(
    spec: SeriesSpec,
    manifest_dir: Path,
    source: str | None,
    tables: dict[tuple[Path, str], pl.DataFrame],
) -> tuple[pl.DataFrame, list[str]]:
    file = spec.resolve(manifest_dir)
    where = f"{file} (series {spec.symbol})"
    is_csv = spec.format == "csv"
    if (file, spec.format) not in tables:
        tables[file, spec.format] = _read_table(file, spec, where, manifest_dir)
    table = tables[file, spec.format]
    if table.height == 0:
        raise MarketDataError(
            f"{where}: the file has a header but no data rows; export the data again "
            f"(or remove the series from the manifest)"
        )

    date_column = spec.date_column or _default_date_column(table, where)
    value_column = spec.value_column or _default_value_column(table, date_column, where)
    wanted = {"date_column": date_column, "value_column": value_column}
    wanted |= {f"{name}_column": column for name, column in spec.ohlcv_columns.items()}
    if spec.layout == "long":
        wanted["symbol_column"] = spec.symbol_column
    for key, column in wanted.items():
        _require_column(table, column, key, where)

    if spec.layout == "long":
        table = _filter_long(table, spec, where)
    _reject_shifted_header(table, date_column, value_column, where)

    stamps = _parse_timestamps(table, date_column, where, is_csv)
    if spec.session_offset_hours:
        milliseconds = round(spec.session_offset_hours * 3_600_000)
        stamps = stamps + dt.timedelta(milliseconds=milliseconds)
    frame = pl.DataFrame({_ROW: table[_ROW], "date": stamps.dt.date()})
    _reject_unordered_dates(frame, spec, where, is_csv)

    frame = frame.with_columns(value=_parse_numbers(table, value_column, frame, where, is_csv))
    for canonical, column in spec.ohlcv_columns.items():
        frame = frame.with_columns(
            _parse_numbers(table, column, frame, where, is_csv).alias(canonical)
        )
    frame, notices = _drop_missing(frame, spec, value_column, where, is_csv)

    if spec.release_rule == "cftc_weekly":
        _reject_weekend_as_of(frame, date_column, where, is_csv)
        published_at = cftc_weekly_release(frame["date"])["published_at"]
    else:
        is_monthly = spec.frequency == "monthly"
        period_end = pl.col("date").dt.month_end() if is_monthly else pl.col("date")
        published_at = frame.select(_published_at(period_end, spec.publication_lag)).to_series()
    frame = frame.with_columns(
        symbol=pl.lit(spec.symbol),
        unit=pl.lit(spec.unit),
        source=pl.lit(source or f"files:{file.stem}"),
        published_at=published_at,
    )
    if spec.frequency == "daily":
        weekend = frame.filter(pl.col("date").dt.weekday() >= 6)
        if weekend.height:
            notices.append(
                f"{spec.symbol}: {weekend.height} date(s) fall on a weekend (first "
                f"{weekend['date'][0]}) in {file.name}; if these are evening-session bars, "
                f"set session_offset_hours"
            )
    return conform_prices(frame.drop(_ROW)), notices


def read_news(
    spec: NewsSpec, manifest_dir: str | Path, source: str
) -> tuple[pl.DataFrame, list[str]]:
    """Dated articles in the canonical news schema, and notices.

    published_at = the timestamp's date (after session_offset_hours), rolled from a weekend to
    Monday, plus publication_lag business days. Rows without a headline or body are dropped with
    a notice; a missing date, column or file is a MarketDataError naming the file and rows.
    """
    manifest_dir = Path(manifest_dir)
    file = spec.resolve(manifest_dir)
    where = f"{file} (news)"
    is_csv = spec.format == "csv"
    table = _read_table(file, spec, where, manifest_dir)
    if table.height == 0:
        return empty_news(), [f"news: {file.name} has no rows: news is empty"]
    named = {"date_column": spec.date_column, "headline_column": spec.headline_column}
    if spec.body_column:
        named["body_column"] = spec.body_column
    if spec.source_column:
        named["source_column"] = spec.source_column
    for key, column in named.items():
        _require_column(table, column, key, where)
    stamps = _parse_timestamps(table, spec.date_column, where, is_csv)
    if spec.session_offset_hours:
        stamps = stamps + dt.timedelta(milliseconds=round(spec.session_offset_hours * 3_600_000))

    def text_or(column: str | None, default: str | None) -> pl.Series:
        if column:
            return _as_text(table[column])
        return pl.Series([default] * table.height, dtype=pl.Utf8)

    frame = pl.DataFrame(
        {
            "date": stamps.dt.date(),
            "headline": text_or(spec.headline_column, None),
            "body": text_or(spec.body_column, None),
            "source": text_or(spec.source_column, source),
        }
    ).with_columns(published_at=_published_at(pl.col("date"), spec.publication_lag))
    empty = frame["headline"].is_null() & frame["body"].is_null()
    notices = [
        f"news: {frame.height - int(empty.sum())} article(s) from {file.name}, published "
        f"{frame['published_at'].min()}..{frame['published_at'].max()}"
    ]
    if empty.any():
        notices.append(
            f"news: {int(empty.sum())} row(s) with neither headline nor body dropped "
            f"({_rows_phrase(table[_ROW].filter(empty), is_csv)})"
        )
    return conform_news(frame.filter(~empty)), notices


def _published_at(period_end: pl.Expr, lag: int) -> pl.Expr:
    """period_end + lag business days (Mon-Fri), counted like pandas' BDay: the first business
    day after a weekend period end is day 1; with lag 0 a weekend end rolls to Monday."""
    if lag == 0:
        return period_end.dt.add_business_days(0, roll="forward")
    return period_end.dt.add_business_days(lag, roll="backward")


def _reject_weekend_as_of(frame: pl.DataFrame, column: str, where: str, is_csv: bool) -> None:
    """The CFTC rule counts from a weekday as-of date (Tuesday, Monday in holiday weeks)."""
    weekend = frame["date"].dt.weekday() >= 6
    if weekend.any():
        raise MarketDataError(
            f"{where}: release_rule cftc_weekly needs weekday as-of dates, but column "
            f"'{column}' has weekend dates in "
            f"{_rows_phrase(frame[_ROW].filter(weekend), is_csv, frame['date'].filter(weekend))}"
            f". COT positions are as of Tuesday (Monday in holiday weeks): fix the dates, or "
            f"use publication_lag if this is not a CFTC weekly series."
        )


def _read_table(file: Path, spec: SeriesSpec, where: str, manifest_dir: Path) -> pl.DataFrame:
    if not file.is_file():
        state = "is a folder, not a file" if file.exists() else "not found"
        raise MarketDataError(
            f"{where}: file {state}. The manifest's path '{spec.path}' is resolved from the "
            f"manifest's folder {manifest_dir}; fix the path or put the file there."
        )
    if spec.format == "csv":
        if file.stat().st_size == 0:
            raise MarketDataError(f"{where}: the file is empty (0 bytes); export the data again")
        try:
            table = pl.read_csv(file, infer_schema_length=0)
        except pl.exceptions.NoDataError as error:
            raise MarketDataError(
                f"{where}: the file is empty (no header, no rows); export the data again"
            ) from error
        except pl.exceptions.ComputeError as error:
            if "more fields" in str(error):
                header, first = _first_lines(file)
                raise MarketDataError(
                    f"{where}: data lines have more fields than the header, so the header "
                    f"seems shifted by one column (header: {header!r}; first data line: "
                    f"{first!r}). Typically an index column was written without a name: add "
                    f"the missing name to the header or drop that column."
                ) from error
            raise MarketDataError(
                f"{where}: could not be parsed as CSV ({error}); check the delimiter is ',' and "
                f"quotes are balanced, or set format: parquet if it is Parquet"
            ) from error
    else:
        try:
            table = pl.read_parquet(file)
        except Exception as error:  # polars raises several unrelated types for corrupt files
            raise MarketDataError(
                f"{where}: could not be read as Parquet ({error}); check the file, or set "
                f"format: csv if it is CSV"
            ) from error
    table = table.rename({c: c.strip().lstrip("\ufeff").strip() for c in table.columns})
    return table.with_row_index(_ROW, offset=1)


def _first_lines(file: Path) -> tuple[str, str]:
    with file.open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\r\n")
        first = handle.readline().rstrip("\r\n")
    return header, first


def _data_columns(table: pl.DataFrame) -> list[str]:
    return [c for c in table.columns if c != _ROW]


def _default_date_column(table: pl.DataFrame, where: str) -> str:
    candidates = [c for c in _data_columns(table) if c.lower() in DATE_COLUMN_CANDIDATES]
    if len(candidates) == 1:
        return candidates[0]
    raise MarketDataError(
        f"{where}: cannot tell which column holds the dates (columns: "
        f"{', '.join(_data_columns(table))}); set date_column in the manifest"
    )


def _default_value_column(table: pl.DataFrame, date_column: str, where: str) -> str:
    others = [c for c in _data_columns(table) if c != date_column]
    if len(others) == 1:
        return others[0]
    raise MarketDataError(
        f"{where}: cannot tell which column holds the values (columns: "
        f"{', '.join(_data_columns(table))}); set value_column in the manifest"
    )


def _require_column(table: pl.DataFrame, column: str, key: str, where: str) -> None:
    columns = _data_columns(table)
    if column in columns:
        return
    by_lower = {c.lower(): c for c in columns}
    closest = difflib.get_close_matches(column.lower(), list(by_lower), n=1, cutoff=0.5)
    hint = f" Did you mean '{by_lower[closest[0]]}'?" if closest else ""
    raise MarketDataError(
        f"{where}: no column '{column}' ({key}).{hint} Columns in the file: "
        f"{', '.join(columns)}. Fix {key} in the manifest or the file's header."
    )


def _filter_long(table: pl.DataFrame, spec: SeriesSpec, where: str) -> pl.DataFrame:
    labels = table[spec.symbol_column].cast(pl.Utf8).str.strip_chars()
    rows = table.filter(labels == spec.symbol_value)
    if rows.height:
        return rows
    present = labels.drop_nulls().unique(maintain_order=True).to_list()
    closest = difflib.get_close_matches(spec.symbol_value, present, n=1, cutoff=0.5)
    hint = f" Did you mean '{closest[0]}'?" if closest else ""
    raise MarketDataError(
        f"{where}: no rows with {spec.symbol_column} = '{spec.symbol_value}'.{hint} Values "
        f"present: {', '.join(present[:20])}{' …' if len(present) > 20 else ''}. "
        f"Fix symbol_value in the manifest."
    )


def _as_text(series: pl.Series) -> pl.Series:
    """Non-missing cells as stripped text (missing tokens become null)."""
    text = series.cast(pl.Utf8).str.strip_chars()
    missing = text.str.to_lowercase().is_in(list(MISSING_TOKENS))
    return pl.select(pl.when(missing).then(None).otherwise(text)).to_series().alias(series.name)


def _share(mask: pl.Series) -> float:
    return float(mask.mean() or 0.0) if mask.len() else 0.0


def _looks_like_numbers(series: pl.Series) -> bool:
    if series.dtype.is_numeric():
        return True
    if series.dtype.is_temporal():
        return False
    text = _as_text(series).drop_nulls()
    return _share(text.cast(pl.Float64, strict=False).is_not_null()) >= LOOKS_LIKE_SHARE


def _looks_like_dates(series: pl.Series) -> bool:
    if series.dtype.is_temporal():
        return True
    if series.dtype != pl.Utf8:
        return False
    text = _as_text(series).drop_nulls()
    return _share(_strptime_any(_strip_offset(text)).is_not_null()) >= LOOKS_LIKE_SHARE


def _reject_shifted_header(
    table: pl.DataFrame, date_column: str, value_column: str, where: str
) -> None:
    dates, values = table[date_column], table[value_column]
    date_holds_numbers = _looks_like_numbers(dates) and not _looks_like_dates(dates)
    value_holds_dates = _looks_like_dates(values)
    if not (date_holds_numbers or value_holds_dates):
        return
    found = []
    if date_holds_numbers:
        found.append(f"the date column '{date_column}' holds numbers (e.g. {_examples(dates)})")
    if value_holds_dates:
        found.append(f"the value column '{value_column}' holds dates (e.g. {_examples(values)})")
    else:
        date_like = [c for c in _data_columns(table) if _looks_like_dates(table[c])]
        if date_like:
            found.append(f"the dates seem to be in '{date_like[0]}'")
    raise MarketDataError(
        f"{where}: {'; '.join(found)}: the header seems shifted by one column relative to the "
        f"data. Typically a name is missing from (or extra in) the header, e.g. an index column "
        f"written without a name. Fix the header so each name sits over its data, or point "
        f"date_column/value_column at the right columns."
    )


def _examples(series: pl.Series) -> str:
    return ", ".join(repr(str(v)) for v in series.drop_nulls().head(2).to_list())


def _strip_offset(text: pl.Series) -> pl.Series:
    return text.str.replace(r"\s*(Z|[+-]\d{2}:?\d{2})$", "").str.replace("T", " ", literal=True)


def _strptime_any(text: pl.Series) -> pl.Series:
    """Parse ISO dates / datetimes (without offset); unparseable cells become null."""
    candidates = [
        text.str.strptime(pl.Datetime("us"), fmt, strict=False) for fmt in _DATETIME_FORMATS
    ]
    return pl.select(pl.coalesce(candidates)).to_series()


def _parse_timestamps(table: pl.DataFrame, column: str, where: str, is_csv: bool) -> pl.Series:
    """Naive wall-clock timestamps: tz-aware values keep the wall time they were written in."""
    raw = table[column]
    rows = table[_ROW]
    if raw.dtype == pl.Date:
        return raw.cast(pl.Datetime("us"))
    if isinstance(raw.dtype, pl.Datetime):
        stamps = raw.dt.replace_time_zone(None) if raw.dtype.time_zone else raw
        _reject_missing_dates(stamps, rows, column, where, is_csv)
        return stamps.cast(pl.Datetime("us"))
    if raw.dtype != pl.Utf8:
        raise MarketDataError(
            f"{where}: the date column '{column}' has type {raw.dtype}, not dates; store dates "
            f"as ISO text or a date/timestamp type"
        )
    text = _as_text(raw)
    _reject_missing_dates(text, rows, column, where, is_csv)
    offsets = text.str.extract(_TIME_THEN_OFFSET, 1).str.replace("Z", "+00:00", literal=True)
    offsets = offsets.str.replace(r"^([+-]\d{2})(\d{2})$", "$1:$2")
    if offsets.null_count() not in (0, offsets.len()):
        naive, aware = offsets.is_null(), offsets.is_not_null()
        raise MarketDataError(
            f"{where}: column '{column}' mixes time zones: timestamps without a UTC offset in "
            f"{_rows_phrase(rows.filter(naive), is_csv)} and with one in "
            f"{_rows_phrase(rows.filter(aware), is_csv)}. Write every timestamp in one time "
            f"zone (e.g. all UTC with +00:00, or all as plain dates)."
        )
    distinct = offsets.drop_nulls().unique(maintain_order=True)
    if distinct.len() > 1:
        parts = [
            f"{offset} in {_rows_phrase(rows.filter(offsets == offset), is_csv)}"
            for offset in distinct.to_list()[:MAX_LISTED]
        ]
        raise MarketDataError(
            f"{where}: column '{column}' mixes time zones: UTC offset {'; '.join(parts)}. The "
            f"trading date of a bar is ambiguous: convert every timestamp to one UTC offset "
            f"(e.g. +00:00) and set session_offset_hours for that zone."
        )
    stamps = _strptime_any(_strip_offset(text))
    bad = stamps.is_null()
    if bad.any():
        raise MarketDataError(
            f"{where}: column '{column}' has values that are not dates in "
            f"{_rows_phrase(rows.filter(bad), is_csv)}: {_examples(text.filter(bad))}. Use ISO "
            f"8601: YYYY-MM-DD, or YYYY-MM-DD HH:MM[:SS] with an optional UTC offset (+HH:MM)."
        )
    return stamps


def _reject_missing_dates(
    values: pl.Series, rows: pl.Series, column: str, where: str, is_csv: bool
) -> None:
    missing = values.is_null()
    if missing.any():
        raise MarketDataError(
            f"{where}: column '{column}' has no date in "
            f"{_rows_phrase(rows.filter(missing), is_csv)}; every row needs a date: fill it in "
            f"or remove the row."
        )


def _parse_numbers(
    table: pl.DataFrame, column: str, frame: pl.DataFrame, where: str, is_csv: bool
) -> pl.Series:
    raw = table[column]
    if raw.dtype.is_numeric():
        return raw.cast(pl.Float64).fill_nan(None)
    if raw.dtype != pl.Utf8:
        raise MarketDataError(
            f"{where}: column '{column}' has type {raw.dtype}, not numbers; store plain numbers"
        )
    text = _as_text(raw)
    numbers = text.cast(pl.Float64, strict=False).fill_nan(None)
    bad = numbers.is_null() & text.is_not_null()
    if bad.any():
        raise MarketDataError(
            f"{where}: column '{column}' has non-numeric values in "
            f"{_rows_phrase(frame[_ROW].filter(bad), is_csv, frame['date'].filter(bad))}: "
            f"{_examples(text.filter(bad))}. Values must be plain numbers with '.' as the decimal "
            f"point and no thousands separators (leave a cell empty or NA if it is missing); "
            f"fix those cells."
        )
    return numbers


def _reject_unordered_dates(
    frame: pl.DataFrame, spec: SeriesSpec, where: str, is_csv: bool
) -> None:
    dates, rows = frame["date"], frame[_ROW]
    previous = dates.shift(1)
    after_offset = (
        f" (after session_offset_hours={spec.session_offset_hours:g})"
        if spec.session_offset_hours
        else ""
    )
    backwards = (dates < previous).fill_null(False)
    if backwards.any():
        i = backwards.arg_max()
        raise MarketDataError(
            f"{where}: dates are not in ascending order: {_rows_phrase(rows[i : i + 1], is_csv)} "
            f"has {dates[i]}, after {previous[i]} in the row before{after_offset}. The manifest "
            f"contract requires ascending dates: sort the file by date."
        )
    repeated = (dates == previous).fill_null(False)
    if repeated.any():
        duplicated = dates.filter(repeated).unique(maintain_order=True)
        parts = [
            f"{day} ({_rows_phrase(rows.filter(dates == day), is_csv)})"
            for day in duplicated.head(MAX_LISTED).to_list()
        ]
        more = f" and {duplicated.len() - MAX_LISTED} more" if duplicated.len() > MAX_LISTED else ""
        advice = (
            "; if these are session bars, check session_offset_hours (two bars land on one date)"
            if spec.session_offset_hours
            else ""
        )
        raise MarketDataError(
            f"{where}: duplicate dates{after_offset}: {'; '.join(parts)}{more}. Each date must "
            f"appear once: remove the duplicate rows{advice}."
        )


def _drop_missing(
    frame: pl.DataFrame, spec: SeriesSpec, column: str, where: str, is_csv: bool
) -> tuple[pl.DataFrame, list[str]]:
    """Trim leading/trailing gaps (late starts); fail on an inner gap longer than max_nan_run."""
    present = frame["value"].is_not_null()
    if not present.any():
        raise MarketDataError(
            f"{where}: column '{column}' has no values (every cell is empty or NA); check "
            f"value_column or the file"
        )
    first, last = present.arg_max(), frame.height - 1 - present.reverse().arg_max()
    notices = []
    trimmed = frame.height - (last - first + 1)
    if trimmed:
        notices.append(
            f"{spec.symbol}: {trimmed} empty row(s) before {frame['date'][first]} or after "
            f"{frame['date'][last]} dropped"
        )
    frame = frame.slice(first, last - first + 1)
    gaps = (
        frame.with_columns(run=pl.col("value").is_null().rle_id())
        .filter(pl.col("value").is_null())
        .group_by("run", maintain_order=True)
        .agg(
            length=pl.len(),
            first_date=pl.col("date").first(),
            last_date=pl.col("date").last(),
            rows=pl.col(_ROW),
        )
    )
    too_long = gaps.filter(pl.col("length") > spec.max_nan_run)
    if too_long.height:
        gap = too_long.row(0, named=True)
        more = f" ({too_long.height - 1} more such gap(s))" if too_long.height > 1 else ""
        raise MarketDataError(
            f"{where}: column '{column}' has {gap['length']} missing values in a row from "
            f"{gap['first_date']} to {gap['last_date']} in "
            f"{_rows_phrase(pl.Series(gap['rows']), is_csv)}, more than "
            f"max_nan_run={spec.max_nan_run}{more}. Fill the gap in the file, or "
            f"raise max_nan_run for this series in the manifest if the gap is genuine."
        )
    if gaps.height:
        notices.append(
            f"{spec.symbol}: {int(gaps['length'].sum())} missing value(s) in {gaps.height} short "
            f"gap(s) (at most max_nan_run={spec.max_nan_run}) dropped"
        )
    return frame.filter(pl.col("value").is_not_null()), notices


def _rows_phrase(rows: pl.Series, is_csv: bool, dates: pl.Series | None = None) -> str:
    """'rows 12, 13 (file lines 13, 14; dates 2020-01-02, 2020-01-03)', capped at a few."""
    listed: Sequence[int] = rows.head(MAX_LISTED).to_list()
    more = f" and {rows.len() - MAX_LISTED} more" if rows.len() > MAX_LISTED else ""
    noun = "row" if rows.len() == 1 else "rows"
    details = []
    if is_csv:
        details.append(f"file line{'s' if len(listed) > 1 else ''} {_join(r + 1 for r in listed)}")
    if dates is not None:
        shown = dates.head(MAX_LISTED).to_list()
        details.append(f"date{'s' if len(shown) > 1 else ''} {_join(shown)}{more and ', …'}")
    suffix = f" ({'; '.join(details)})" if details else ""
    return f"{noun} {_join(listed)}{more}{suffix}"


def _join(items) -> str:
    return ", ".join(str(item) for item in items)


def _after_as_of_notices(prices: pl.DataFrame, manifest: Manifest) -> list[str]:
    late = (
        prices.filter(pl.col("published_at") > manifest.as_of)
        .group_by("symbol", maintain_order=True)
        .agg(rows=pl.len(), last=pl.col("date").max())
    )
    return [
        f"{row['symbol']}: {row['rows']} row(s) published after as_of {manifest.as_of} (up to "
        f"{row['last']}) kept; point-in-time joins must use published_at"
        for row in late.iter_rows(named=True)
    ]
