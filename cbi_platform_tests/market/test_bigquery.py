"""The BigQuery source through the real client library; only the network call is faked."""

import datetime as dt

import polars as pl
import pyarrow as pa
import pytest
from google.cloud import bigquery

from cbi_platform.market.bigquery import load_bigquery_source
from cbi_platform.market.schema import MarketDataError


class _Job:
    def __init__(self, table):
        self._table = table

    def to_arrow(self):
        return self._table


class FakeClient:
    """Stands in for google.cloud.bigquery.Client at the query boundary."""

    def __init__(self, tables):
        self.tables, self.calls = tables, []

    def query(self, sql, job_config=None):
        self.calls.append((sql, job_config))
        for name, table in self.tables.items():
            if f"`{name}`" in sql:
                return _Job(table)
        raise AssertionError(sql)


PRICES = pa.table(
    {
        "symbol": ["ZL", "ZL"],
        "date": [dt.date(2024, 1, 2), dt.date(2024, 1, 3)],
        "value": [48.1, 47.9],
        "unit": ["c/lb", "c/lb"],
        "source": ["bq", "bq"],
        "published_at": [dt.date(2024, 1, 2), dt.date(2024, 1, 3)],
        "open": [None, None],
        "high": [None, None],
        "low": [None, None],
        "volume": [None, None],
    }
)


def test_parameterized_query_and_canonical_result():
    client = FakeClient({"proj.mkt.prices": PRICES})
    bundle = load_bigquery_source(
        client, "proj.mkt.prices", None, start=dt.date(2024, 1, 1), end=dt.date(2024, 2, 1)
    )
    sql, config = client.calls[0]
    assert "@start_date" in sql and "@end_date" in sql and "2024" not in sql
    assert isinstance(config, bigquery.QueryJobConfig)
    params = {p.name: p.value for p in config.query_parameters}
    assert params == {"start_date": dt.date(2024, 1, 1), "end_date": dt.date(2024, 2, 1)}
    assert bundle.prices.schema["date"] == pl.Date
    assert bundle.prices["value"].to_list() == [48.1, 47.9]
    assert any("news" in n for n in bundle.notices)
    assert bundle.target == "ZL"  # canonical tables: the platform's target symbol


def test_table_name_injection_refused():
    with pytest.raises(MarketDataError, match="project.dataset.table"):
        load_bigquery_source(FakeClient({}), "x`; DROP TABLE y; --", None)


def test_empty_result_is_a_clear_error():
    client = FakeClient({"p.d.t": PRICES.slice(0, 0)})
    with pytest.raises(MarketDataError, match="no rows"):
        load_bigquery_source(client, "p.d.t", None)


class RangeClient(FakeClient):
    """Applies the query's date parameters to the table, as BigQuery would."""

    def query(self, sql, job_config=None):
        job = super().query(sql, job_config)
        params = {p.name: p.value for p in job_config.query_parameters}
        frame = pl.from_arrow(job.to_arrow())
        column = "date" if "date" in frame.columns else "published_at"
        rows = frame.filter(pl.col(column).is_between(params["start_date"], params["end_date"]))
        return _Job(rows.to_arrow())


def _prices(n: int) -> pa.Table:
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": "ZL",
            "date": days,
            "value": [40.0 + i for i in range(n)],
            "unit": "c/lb",
            "source": "bq",
            "published_at": days,
        }
    ).to_arrow()


def test_the_refresh_queries_only_past_the_last_loaded_date(tmp_path):
    from cbi_platform.market.bigquery import REVISION_DAYS, load_bigquery_incremental

    end = dt.date(2024, 12, 31)
    first = RangeClient({"p.d.t": _prices(60)})
    full = load_bigquery_incremental(first, "p.d.t", None, tmp_path, end=end)
    assert full.prices.height == 60
    # A day later the table has one more row and a correction of an earlier one.
    table = pl.from_arrow(_prices(61)).with_columns(
        value=pl.when(pl.col("date") == dt.date(2024, 2, 27)).then(99.0).otherwise("value")
    )
    second = RangeClient({"p.d.t": table.to_arrow()})
    bundle = load_bigquery_incremental(second, "p.d.t", None, tmp_path, end=end)
    params = {p.name: p.value for p in second.calls[0][1].query_parameters}
    assert params["start_date"] == dt.date(2024, 2, 29) - dt.timedelta(days=REVISION_DAYS)
    assert bundle.prices.height == 61 and bundle.prices["date"].is_unique().all()
    assert bundle.prices.filter(pl.col("date") == dt.date(2024, 2, 27))["value"][0] == 99.0
    assert "earlier rows from the local cache" in bundle.notices[0]
    assert bundle.prices.sort("date")["value"].to_list() == table.sort("date")["value"].to_list()
