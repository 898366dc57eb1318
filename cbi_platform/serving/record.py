"""The forecast record, declared once: one served forecast, as the buyer reads it.

`assemble_forecast` builds it, the forecast history stores it (`serving.store` derives its
table from `record_columns()`), and the API derives its forecast response from the same
fields (`api/schemas.py`). A new field is added here, and `test_record.py` fails if the table,
the API schema or `assemble_forecast` drifts from it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from cbi_platform.settings import Horizon


def _field(doc: str, *, added: bool = False, api: bool | str = False, always: bool = False) -> Any:
    """A record field's metadata.

    doc: one line on what it holds. added: a column added to the history after its first
    release (the writer adds it in place; an older row reads null). api: the API's forecast
    response carries it, under its own name (True) or as "group.name" inside a nested object.
    always: the API never sends null for it (a key, or coerced by the view).
    """
    return field(metadata={"doc": doc, "added": added, "api": api, "always": always})


@dataclass(frozen=True)
class ForecastRecord:
    """One row of the forecast history: what was forecast, from what, and how sure."""

    as_of: dt.date = _field("the origin: the date of the last close used", api=True, always=True)
    horizon: Horizon = _field("the forecast horizon (partition key)", api=True, always=True)
    model_version: str = _field("the version whose numbers this row holds (name/vN)", api=True)
    target_date: dt.date = _field("the business day the forecast is for", api=True)
    price: float = _field("the last close at as_of", api=True)
    forecast: float = _field("the point forecast of the price level", api=True)
    p10: float | None = _field("10th percentile of the price (target zone)", api="target_zones.p10")
    p30: float | None = _field("30th percentile of the price (target zone)", api="target_zones.p30")
    p50: float | None = _field("50th percentile of the price (target zone)", api="target_zones.p50")
    p70: float | None = _field("70th percentile of the price (target zone)", api="target_zones.p70")
    p90: float | None = _field("90th percentile of the price (target zone)", api="target_zones.p90")
    lo90: float | None = _field("lower end of the 90% zone", api="zone90.low")
    hi90: float | None = _field("upper end of the 90% zone", api="zone90.high")
    band_lo: float | None = _field("lower end of the statement's band", api="band.low")
    band_hi: float | None = _field("upper end of the statement's band", api="band.high")
    band_probability: float | None = _field("achieved probability (0-1)", api="band.probability")
    band_probability_nominal: float | None = _field(
        "the band's probability by the forecast distribution (0-1)",
        added=True,
        api="band.nominal_probability",
    )
    band_hits: int | None = _field("past resolved forecasts inside the band", added=True)
    band_resolved: int | None = _field("past resolved forecasts", added=True)
    statement: str = _field("the probability statement in words", api=True)
    p50_note: str | None = _field("why P50 and the point forecast differ", added=True, api=True)
    regime: str | None = _field("the detected regime at as_of", api=True)
    regime_outlook: str = _field("the classifier's regime probabilities one month ahead, in words")
    drivers: list[str] = _field("the drivers in words, largest first (JSON in the table)")
    drivers_detail: list[dict[str, Any]] = _field(
        "the drivers as numbers: feature, value, contribution_pct, model, used (JSON)", added=True
    )
    driver_note: str | None = _field("how the drivers were computed", added=True)
    volatility: float | None = _field("forecast volatility of the log return to target_date")
    vol_model: str | None = _field("the volatility model behind volatility and zones", added=True)
    combiner: str | None = _field("the ensemble's combiner (random_walk: no model is used)")
    shrink_weight: float | None = _field("weight on the models after shrinking to the random walk")
    registered_version: str | None = _field(
        "the version this run registered (it may not serve)", added=True
    )
    provisional: bool = _field(
        "the served version failed a promotion gate (or a fallback serves)",
        added=True,
        api=True,
        always=True,
    )
    failed_gates: list[str] = _field(
        "the gates the served version failed",
        added=True,
        api=True,
        always=True,
    )
    protocol_hash: str | None = _field("hash of the walk-forward protocol", added=True)
    data_last_date: dt.date = _field("the last date of the data used", api=True)
    data_reference_date: dt.date = _field("the date the data should reach")
    data_business_days_behind: int = _field("business days from data_last_date to the reference")
    created_at: dt.datetime = _field("when the row was built (UTC, naive)", api=True)

    def as_dict(self) -> dict[str, Any]:
        """The record as the plain dict every caller of `assemble_forecast` reads."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


@dataclass(frozen=True)
class Column:
    """One column of the forecast history: its DuckDB and polars types, and its description."""

    name: str
    python_type: Any  # the record's annotation, e.g. `float | None`
    duckdb_type: str
    polars_type: pl.DataType
    doc: str
    added: bool  # added after the table's first release (migrated in place)
    json: bool  # a list/dict stored as JSON text
    api: str | None  # where the API's forecast response carries it
    always: bool  # never null in the API's response


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without `| None`, whether None was allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `T | None` unions are supported, not {annotation}")
        return args[0], True
    return annotation, False


# Order matters: bool before int (a bool is an int), datetime before date (likewise).
_STORED_AS: tuple[tuple[type, str, pl.DataType], ...] = (
    (bool, "BOOLEAN", pl.Boolean()),
    (int, "INTEGER", pl.Int32()),
    (float, "DOUBLE", pl.Float64()),
    (str, "VARCHAR", pl.Utf8()),
    (dt.datetime, "TIMESTAMP", pl.Datetime("us")),
    (dt.date, "DATE", pl.Date()),
)


def column_for(name: str, annotation: Any, metadata: typing.Mapping[str, Any]) -> Column:
    """The history column of one record field (lists and dicts are stored as JSON text)."""
    base, _ = _base_type(annotation)
    origin = typing.get_origin(base) or base
    if origin is typing.Literal:  # e.g. Horizon: stored as the type of its values
        origin = type(typing.get_args(base)[0])
    if origin in (list, dict):
        duck, polars_type, is_json = "VARCHAR", pl.Utf8(), True
    else:
        found = next(((d, p) for t, d, p in _STORED_AS if issubclass(origin, t)), None)
        if found is None:
            raise TypeError(f"record field {name}: no column type for {annotation}")
        (duck, polars_type), is_json = found, False
    return Column(
        name=name,
        python_type=annotation,
        duckdb_type=duck,
        polars_type=polars_type,
        doc=metadata["doc"],
        added=metadata["added"],
        json=is_json,
        api=(name if metadata["api"] is True else metadata["api"] or None),
        always=metadata["always"],
    )


def record_columns() -> tuple[Column, ...]:
    """Every field of `ForecastRecord` as a history column, in the record's order."""
    hints = typing.get_type_hints(ForecastRecord)
    return tuple(
        column_for(f.name, hints[f.name], f.metadata) for f in dataclasses.fields(ForecastRecord)
    )


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ForecastRecord))
