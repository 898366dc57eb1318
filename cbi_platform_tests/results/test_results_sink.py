"""The results sink: the platform's own stores mirrored to BigQuery, keyed, never losing a row.

Only the client is faked (`FakeBigQuery`: tables in memory, the sink's Parquet load read back,
its MERGE executed by DuckDB), so the SQL, the schema and the idempotence are all exercised.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import polars as pl
import pytest
from google.api_core import exceptions
from google.cloud import bigquery

from cbi_platform.conditions import ACCURACY, STALE_DATA, Condition
from cbi_platform.operations.alerts import AlertBook
from cbi_platform.operations.condition_log import ConditionLog
from cbi_platform.operations.validation import score_matured, summary
from cbi_platform.procurement.live import RecommendationLog
from cbi_platform.release.control import RETRAIN_REQUESTED, AuditLog
from cbi_platform.results_sink import (
    HOME_ID_COLUMN,
    BigQuerySink,
    NullSink,
    ResultsSinkError,
    merge_sql,
    mirror_existing,
    mirror_validation,
)
from cbi_platform.serving.store import ForecastStore
from cbi_platform_tests.results.fake_bigquery import FakeBigQuery

DAY = dt.date(2024, 5, 6)


def forecast_row(as_of: dt.date, horizon: str, version: str = "3", forecast: float = 50.0):
    return {
        "as_of": as_of,
        "horizon": horizon,
        "model_version": version,
        "target_date": as_of + dt.timedelta(days=7),
        "price": 48.0,
        "forecast": forecast,
        "p10": 45.0,
        "p90": 55.0,
        "statement": "likely between 45 and 55",
        "drivers": [{"feature": "palm", "contribution_pct": 1.2}],
        "created_at": dt.datetime(2024, 5, 6, 20, 15),
        "role": "served",
    }


@pytest.fixture
def fake() -> FakeBigQuery:
    return FakeBigQuery()


@pytest.fixture
def sink(tmp_path: Path, fake: FakeBigQuery) -> BigQuerySink:
    return BigQuerySink("proj", "cbi_results", tmp_path / "results_sink", client=fake)


@pytest.fixture
def store(tmp_path: Path, sink: BigQuerySink) -> ForecastStore:
    return ForecastStore(tmp_path / "forecasts.duckdb", sink=sink)


def test_appended_forecasts_are_mirrored_with_their_key(store, sink, fake):
    assert store.append([forecast_row(DAY, "1w"), forecast_row(DAY, "1m")]) == 2

    remote = fake.table("forecast_history").sort("horizon")
    assert remote.height == 2
    assert remote.select("as_of", "horizon", "model_version").rows() == [
        (DAY, "1m", "3"),
        (DAY, "1w", "3"),
    ]
    assert remote[HOME_ID_COLUMN].n_unique() == 1 and len(remote[HOME_ID_COLUMN][0]) == 32
    # The local row as stored, column for column (JSON kept as text, timestamps as UTC).
    local = store.history().sort("horizon")
    assert remote["drivers"].to_list() == local["drivers"].to_list()
    assert remote["created_at"].to_list() == [
        t.replace(tzinfo=dt.UTC) for t in local["created_at"].to_list()
    ]
    schema = {f.name: f.field_type for f in fake.tables["proj.cbi_results.forecast_history"].schema}
    assert schema["as_of"] == "DATE" and schema["forecast"] == "FLOAT64"
    assert schema["created_at"] == "TIMESTAMP" and schema[HOME_ID_COLUMN] == "STRING"
    assert ("create_dataset", "cbi_results") in fake.calls
    sql, config = fake.queries[-1]
    assert sql.startswith("MERGE INTO `proj`.`cbi_results`.`forecast_history` T USING ")
    assert "ON T.`home_id` = S.`home_id` AND T.`as_of` = S.`as_of` AND T.`horizon`" in sql
    values = re.sub(r"`[^`]*`", "", sql)  # what is left once the quoted names are removed
    assert not re.search(r"[0-9'\"]", values) and config is None  # names only, no values
    staging = [t for t in fake.tables if "_staging_" in t]
    assert staging == []  # the staging table is dropped after the MERGE
    assert sink.pending("forecast_history") == 0


def test_reappending_does_not_duplicate(store, fake):
    store.append([forecast_row(DAY, "1w"), forecast_row(DAY, "1m")])
    # The same keys again, one with a different number: locally a no-op, so remotely too.
    assert store.append([forecast_row(DAY, "1w"), forecast_row(DAY, "1m", forecast=99.0)]) == 0
    remote = fake.table("forecast_history")
    assert remote.height == 2
    assert remote["forecast"].to_list() == [50.0, 50.0]
    store.append([forecast_row(DAY, "1w", version="4")])  # a new key is a new row
    assert fake.table("forecast_history").height == 3
    assert store.history().height == 3


def test_a_failing_warehouse_loses_nothing_and_the_next_write_sends_the_backlog(
    store, sink, fake, caplog
):
    fake.fail = exceptions.ServiceUnavailable("warehouse down")
    with caplog.at_level(logging.WARNING, logger="cbi_platform.results_sink"):
        assert store.append([forecast_row(DAY, "1w")]) == 1  # no exception: local write stands
    assert store.history().height == 1
    assert sink.pending("forecast_history") == 1
    assert "proj.cbi_results.forecast_history" in caplog.text
    assert "warehouse down" in caplog.text and "kept for the next write" in caplog.text

    fake.fail = None
    store.append([forecast_row(DAY + dt.timedelta(days=1), "1w")])
    remote = fake.table("forecast_history").sort("as_of")
    assert remote["as_of"].to_list() == [DAY, DAY + dt.timedelta(days=1)]
    assert sink.pending("forecast_history") == 0


def test_a_backlog_of_another_table_goes_with_the_next_write(tmp_path, sink, fake, store):
    log = ConditionLog(tmp_path / "operations.duckdb", sink=sink)
    fake.fail = exceptions.Forbidden("no permission")
    log.record([Condition("stale", STALE_DATA, True, "data is stale", DAY)], run_id="r1")
    assert sink.backlog() == ["condition_log"]
    fake.fail = None
    store.append([forecast_row(DAY, "1w")])
    assert sink.backlog() == []
    assert fake.table("condition_log")["key"].to_list() == ["stale"]


def test_a_refusal_names_the_table(sink, fake):
    fake.fail = exceptions.BadRequest("schema mismatch")
    sink.write("audit", pl.DataFrame({"seq": [1], "reason": ["x"]}), ["seq"])  # logged only
    with pytest.raises(ResultsSinkError, match=r"proj\.cbi_results\.audit \(1 rows\).*mismatch"):
        sink.flush("audit")


@pytest.mark.parametrize(
    ("table", "rows", "key"),
    [
        ("forecast_history`; DROP TABLE x; --", pl.DataFrame({"seq": [1]}), ["seq"]),
        ("Forecast-History", pl.DataFrame({"seq": [1]}), ["seq"]),
        ("audit", pl.DataFrame({"seq": [1], "a` = 1; --": [2]}), ["seq"]),
        ("audit", pl.DataFrame({"seq": [1]}), ["seq` OR TRUE"]),
        ("audit", pl.DataFrame({"seq": [1], "_PARTITIONTIME": [2]}), ["seq"]),
        ("audit", pl.DataFrame({"seq": [None, 1]}), ["seq"]),  # a key must not be null
        ("audit", pl.DataFrame({"seq": [1]}), []),
    ],
)
def test_identifiers_and_keys_are_validated(sink, fake, table, rows, key):
    with pytest.raises(ValueError, match="refused|key"):
        sink.write(table, rows, key)
    assert fake.calls == [] and sink.backlog() == []


def test_project_dataset_and_location_are_validated(tmp_path):
    for project, dataset, location in [
        ("p`; DROP SCHEMA x; --", "d", None),
        ("proj", "cbi results", None),
        ("proj", "d", "EU`"),
    ]:
        with pytest.raises(ValueError, match="refused"):
            BigQuerySink(project, dataset, tmp_path, location=location)


def test_merge_sql_is_built_from_names_only():
    sql = merge_sql(("p", "d", "t"), ("p", "d", "s"), ["k", "at", "v"], ["k"], complete=True)
    assert sql == (
        "MERGE INTO `p`.`d`.`t` T USING `p`.`d`.`s` S ON T.`k` = S.`k` "
        "WHEN MATCHED THEN UPDATE SET `at` = S.`at`, `v` = S.`v` "
        "WHEN NOT MATCHED THEN INSERT (`k`, `at`, `v`) VALUES (S.`k`, S.`at`, S.`v`) "
        "WHEN NOT MATCHED BY SOURCE AND T.`home_id` = @home_id THEN DELETE"
    )


def test_operations_stores_are_mirrored(tmp_path, sink, fake):
    database = tmp_path / "operations.duckdb"
    firing = Condition("accuracy/1w", ACCURACY, True, "1w worse than the random walk", DAY, "1w")
    ConditionLog(database, sink=sink).record([firing], run_id="r1")
    assert fake.table("condition_log").select("seq", "key", "firing").rows() == [
        (1, "accuracy/1w", True)
    ]

    book = AlertBook(database, sink=sink)
    (fired,) = book.update([firing])
    assert fake.table("alert_state")["key"].to_list() == ["accuracy/1w"]
    assert fake.table("alert_log").select("seq", "event", "delivered").rows() == [
        (fired.seq, "fired", False)
    ]
    book.mark_delivered([fired.seq])  # the update of a logged row reaches the mirror
    assert fake.table("alert_log")["delivered"].to_list() == [True]
    cleared = Condition("accuracy/1w", ACCURACY, False, "ok", DAY + dt.timedelta(days=1), "1w")
    book.update([cleared])
    assert fake.table("alert_state").height == 0  # the open alerts: a whole-table mirror
    assert fake.table("alert_log")["event"].to_list() == ["fired", "resolved"]

    audit = AuditLog(database, sink=sink)
    audit.record("1w", RETRAIN_REQUESTED, actor="sensor", reason="accuracy/1w firing")
    assert fake.table("audit").select("seq", "action", "actor").rows() == [
        (1, RETRAIN_REQUESTED, "sensor")
    ]

    recommendations = RecommendationLog(database, sink=sink)
    row = {
        "as_of": DAY,
        "policy": "zone_split",
        "window_start": dt.date(2024, 5, 1),
        "window_end": dt.date(2024, 5, 31),
        "action": "buy",
        "buy_lb": 180_000.0,
        "price": 44.1,
        "remaining_lb": 1_620_000.0,
        "total_lb": 1_800_000.0,
        "days_left": 18,
        "reason": "below P30",
        "record": {"saving": 0.4},
        "text": "Buy one railcar today.",
        "forecast_versions": {"1m": "3"},
    }
    assert recommendations.append(row) == 1
    assert recommendations.append(row) == 0
    remote = fake.table("recommendations")
    assert remote.select("as_of", "policy", "action").rows() == [(DAY, "zone_split", "buy")]


def test_open_alerts_mirror_only_deletes_this_homes_rows(tmp_path, fake):
    firing = Condition("stale", STALE_DATA, True, "stale", DAY)
    cleared = Condition("stale", STALE_DATA, False, "fresh", DAY + dt.timedelta(days=1))
    homes = []
    for name in ("a", "b"):
        sink = BigQuerySink("proj", "cbi_results", tmp_path / name / "results_sink", client=fake)
        homes.append(AlertBook(tmp_path / name / "operations.duckdb", sink=sink))
        homes[-1].update([firing])
    assert fake.table("alert_state").height == 2  # one open alert per home, keyed apart
    homes[0].update([cleared])
    assert fake.table("alert_state").height == 1  # home b's alert is still open


def test_two_homes_never_overwrite_each_other(tmp_path, fake):
    for name in ("a", "b"):
        sink = BigQuerySink("proj", "cbi_results", tmp_path / name / "results_sink", client=fake)
        AuditLog(tmp_path / name / "operations.duckdb", sink=sink).record(
            "1w", RETRAIN_REQUESTED, actor=name, reason="r"
        )
    audit = fake.table("audit")
    assert audit["seq"].to_list() == [1, 1] and sorted(audit["actor"].to_list()) == ["a", "b"]


def test_validation_results_are_mirrored_once_per_day(store, sink, fake):
    days = [DAY + dt.timedelta(days=i) for i in range(42)]
    days = [d for d in days if d.weekday() < 5]
    prices = pl.DataFrame({"date": days, "value": [48.0 + 0.1 * i for i in range(len(days))]})
    store.append(
        [{**forecast_row(d, "1w"), "target_date": days[i + 5]} for i, d in enumerate(days[:-5])]
    )
    # The frames the `forecast_validation` asset mirrors, computed as it computes them.
    scored = score_matured(store.history(), prices).drop("drivers_detail", strict=False)
    per_horizon = summary(scored, ["horizon"])
    assert scored.height == len(days) - 5
    for _ in range(2):  # a rerun of the same day changes nothing
        mirror_validation(sink, scored, per_horizon, days[-1])
    remote = fake.table("forecast_validation")
    assert remote.height == scored.height
    assert remote.sort("as_of")["abs_error"].to_list() == pytest.approx(
        scored.sort("as_of")["abs_error"].to_list()
    )
    assert fake.table("validation_summary").select("validated_as_of", "horizon", "n").rows() == [
        (days[-1], "1w", scored.height)
    ]
    mirror_validation(sink, scored, per_horizon, days[-1] + dt.timedelta(days=1))
    assert fake.table("validation_summary").height == 2


def test_new_columns_are_added_to_the_remote_table(sink, fake):
    sink.write("audit", pl.DataFrame({"seq": [1], "reason": ["a"]}), ["seq"])
    sink.write("audit", pl.DataFrame({"seq": [2], "reason": ["b"], "score": [0.5]}), ["seq"])
    remote = fake.table("audit").sort("seq")
    assert remote["score"].to_list() == [None, 0.5]
    assert [f.name for f in fake.tables["proj.cbi_results.audit"].schema][-1] == "score"


def test_default_configuration_touches_no_bigquery(tmp_path, monkeypatch):
    from cbi_platform.defs.resources import build_resources

    def no_client(*args, **kwargs):
        raise AssertionError("BigQuery was contacted")

    monkeypatch.setattr(bigquery, "Client", no_client)
    resources = build_resources({"CBI_HOME": str(tmp_path)})
    store = resources["forecast_store"].store()
    operations = resources["operations"]
    assert isinstance(store.sink, NullSink)
    for made in (operations.conditions(), operations.alert_book(), operations.audit()):
        assert isinstance(made.sink, NullSink)
    assert store.append([forecast_row(DAY, "1w")]) == 1
    operations.conditions().record([Condition("s", STALE_DATA, True, "t", DAY)])
    assert store.history().height == 1
    assert not (tmp_path / "results_sink").exists()


def test_bigquery_results_are_configured_from_the_environment(tmp_path):
    from cbi_platform.defs.resources import build_resources

    base = {"CBI_HOME": str(tmp_path), "CBI_GCP_PROJECT": "proj"}
    on = build_resources({**base, "CBI_WAREHOUSE": "bigquery", "CBI_BQ_DATASET": "cbi"})
    sink = on["forecast_store"].store().sink
    assert isinstance(sink, BigQuerySink) and (sink.project, sink.dataset) == (
        "proj",
        "cbi_results",
    )
    assert sink.state_dir == tmp_path.resolve() / "results_sink"
    assert isinstance(on["operations"].results_sink(), BigQuerySink)
    only_results = build_resources(
        {**base, "CBI_RESULTS": "bigquery", "CBI_BQ_RESULTS_DATASET": "ops"}
    )
    assert only_results["operations"].results_sink().dataset == "ops"
    off = build_resources({**base, "CBI_WAREHOUSE": "bigquery", "CBI_RESULTS": "none"})
    assert isinstance(off["forecast_store"].store().sink, NullSink)
    with pytest.raises(ValueError, match="warehouse dataset"):
        build_resources({**base, "CBI_WAREHOUSE": "bigquery", "CBI_BQ_RESULTS_DATASET": "cbi"})
    with pytest.raises(ValueError, match="CBI_GCP_PROJECT"):
        build_resources({"CBI_HOME": str(tmp_path), "CBI_RESULTS": "bigquery"})


def test_a_home_that_ran_without_the_sink_is_sent_whole(tmp_path, sink, fake):
    ForecastStore(tmp_path / "forecasts.duckdb").append(
        [forecast_row(DAY, "1w"), forecast_row(DAY, "1m")]
    )
    ConditionLog(tmp_path / "operations.duckdb").record(
        [Condition("stale", STALE_DATA, True, "stale", DAY)]
    )
    assert fake.calls == []  # written locally only (NullSink)
    for _ in range(2):
        sent = mirror_existing(sink, tmp_path)
    assert sent == {"forecast_history": 2, "condition_log": 1}
    assert fake.table("forecast_history").height == 2
    assert fake.table("condition_log").height == 1
