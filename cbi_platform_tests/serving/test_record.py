"""The forecast record is declared once: the history table, the API's forecast response, the
page's zone levels and `assemble_forecast` all follow `ForecastRecord`, and none may drift."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import typing

import duckdb
import polars as pl
import pytest
from pydantic import BaseModel

from cbi_platform.api import schemas
from cbi_platform.api.views import ForecastView
from cbi_platform.serving import store
from cbi_platform.serving.forecast import assemble_forecast
from cbi_platform.serving.record import RECORD_FIELDS, ForecastRecord, record_columns
from cbi_platform_tests.serving.test_forecast import ZONE

# The table as first released (before any ADD COLUMN): pinned, because changing it needs a
# warehouse migration. New fields are appended with `added=True` instead.
FIRST_RELEASE = [
    ("as_of", "DATE"), ("horizon", "VARCHAR"), ("model_version", "VARCHAR"),
    ("target_date", "DATE"), ("price", "DOUBLE"), ("forecast", "DOUBLE"), ("p10", "DOUBLE"),
    ("p30", "DOUBLE"), ("p50", "DOUBLE"), ("p70", "DOUBLE"), ("p90", "DOUBLE"),
    ("lo90", "DOUBLE"), ("hi90", "DOUBLE"), ("band_lo", "DOUBLE"), ("band_hi", "DOUBLE"),
    ("band_probability", "DOUBLE"), ("statement", "VARCHAR"), ("regime", "VARCHAR"),
    ("regime_outlook", "VARCHAR"), ("drivers", "VARCHAR"), ("volatility", "DOUBLE"),
    ("combiner", "VARCHAR"), ("shrink_weight", "DOUBLE"), ("data_last_date", "DATE"),
    ("data_reference_date", "DATE"), ("data_business_days_behind", "INTEGER"),
    ("created_at", "TIMESTAMP"),
]  # fmt: skip
# What the API's forecast response adds to the record's fields (and nothing else).
API_EXTRAS = {"horizon_days", "unit", "served_is_random_walk"}


def _assembled() -> dict:
    return assemble_forecast(
        ZONE,
        horizon="1m",
        horizon_days=21,
        model_version="cbi-zl-1m/v1",
        regime="bull",
        regime_outlook={"bull": 0.6, "normal": 0.4},
        drivers=["x"],
        volatility=0.05,
        data_reference_date=dt.date(2024, 6, 25),
        past_pit=[0.2, 0.5, 0.8, 0.4],
        drivers_detail=[{"feature": "f_x", "value": 1.0, "contribution_pct": 0.5}],
        failed_gates=["beats the random walk"],
        provisional=True,
    )


def _described(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {store.TABLE}").fetchall()]


def test_assemble_forecast_returns_exactly_the_record_fields():
    assert tuple(_assembled()) == RECORD_FIELDS
    with pytest.raises(TypeError):  # a field the record does not declare is refused
        ForecastRecord(**{**_assembled(), "surprise": 1})


def test_every_field_has_a_type_and_a_description():
    hints = typing.get_type_hints(ForecastRecord)
    for f in dataclasses.fields(ForecastRecord):
        assert f.name in hints and f.metadata["doc"].strip(), f.name


def test_table_is_the_record_plus_role_and_keeps_its_first_release_layout():
    con = duckdb.connect()
    store.migrate(con)
    columns = _described(con)
    expected = [(c.name, c.duckdb_type) for c in record_columns()] + [("role", "VARCHAR")]
    assert sorted(columns) == sorted(expected)
    assert columns[: len(FIRST_RELEASE)] == FIRST_RELEASE
    assert set(store.JSON_COLUMNS) == {"drivers", "drivers_detail", "failed_gates"}


def test_an_older_table_gains_every_added_column():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cbi")
    con.execute(
        f"CREATE TABLE {store.TABLE} ("
        + ", ".join(f"{name} {kind}" for name, kind in FIRST_RELEASE)
        + ")"
    )
    store.migrate(con)
    assert _described(con) == FIRST_RELEASE + list(store.ADDED_COLUMNS)


def test_a_record_round_trips_through_the_store_with_the_record_types(tmp_path):
    row = {**_assembled(), "role": store.SERVED}
    history = store.ForecastStore(tmp_path / "f.duckdb")
    assert history.append([row]) == 1
    stored = history.history()
    for column in store.COLUMNS:
        assert stored.schema[column.name] == column.polars_type, column.name


def _api_leaves(model: type[BaseModel], prefix: str = "") -> dict[str, typing.Any]:
    """The response's fields by dotted path, with nested objects flattened."""
    leaves = {}
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            leaves.update(_api_leaves(kind, f"{prefix}{name}."))
        else:
            leaves[f"{prefix}{name}"] = kind
    return leaves


def test_api_forecast_schema_is_the_records_api_fields_plus_the_extras():
    leaves = _api_leaves(schemas.ForecastOut)
    by_path = {c.api: c for c in record_columns() if c.api}
    assert set(leaves) == set(by_path) | API_EXTRAS
    for path, column in by_path.items():
        api_type = leaves[path]
        record_base = {a for a in typing.get_args(column.python_type) if a is not type(None)}
        api_base = {a for a in typing.get_args(api_type) if a is not type(None)}
        if column.name == "horizon":  # the record's Literal becomes the API's named enum
            assert api_type is schemas.Horizon
            assert tuple(h.value for h in api_type) == typing.get_args(column.python_type)
        elif column.always:
            assert api_type == column.python_type, path
        else:
            assert api_base == (record_base or {column.python_type}), path
            assert type(None) in typing.get_args(api_type), path
    # The nested objects keep their OpenAPI names.
    assert {"TargetZones", "Range", "Band", "Horizon"} <= set(
        schemas.ForecastOut.model_json_schema()["$defs"]
    )


def test_the_view_sends_each_record_field_where_the_schema_says():
    row = {**_assembled(), "role": store.SERVED}
    frame = pl.DataFrame(
        [{k: (json.dumps(v) if k in store.JSON_COLUMNS else v) for k, v in row.items()}]
    )
    view = ForecastView(frame)
    body = schemas.ForecastOut.model_validate_json(view.forecast_json["1m"]).model_dump()
    for column in record_columns():
        if not column.api:
            continue
        group, _, name = column.api.rpartition(".")
        sent = body[group][name] if group else body[name]
        assert sent == row[column.name], column.name
    assert body["horizon_days"] == 21 and body["unit"] == "c/lb"


def test_page_zone_levels_are_the_records_target_zones():
    levels = schemas.meta().zone_levels
    assert levels == ["p10", "p30", "p50", "p70", "p90"]
    assert levels == list(schemas.ForecastOut.model_fields["target_zones"].annotation.model_fields)
