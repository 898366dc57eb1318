"""The `files` source's manifest: a versioned YAML contract that maps files onto canonical symbols.

Parsing is separate from reading so that a bad manifest fails before any data file is opened,
with a message that names the manifest file, the series and the field. See docs/manifest.md.
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cbi_platform.market.release_calendar import RELEASE_RULES
from cbi_platform.market.schema import SYMBOLS, MarketDataError

MANIFEST_VERSION = 1
FORMATS = ("csv", "parquet")
LAYOUTS = ("single", "wide", "long")
FREQUENCIES = ("daily", "weekly", "monthly")
EXTENSION_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

TOP_LEVEL_KEYS = ("version", "name", "target", "as_of", "series", "news")
SERIES_KEYS = (
    "symbol",
    "path",
    "format",
    "layout",
    "date_column",
    "value_column",
    "symbol_column",
    "symbol_value",
    "open_column",
    "high_column",
    "low_column",
    "volume_column",
    "frequency",
    "unit",
    "publication_lag",
    "release_rule",
    "session_offset_hours",
    "max_nan_run",
)
DEFAULT_MAX_NAN_RUN = 5
NEWS_KEYS = (
    "path",
    "format",
    "date_column",
    "headline_column",
    "body_column",
    "source_column",
    "publication_lag",
    "session_offset_hours",
)


@dataclass(frozen=True)
class SeriesSpec:
    """How to read one canonical series from one file (paths relative to the manifest)."""

    symbol: str
    path: str
    unit: str
    format: str = "csv"
    layout: str = "single"
    date_column: str | None = None
    value_column: str | None = None
    symbol_column: str | None = None
    symbol_value: str | None = None
    open_column: str | None = None
    high_column: str | None = None
    low_column: str | None = None
    volume_column: str | None = None
    frequency: str = "daily"
    publication_lag: int = 0
    release_rule: str | None = None  # a named release rule instead of publication_lag
    session_offset_hours: float = 0.0
    max_nan_run: int = DEFAULT_MAX_NAN_RUN

    def resolve(self, manifest_dir: str | Path) -> Path:
        """The data file's location: `path` is relative to the manifest's folder."""
        return (Path(manifest_dir) / self.path).resolve()

    @property
    def ohlcv_columns(self) -> dict[str, str]:
        """Canonical optional column -> file column, for the ones the manifest names."""
        named = {
            "open": self.open_column,
            "high": self.high_column,
            "low": self.low_column,
            "volume": self.volume_column,
        }
        return {canonical: column for canonical, column in named.items() if column}


@dataclass(frozen=True)
class NewsSpec:
    """How to read dated news articles from one file (optional; docs/manifest.md, "News")."""

    path: str
    format: str = "csv"
    date_column: str = "published_at"
    headline_column: str = "headline"
    body_column: str | None = None
    source_column: str | None = None
    publication_lag: int = 0
    session_offset_hours: float = 0.0

    def resolve(self, manifest_dir: str | Path) -> Path:
        return (Path(manifest_dir) / self.path).resolve()


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest (contract version 1)."""

    path: Path
    version: int
    target: str
    series: tuple[SeriesSpec, ...]
    name: str | None = None
    as_of: dt.date | None = None
    news: NewsSpec | None = None

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def source_name(self) -> str:
        """The `source` column value: files:<name>, or files:<manifest file stem>."""
        return f"files:{self.name or self.path.stem}"

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(spec.symbol for spec in self.series)

    def spec(self, symbol: str) -> SeriesSpec:
        for spec in self.series:
            if spec.symbol == symbol:
                return spec
        raise KeyError(f"{self.path}: no series '{symbol}' (series: {', '.join(self.symbols)})")


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; every problem is a MarketDataError naming the file."""
    manifest_path = Path(path).resolve()
    if not manifest_path.is_file():
        raise MarketDataError(
            f"manifest {manifest_path} not found: check the path (relative paths are resolved "
            f"from the current directory, {Path.cwd()})"
        )
    try:
        raw = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise MarketDataError(
            f"manifest {manifest_path} is not valid YAML: {error}. Fix the syntax."
        ) from error
    return parse_manifest(raw, manifest_path)


def parse_manifest(raw: Any, manifest_path: str | Path) -> Manifest:
    """Validate an already-loaded manifest mapping; `manifest_path` anchors relative paths."""
    manifest_path = Path(manifest_path).resolve()
    where = f"manifest {manifest_path}"
    if not isinstance(raw, dict):
        raise MarketDataError(
            f"{where}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}, "
            f"got {type(raw).__name__}"
        )
    _reject_unknown_keys(raw, TOP_LEVEL_KEYS, where, "top-level key")

    version = raw.get("version")
    if version != MANIFEST_VERSION or isinstance(version, bool):
        raise MarketDataError(
            f"{where}: version must be {MANIFEST_VERSION} (got {version!r}); this reader "
            f"implements manifest contract version {MANIFEST_VERSION} (docs/manifest.md)"
        )
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise MarketDataError(f"{where}: name must be a non-empty string, got {name!r}")
    as_of = _parse_as_of(raw.get("as_of"), where)

    series_raw = raw.get("series")
    if not isinstance(series_raw, list) or not series_raw:
        raise MarketDataError(
            f"{where}: 'series' must be a non-empty list of series (symbol, path, unit, ...)"
        )
    specs = tuple(
        _parse_series(item, index, manifest_path) for index, item in enumerate(series_raw, 1)
    )
    seen: set[str] = set()
    for index, spec in enumerate(specs, 1):
        if spec.symbol in seen:
            raise MarketDataError(
                f"{where}: series #{index} ({spec.symbol}) repeats a symbol; each canonical "
                f"symbol may appear once. Remove or rename one of them."
            )
        seen.add(spec.symbol)

    target = raw.get("target")
    if not isinstance(target, str) or target not in seen:
        raise MarketDataError(
            f"{where}: target {target!r} must be the symbol of one of the series "
            f"({', '.join(spec.symbol for spec in specs)}); add that series or fix 'target'"
        )
    news = _parse_news(raw["news"], manifest_path) if raw.get("news") is not None else None
    return Manifest(
        path=manifest_path,
        version=version,
        target=target,
        series=specs,
        name=name,
        as_of=as_of,
        news=news,
    )


def _parse_news(raw: Any, manifest_path: Path) -> NewsSpec:
    where = f"manifest {manifest_path}: news"
    if not isinstance(raw, dict):
        raise MarketDataError(f"{where}: expected a mapping (path, date_column, ...), got {raw!r}")
    _reject_unknown_keys(raw, NEWS_KEYS, where, "key")
    path = _optional_str(raw, "path", where)
    if not path:
        raise MarketDataError(
            f"{where}: 'path' is required (the news file, relative to the manifest)"
        )
    file_format = _file_format(raw, path, where)
    offset = raw.get("session_offset_hours", 0.0)
    if isinstance(offset, bool) or not isinstance(offset, int | float) or not -24 < offset < 24:
        raise MarketDataError(
            f"{where}: session_offset_hours must be a number of hours between -24 and 24 "
            f"(got {offset!r})"
        )
    return NewsSpec(
        path=path,
        format=file_format,
        date_column=_optional_str(raw, "date_column", where) or "published_at",
        headline_column=_optional_str(raw, "headline_column", where) or "headline",
        body_column=_optional_str(raw, "body_column", where),
        source_column=_optional_str(raw, "source_column", where),
        publication_lag=_non_negative_int(raw.get("publication_lag", 0), "publication_lag", where),
        session_offset_hours=float(offset),
    )


def _parse_series(raw: Any, index: int, manifest_path: Path) -> SeriesSpec:
    label = raw.get("symbol") if isinstance(raw, dict) else None
    where = f"manifest {manifest_path}: series #{index}" + (f" ({label})" if label else "")
    if not isinstance(raw, dict):
        raise MarketDataError(f"{where}: expected a mapping (symbol, path, unit, ...), got {raw!r}")
    _reject_unknown_keys(raw, SERIES_KEYS, where, "key")

    symbol = raw.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise MarketDataError(f"{where}: 'symbol' is required (one of {', '.join(SYMBOLS)})")
    if symbol not in SYMBOLS:
        closest = difflib.get_close_matches(symbol.upper(), list(SYMBOLS), n=1, cutoff=0.4)
        hint = f" Did you mean '{closest[0]}'?" if closest else ""
        raise MarketDataError(
            f"{where}: unknown symbol '{symbol}'.{hint} Known canonical symbols: "
            f"{', '.join(SYMBOLS)} (cbi_platform/market/schema.py)."
        )

    path = _optional_str(raw, "path", where)
    if not path:
        raise MarketDataError(
            f"{where}: 'path' is required (the data file, relative to the manifest)"
        )
    unit = _optional_str(raw, "unit", where)
    if not unit:
        raise MarketDataError(
            f"{where}: 'unit' is required, e.g. unit: 'US cents/lb' ({symbol} is {SYMBOLS[symbol]})"
        )

    file_format = _file_format(raw, path, where)
    layout = _optional_str(raw, "layout", where) or "single"
    _require_choice(layout, LAYOUTS, "layout", where)
    frequency = _optional_str(raw, "frequency", where) or "daily"
    _require_choice(frequency, FREQUENCIES, "frequency", where)

    columns = {
        key: _optional_str(raw, key, where)
        for key in (
            "date_column",
            "value_column",
            "symbol_column",
            "symbol_value",
            "open_column",
            "high_column",
            "low_column",
            "volume_column",
        )
    }
    if layout in ("wide", "long") and not columns["value_column"]:
        raise MarketDataError(
            f"{where}: layout {layout} needs 'value_column' (the column holding this "
            f"series' values)"
        )
    if layout == "long" and not (columns["symbol_column"] and columns["symbol_value"]):
        raise MarketDataError(
            f"{where}: layout long needs 'symbol_column' and 'symbol_value' (which rows "
            f"are {symbol})"
        )
    if layout != "long" and (columns["symbol_column"] or columns["symbol_value"]):
        raise MarketDataError(
            f"{where}: 'symbol_column'/'symbol_value' apply only to layout long "
            f"(layout is {layout})"
        )

    release_rule = _optional_str(raw, "release_rule", where)
    if release_rule is not None:
        _require_choice(release_rule, RELEASE_RULES, "release_rule", where)
        if frequency != "weekly":
            raise MarketDataError(
                f"{where}: release_rule {release_rule} applies to weekly series (frequency is "
                f"{frequency}); set frequency: weekly or use publication_lag"
            )
        if "publication_lag" in raw:
            raise MarketDataError(
                f"{where}: set either release_rule or publication_lag, not both (release_rule "
                f"{release_rule} decides published_at by itself); remove publication_lag"
            )
    elif "publication_lag" not in raw and frequency != "daily":
        raise MarketDataError(
            f"{where}: 'publication_lag' is required for {frequency} series (or, for CFTC COT, "
            f"release_rule: cftc_weekly): a {frequency} value is rarely known at the end of its "
            f"period, and lag 0 would leak it into the past"
        )
    publication_lag = _non_negative_int(raw.get("publication_lag", 0), "publication_lag", where)
    max_nan_run = _non_negative_int(
        raw.get("max_nan_run", DEFAULT_MAX_NAN_RUN), "max_nan_run", where
    )
    offset = raw.get("session_offset_hours", 0.0)
    if isinstance(offset, bool) or not isinstance(offset, int | float) or not -24 < offset < 24:
        raise MarketDataError(
            f"{where}: session_offset_hours must be a number of hours between -24 and 24 "
            f"(got {offset!r})"
        )
    return SeriesSpec(
        symbol=symbol,
        path=path,
        unit=unit,
        format=file_format,
        layout=layout,
        frequency=frequency,
        publication_lag=publication_lag,
        release_rule=release_rule,
        session_offset_hours=float(offset),
        max_nan_run=max_nan_run,
        **columns,
    )


def _reject_unknown_keys(raw: dict, known: tuple[str, ...], where: str, what: str) -> None:
    for key in raw:
        if key not in known:
            closest = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f" Did you mean '{closest[0]}'?" if closest else ""
            raise MarketDataError(
                f"{where}: unknown {what} '{key}'.{hint} Allowed: {', '.join(known)}."
            )


def _optional_str(raw: dict, key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MarketDataError(f"{where}: '{key}' must be a string, got {value!r}")
    return str(value)


def _file_format(raw: dict, path: str, where: str) -> str:
    """The entry's `format`, or the one its file's extension implies (csv / parquet)."""
    file_format = _optional_str(raw, "format", where)
    if file_format is None:
        suffix = Path(path).suffix.lower()
        file_format = EXTENSION_FORMATS.get(suffix)
        if file_format is None:
            raise MarketDataError(
                f"{where}: cannot infer the format of '{path}' from its extension '{suffix}'; "
                f"set format: csv or format: parquet"
            )
    _require_choice(file_format, FORMATS, "format", where)
    return file_format


def _require_choice(value: str, choices: tuple[str, ...], key: str, where: str) -> None:
    if value not in choices:
        raise MarketDataError(f"{where}: {key} must be one of {', '.join(choices)} (got {value!r})")


def _non_negative_int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MarketDataError(f"{where}: {key} must be a whole number >= 0 (got {value!r})")
    return value


def _parse_as_of(value: Any, where: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise MarketDataError(f"{where}: as_of must be a date YYYY-MM-DD (got {value!r})")
