"""Resources, and the one place that reads the environment.

Local (default): DuckDB warehouse under the home folder, the embedded simulator as source.
Production: CBI_WAREHOUSE=bigquery switches the IO manager to BigQuery (dagster-gcp), and
CBI_SOURCE=bigquery reads the canonical tables from BigQuery. CBI_RESULTS=bigquery (the default
with a BigQuery warehouse) mirrors the platform's own results there too (`results_sink`).
CBI_VERTEX_PROJECT (with the other CBI_VERTEX_* variables) enables the Vertex AI deployment of
the champions (`vertex_deployment`); unset, it is disabled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler
from pydantic import Field

from cbi_platform import clock
from cbi_platform.defs.dagster_internals import duckdb_io_manager_with_client
from cbi_platform.defs.vertex_resource import VertexDeployResource
from cbi_platform.market.schema import MarketBundle, target_series
from cbi_platform.market.sources import SourceConfig, load_market, reference_date, target_symbol
from cbi_platform.models.registry import RETURN_KINDS
from cbi_platform.settings import DEFAULT_HOME, HORIZON_KEYS, home_path
from cbi_platform.storage import (
    WAREHOUSE_LOCK_TIMEOUT,
    FencedWriteError,
    fenced_write_reason,
    write_lock,
)

WAREHOUSE_SCHEMA = "cbi"


class _KeepEmptyTablesHandler(DuckDBPolarsTypeHandler):
    """Writes an empty frame as an empty table with its columns (the stock handler skips it, so
    a downstream asset could not load, e.g., the news of a source that has none), and lets
    partitions of one table carry different columns: new ones are added, rows inserted by name
    (the stock handler inserts by position and fails when a partition has more columns)."""

    def handle_output(self, context, table_slice, obj, connection):
        if not obj.width:
            return super().handle_output(context, table_slice, obj, connection)
        data_arrow = obj.to_arrow()  # noqa: F841  (read by name in the SQL below)
        schema, name = table_slice.schema, table_slice.table
        table = f"{schema}.{name}"
        connection.execute(f"create schema if not exists {schema};")
        exists = connection.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, name],
        ).fetchone()[0]
        if not exists:
            connection.execute(f"create table {table} as select * from data_arrow;")
        elif obj.height:
            # Partitions may differ in columns (a horizon's own features): add the new ones,
            # insert by name; rows of other partitions read null there (see horizon_frame).
            have = {
                row[0]
                for row in connection.execute(
                    "select column_name from information_schema.columns "
                    "where table_schema = ? and table_name = ?",
                    [schema, name],
                ).fetchall()
            }
            for column, kind, *_ in connection.execute(
                "describe select * from data_arrow"
            ).fetchall():
                if column not in have:
                    connection.execute(f'alter table {table} add column "{column}" {kind};')
            connection.execute(f"insert into {table} by name select * from data_arrow;")
        context.add_output_metadata({"row_count": obj.height})


def _run_status(context: dg.OutputContext) -> str | None:
    """The status (name) the instance records for the run writing `context`'s output; None for
    a context built outside a run (no step context) or a run the instance does not know."""
    try:
        instance = context.step_context.instance
    except dg.DagsterInvariantViolationError:
        return None
    run = instance.get_run_by_id(context.run_id)
    return run.status.value if run is not None else None


def _refuse_a_dead_run(context: dg.OutputContext) -> None:
    reason = fenced_write_reason(context.run_id, _run_status(context))
    if reason:
        raise FencedWriteError(reason)


def _open_warehouse(database: str, config: Mapping[str, object]) -> duckdb.DuckDBPyConnection:
    """A read-write connection. Every platform process waits on the lock first, so the file is
    busy only when something else (a `duckdb` shell) holds it: retry a little, then fail."""
    for attempt in range(8):
        try:
            return duckdb.connect(database, read_only=False, config=dict(config))
        except duckdb.IOException:
            if attempt == 7:
                raise
            time.sleep(min(0.1 * 2**attempt, 5.0))
    raise AssertionError("unreachable")


# The unpartitioned tables both run lanes write: a training run (market_data_job, retrain_job)
# and the daily refresh each rebuild them from the source, and a refresh may land in the middle
# of a retrain. A run must not see one version in one step and another in the next (the soak
# caught a retrain whose features were built on one day's prices and checked against the next
# day's, and failed its leakage gates), so each run pins the version it wrote, or first read,
# in `run_pins.<table>__<run id>` and reads only that one afterwards. Pins of runs that are
# over are dropped at the next pin. cbi_platform_tests/defs/test_run_pins.py keeps this list
# equal to what the jobs share.
RUN_PINNED_TABLES = frozenset(
    {"raw_market_prices", "market_prices", "news_articles", "news_sentiment"}
)
PIN_SCHEMA = "run_pins"
_LIVE_RUN_STATUSES = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED"})


def _run_of(context) -> tuple[str, object] | None:
    """(run id, instance) of the run an IO context belongs to; None outside a run."""
    try:
        step = context.step_context
    except (dg.DagsterInvariantViolationError, AttributeError):
        return None
    if step is None:
        return None
    return step.run_id, step.instance


def pin_table(table: str, run_id: str) -> str:
    return f"{table}__{run_id.replace('-', '')}"


def _pinned(context, table_slice_table: str) -> bool:
    return table_slice_table in RUN_PINNED_TABLES and not context.has_asset_partitions


def _sweep_pins(connection: duckdb.DuckDBPyConnection, instance, keep: str) -> list[str]:
    """Drop the pins of runs that are over (or unknown to this instance); returns them."""
    dropped = []
    names = connection.execute(
        "select table_name from information_schema.tables where table_schema = ?", [PIN_SCHEMA]
    ).fetchall()
    for (name,) in names:
        run_hex = name.rsplit("__", 1)[-1]
        if run_hex == keep:
            continue
        run_id = "-".join(
            (run_hex[:8], run_hex[8:12], run_hex[12:16], run_hex[16:20], run_hex[20:])
        )
        run = instance.get_run_by_id(run_id)
        if run is None or run.status.value not in _LIVE_RUN_STATUSES:
            connection.execute(f'drop table if exists {PIN_SCHEMA}."{name}"')
            dropped.append(name)
    return dropped


def _pin(connection: duckdb.DuckDBPyConnection, schema: str, table: str, run) -> str:
    """Copy `schema.table` to this run's pin (replacing it) and sweep; returns the pin's name."""
    run_id, instance = run
    name = pin_table(table, run_id)
    connection.execute(f"create schema if not exists {PIN_SCHEMA};")
    connection.execute(
        f'create or replace table {PIN_SCHEMA}."{name}" as select * from {schema}.{table};'
    )
    _sweep_pins(connection, instance, keep=run_id.replace("-", ""))
    return name


class _LockedDuckDbClient(DuckDbClient):
    """dagster_duckdb's client with every connection (load or store) opened under the
    warehouse's lock (storage.write_lock) and closed as soon as it is done, whatever happens: a
    connection held open by one process makes DuckDB refuse every other process. A store is one
    transaction, committed only while the run writing it is still alive (checked before the
    work and again before the commit), so a dead run's step writes nothing."""

    @staticmethod
    @contextlib.contextmanager
    def connect(context, table_slice) -> Iterator[duckdb.DuckDBPyConnection]:
        database = str(context.resource_config["database"])
        config = {"custom_user_agent": "dagster", **context.resource_config["connection_config"]}
        storing = isinstance(context, dg.OutputContext)
        with write_lock(database, WAREHOUSE_LOCK_TIMEOUT):
            if storing:
                _refuse_a_dead_run(context)
            connection = _open_warehouse(database, config)
            try:
                if storing:
                    connection.begin()
                yield connection
                if storing:
                    run = _run_of(context)
                    if run is not None and _pinned(context, table_slice.table):
                        _pin(connection, table_slice.schema, table_slice.table, run)
                    _refuse_a_dead_run(context)  # the run may have died while this wrote
                    connection.commit()
            finally:
                connection.close()  # an uncommitted store is rolled back


class WarehouseIOManager(DuckDBPolarsIOManager):
    """The local warehouse: DuckDB + polars, keeping empty tables (see the handler), every
    connection under the warehouse lock and every store fenced (see `_LockedDuckDbClient`)."""

    @staticmethod
    def type_handlers():
        return [_KeepEmptyTablesHandler()]

    def create_io_manager(self, context) -> dg.IOManager:
        return _RunPinnedIOManager(
            duckdb_io_manager_with_client(self, _LockedDuckDbClient()),
            database=self.database,
            schema=self.schema_ or "public",
        )


class _RunPinnedIOManager(dg.IOManager):
    """The warehouse IO manager, with RUN_PINNED_TABLES read from the run's own pin: the
    version the run stored (pinned in the store's transaction), else the one it first read
    (pinned by that read, under the same lock)."""

    def __init__(self, inner: dg.IOManager, database: str, schema: str):
        self._inner, self._database, self._schema = inner, database, schema

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        self._inner.handle_output(context, obj)

    def load_input(self, context: dg.InputContext):
        table = context.asset_key.path[-1] if context.has_asset_key else None
        run = _run_of(context)
        if table is None or run is None or not _pinned(context, table):
            return self._inner.load_input(context)
        name = pin_table(table, run[0])
        with write_lock(self._database, WAREHOUSE_LOCK_TIMEOUT):
            connection = _open_warehouse(self._database, {"custom_user_agent": "dagster"})
            try:
                exists = connection.execute(
                    "select count(*) from information_schema.tables "
                    "where table_schema = ? and table_name = ?",
                    [PIN_SCHEMA, name],
                ).fetchone()[0]
                if not exists:
                    _pin(connection, self._schema, table, run)
                    context.log.info(f"{table}: this run reads the version of now (pinned)")
                return pl.DataFrame(
                    connection.execute(f'select * from {PIN_SCHEMA}."{name}"').arrow()
                )
            finally:
                connection.close()


class MarketSourceResource(dg.ConfigurableResource):
    """Where market data comes from: `simulated` (default), `files` (a manifest) or `bigquery`."""

    kind: str = Field(default="simulated", description="simulated | files | bigquery")
    manifest: str | None = Field(default=None, description="files: path to the YAML manifest")
    simulator_seed: int | None = None
    simulator_end: str | None = Field(default=None, description="simulated: last date, ISO")
    simulator_live: bool = Field(
        default=False, description="simulated: end today (a new row each business day)"
    )
    replay_through: str | None = Field(
        default=None, description="replay: only data published by this date, ISO"
    )
    cache_dir: str | None = Field(
        default=None, description="bigquery: cache of earlier loads (incremental reads)"
    )
    bigquery_project: str | None = None
    bigquery_location: str | None = None
    bigquery_prices_table: str | None = None
    bigquery_news_table: str | None = None

    def source_config(self) -> SourceConfig:
        """The source's configuration now. Under a simulated clock (CBI_CLOCK_FILE, the soak)
        only data published by the feed's day (`clock.data_through`) is delivered, read at call
        time: the resource is built once when the code loads, the clock moves after."""
        replay_through = dt.date.fromisoformat(self.replay_through) if self.replay_through else None
        if replay_through is None and clock.simulated():
            replay_through = clock.data_through()
        return SourceConfig(
            kind=self.kind,
            manifest=self.manifest,
            simulator_seed=self.simulator_seed,
            simulator_end=dt.date.fromisoformat(self.simulator_end) if self.simulator_end else None,
            simulator_live=self.simulator_live,
            replay_through=replay_through,
            cache_dir=self.cache_dir,
            bigquery_prices_table=self.bigquery_prices_table,
            bigquery_news_table=self.bigquery_news_table,
        )

    def load(self) -> MarketBundle:
        config = self.source_config()
        if config.kind == "bigquery":
            # dagster-gcp (with google-cloud-bigquery) costs ~0.4 s to import: only when used,
            # not in every run process that imports the definitions.
            from dagster_gcp import BigQueryResource

            bq = BigQueryResource(project=self.bigquery_project, location=self.bigquery_location)
            with bq.get_client() as client:
                return load_market(config, bigquery_client=client)
        return load_market(config)

    def target(self) -> str:
        return target_symbol(self.source_config())

    def target_prices(self, market_prices: pl.DataFrame) -> pl.DataFrame:
        """The target symbol's rows of `market_prices`, in date order: the prologue of every
        asset that models, scores or monitors the target."""
        return target_series(market_prices, self.target())

    def reference_date(self) -> dt.date:
        """The day staleness is judged against; under a simulated clock the clock's day, not the
        feed's (a held feed must read as stale)."""
        if self.replay_through is None and clock.simulated():
            return clock.today()
        return reference_date(self.source_config())


class SentimentResource(dg.ConfigurableResource):
    """News scoring: FinBERT from a local folder, or the Hugging Face cache when unset (offline
    either way); without weights the scoring process falls back to the VADER lexicon."""

    finbert_path: str | None = Field(
        default=None, description="FinBERT weights folder (CBI_FINBERT_PATH); unset: HF cache"
    )


class PlatformHome(dg.ConfigurableResource):
    """The gitignored home folder: warehouse, exports, MLflow store. Assets ask it for paths."""

    path: str = str(DEFAULT_HOME)

    def folder(self, *parts: str) -> Path:
        folder = Path(self.path).joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class ProtocolResource(dg.ConfigurableResource):
    """The walk-forward protocol: cbi_platform/protocol.yaml (or `protocol_file`), with any field
    set here overriding it (tests shrink it); plus how the run executes it (workers)."""

    protocol_file: str | None = Field(default=None, description="YAML; default: the frozen one")
    anchor: str | None = Field(default=None, description="grid anchor date, ISO")
    span: int | None = None
    n_scored: int | None = None
    end_offset: int | None = None
    n_development: int | None = None
    n_calibration: int | None = None
    min_first_origin_row: int | None = None
    min_history: int | None = None
    zone_method: str | None = None
    n_workers: int = 2
    model_kinds: list[str] = list(RETURN_KINDS)  # every kind that forecasts a return
    specs_file: str | None = Field(default=None, description="model specs YAML; default: zoo")
    zoo: str = Field(
        default="core",
        description="core: the members make run trains within its budget; extended: also the "
        "specs' extended_horizons (networks cut from the budget)",
    )
    fit_cache: str | None = Field(
        default=None, description="folder of fitted networks shared by steps (content-addressed)"
    )
    regime_folds: int = 6

    def protocol(self):
        from cbi_platform.settings import load_protocol

        overrides = {
            name: getattr(self, name)
            for name in (
                "anchor",
                "span",
                "n_scored",
                "end_offset",
                "n_development",
                "n_calibration",
                "min_first_origin_row",
                "min_history",
                "zone_method",
            )
        }
        return load_protocol(self.protocol_file, **overrides)

    def config(self):
        from cbi_platform.evaluation.horizon_run import ProtocolConfig

        return ProtocolConfig(
            protocol=self.protocol(), n_workers=self.n_workers, fit_cache=self.fit_cache
        )

    def specs(self, horizon: str, kinds: tuple[str, ...] | None = None) -> list:
        """The members this run trains at `horizon`: the specs file's entries of `model_kinds`
        (narrowed to `kinds`, e.g. one group's)."""
        from cbi_platform.evaluation.horizon_run import zoo_specs

        wanted = tuple(k for k in self.model_kinds if kinds is None or k in kinds)
        return zoo_specs(horizon, wanted, self.specs_file, self.zoo) if wanted else []


class GpuResource(dg.ConfigurableResource):
    """The one training device behind the single-slot `gpu` pool: every asset that trains a
    network takes the pool and this resource. Networks train in spawned worker processes; the
    resource hands them the Keras backend and the precision policy through their environment.
    precision "auto" turns mixed float16 on only where the detected device gains from it
    (CUDA); on CPU it made recurrent layers 2x slower when measured."""

    backend: str = Field(default="tensorflow", description="KERAS_BACKEND: tensorflow|jax|torch")
    precision: str = Field(default="auto", description="auto | float32 | mixed_float16")
    threads: int = Field(default=1, description="intra-op threads per training process")

    def environment(self) -> dict[str, str]:
        if self.backend not in ("tensorflow", "jax", "torch"):
            raise ValueError(f"gpu.backend must be tensorflow, jax or torch, not {self.backend!r}")
        if self.precision not in ("auto", "float32", "mixed_float16"):
            raise ValueError(
                f"gpu.precision must be auto|float32|mixed_float16: {self.precision!r}"
            )
        return {
            "KERAS_BACKEND": self.backend,
            "CBI_NEURAL_PRECISION": self.precision,
            "CBI_NEURAL_THREADS": str(self.threads),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking in a SQLite store under the home folder (the file store is refused)."""

    tracking_uri: str
    artifact_root: str
    ui_url: str = "http://localhost:5000"
    experiment: str = "cbi-zl"

    def tracker(self):
        from cbi_platform.tracking import Tracker

        return Tracker(self.tracking_uri, Path(self.artifact_root), self.experiment)


class ResultsConfig(dg.Config):
    """Where the platform's own results (forecast history, operations logs, validation) are
    mirrored after each local write: `none` (local only) or `bigquery` (`project.dataset`).
    The spool of rows not yet mirrored lives in `results_sink/` beside the store's file."""

    kind: str = Field(default="none", description="none | bigquery")
    project: str | None = None
    dataset: str = "cbi_results"
    location: str | None = None

    def sink(self, database: str):
        from cbi_platform.results_sink import build_sink

        return build_sink(
            self.kind,
            project=self.project,
            dataset=self.dataset,
            location=self.location,
            state_dir=Path(database).parent / "results_sink",
        )


class ForecastStoreResource(dg.ConfigurableResource):
    """The append-only forecast history (DuckDB file in the home folder)."""

    database: str
    results: ResultsConfig = Field(default_factory=ResultsConfig)

    def store(self):
        from cbi_platform.serving.store import ForecastStore

        return ForecastStore(self.database, sink=self.results.sink(self.database))


class OperationsResource(dg.ConfigurableResource):
    """Operating state (condition log, alert book, audit log: `operations.duckdb` in the home
    folder), the monitoring thresholds, and where alert mails go (SMTP)."""

    database: str
    monitoring_file: str | None = Field(default=None, description="default: monitoring.yaml")
    dagster_url: str = Field(default="http://localhost:3000", description="for run links")
    smtp_host: str | None = Field(default=None, description="unset: alerts are logged only")
    smtp_port: int = 587
    smtp_security: str = Field(default="starttls", description="none | starttls | ssl")
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_sender: str | None = None
    smtp_recipients: str | None = Field(default=None, description="comma-separated")
    horizons: list[str] = Field(
        default=list(HORIZON_KEYS), description="horizons the daily loop serves"
    )
    planted_bias: str | None = Field(
        default=None,
        description="replay or soak (CBI_PLANTED_BIAS): 'HORIZON:LOGRET:FROM_DATE' shifts the "
        "then-champion's forecasts from that day (a planted degradation the monitors must catch)",
    )
    playbook_url: str = Field(
        default="docs/PLAYBOOK.md", description="mails link to <playbook_url>#<kind>"
    )
    digest_hour: int = Field(
        default=7, ge=0, le=23, description="local hour from which yesterday's digest is due"
    )
    results: ResultsConfig = Field(default_factory=ResultsConfig)

    def results_sink(self):
        """Where the operations tables are mirrored (a `NullSink` by default)."""
        return self.results.sink(self.database)

    def perturbation(self):
        """The planted degradation, bound to the champion at the time it starts (None: off)."""
        if not self.planted_bias:
            return None
        from cbi_platform.operations.refresh import planted_bias

        return planted_bias(self.planted_bias, Path(self.database).parent)

    def config(self):
        from cbi_platform.operations.config import load_monitoring

        return load_monitoring(self.monitoring_file)

    def conditions(self):
        from cbi_platform.operations.condition_log import ConditionLog

        return ConditionLog(self.database, sink=self.results_sink())

    def alert_book(self):
        from cbi_platform.operations.alerts import AlertBook

        return AlertBook(self.database, sink=self.results_sink())

    def audit(self):
        from cbi_platform.release.control import AuditLog

        return AuditLog(self.database, sink=self.results_sink())

    def mailer(self):
        """The SMTP mailer, or None when no SMTP host is configured."""
        if not self.smtp_host:
            return None
        from cbi_platform.operations.alerts import SmtpMailer, SmtpSettings

        return SmtpMailer(
            SmtpSettings(
                host=self.smtp_host,
                port=self.smtp_port,
                security=self.smtp_security,
                sender=self.smtp_sender or "",
                recipients=tuple(
                    r.strip() for r in (self.smtp_recipients or "").split(",") if r.strip()
                ),
                username=self.smtp_username,
                password=self.smtp_password,
                playbook_url=self.playbook_url,
            )
        )

    def run_link(self, run_id: str) -> str:
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}"


def _env_var(env: Mapping[str, str], name: str):
    """A secret as `dg.EnvVar` (resolved at run time, never stored), when it is set."""
    return dg.EnvVar(name) if env.get(name) else None


def _results_config(env: Mapping[str, str], warehouse: str) -> ResultsConfig:
    """CBI_RESULTS: none or bigquery (default: bigquery when the warehouse is, else none)."""
    kind = env.get("CBI_RESULTS", "bigquery" if warehouse == "bigquery" else "none")
    if kind == "none":
        return ResultsConfig()
    if kind != "bigquery":
        raise ValueError(f"CBI_RESULTS must be none or bigquery, not {kind!r}")
    project = env.get("CBI_GCP_PROJECT")
    if not project:
        raise ValueError("CBI_RESULTS=bigquery: set CBI_GCP_PROJECT (the results' project)")
    dataset = env.get("CBI_BQ_RESULTS_DATASET", "cbi_results")
    if warehouse == "bigquery" and dataset == env.get("CBI_BQ_DATASET", WAREHOUSE_SCHEMA):
        raise ValueError(
            f"CBI_BQ_RESULTS_DATASET: {dataset!r} is also the warehouse dataset, whose asset "
            "tables (e.g. forecast_validation) the IO manager replaces; use another dataset"
        )
    return ResultsConfig(
        kind="bigquery", project=project, dataset=dataset, location=env.get("CBI_GCP_LOCATION")
    )


# ProtocolResource fields CBI_PROTOCOL_OVERRIDES may set (a deployment's reduced protocol or zoo,
# e.g. the soak's and the daemon test's; the frozen protocol otherwise).
_PROTOCOL_OVERRIDABLE = (
    "anchor",
    "span",
    "n_scored",
    "end_offset",
    "n_development",
    "n_calibration",
    "min_first_origin_row",
    "min_history",
    "zone_method",
    "model_kinds",
    "regime_folds",
)


def protocol_overrides(env: Mapping[str, str]) -> dict:
    """CBI_PROTOCOL_OVERRIDES: a JSON object of protocol fields (`_PROTOCOL_OVERRIDABLE`)."""
    text = env.get("CBI_PROTOCOL_OVERRIDES")
    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"CBI_PROTOCOL_OVERRIDES is not JSON ({exc}): {text[:200]!r}") from None
    if not isinstance(overrides, dict):
        raise ValueError('CBI_PROTOCOL_OVERRIDES must be a JSON object, e.g. {"span": 110}')
    unknown = sorted(set(overrides) - set(_PROTOCOL_OVERRIDABLE))
    if unknown:
        raise ValueError(
            f"CBI_PROTOCOL_OVERRIDES: unknown field(s) {unknown}; allowed: "
            f"{list(_PROTOCOL_OVERRIDABLE)}"
        )
    return overrides


def served_horizons(env: Mapping[str, str]) -> list[str]:
    """CBI_HORIZONS: the horizons the daily loop serves (comma-separated; default: all five)."""
    text = env.get("CBI_HORIZONS")
    if not text:
        return list(HORIZON_KEYS)
    horizons = [h.strip() for h in text.split(",") if h.strip()]
    unknown = [h for h in horizons if h not in HORIZON_KEYS]
    if unknown or not horizons:
        raise ValueError(f"CBI_HORIZONS={text!r}: each must be one of {list(HORIZON_KEYS)}")
    return horizons


def build_resources(env: Mapping[str, str] | None = None) -> dict:
    env = os.environ if env is None else env
    home = home_path(env)
    source = MarketSourceResource(
        kind=env.get("CBI_SOURCE", "files" if env.get("CBI_MANIFEST") else "simulated"),
        manifest=env.get("CBI_MANIFEST"),
        simulator_end=env.get("CBI_SIM_END"),
        simulator_live=env.get("CBI_SIM_LIVE", "0").lower() in ("1", "true", "yes"),
        bigquery_project=env.get("CBI_GCP_PROJECT"),
        bigquery_location=env.get("CBI_GCP_LOCATION"),
        bigquery_prices_table=env.get("CBI_BQ_PRICES_TABLE"),
        bigquery_news_table=env.get("CBI_BQ_NEWS_TABLE"),
        cache_dir=str(home / "source_cache"),
    )
    warehouse = env.get("CBI_WAREHOUSE", "duckdb")
    if warehouse == "bigquery":
        from dagster_polars import PolarsBigQueryIOManager

        io_manager = PolarsBigQueryIOManager(
            project=env.get("CBI_GCP_PROJECT", ""),
            dataset=env.get("CBI_BQ_DATASET", WAREHOUSE_SCHEMA),
            location=env.get("CBI_GCP_LOCATION"),
        )
    elif warehouse == "duckdb":
        home.mkdir(parents=True, exist_ok=True)
        io_manager = WarehouseIOManager(
            database=str(home / "warehouse.duckdb"), schema=WAREHOUSE_SCHEMA
        )
    else:
        raise ValueError(f"CBI_WAREHOUSE must be duckdb or bigquery, not {warehouse!r}")
    home.mkdir(parents=True, exist_ok=True)
    results = _results_config(env, warehouse)
    return {
        "io_manager": io_manager,
        "market_source": source,
        "home": PlatformHome(path=str(home)),
        "protocol": ProtocolResource(
            protocol_file=env.get("CBI_PROTOCOL"),
            n_workers=int(env.get("CBI_WORKERS", "2")),
            specs_file=env.get("CBI_SPECS"),
            zoo=env.get("CBI_ZOO", "core"),
            fit_cache=str(home / "fit_cache"),
            **protocol_overrides(env),
        ),
        "gpu": GpuResource(
            backend=env.get("KERAS_BACKEND", "tensorflow"),
            precision=env.get("CBI_NEURAL_PRECISION", "auto"),
        ),
        "mlflow": MlflowResource(
            tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
            artifact_root=str(home / "mlartifacts"),
            ui_url=env.get("CBI_MLFLOW_UI", "http://localhost:5000"),
        ),
        "forecast_store": ForecastStoreResource(
            database=str(home / "forecasts.duckdb"), results=results
        ),
        "sentiment": SentimentResource(finbert_path=env.get("CBI_FINBERT_PATH")),
        "operations": OperationsResource(
            database=str(home / "operations.duckdb"),
            monitoring_file=env.get("CBI_MONITORING"),
            dagster_url=env.get("CBI_DAGSTER_URL", "http://localhost:3000"),
            smtp_host=env.get("CBI_SMTP_HOST"),
            smtp_port=int(env.get("CBI_SMTP_PORT", "587")),
            smtp_security=env.get("CBI_SMTP_SECURITY", "starttls"),
            smtp_username=_env_var(env, "CBI_SMTP_USERNAME"),
            smtp_password=_env_var(env, "CBI_SMTP_PASSWORD"),
            smtp_sender=env.get("CBI_SMTP_SENDER"),
            smtp_recipients=env.get("CBI_SMTP_RECIPIENTS"),
            playbook_url=env.get("CBI_PLAYBOOK_URL", "docs/PLAYBOOK.md"),
            digest_hour=int(env.get("CBI_DIGEST_HOUR", "7")),
            horizons=served_horizons(env),
            planted_bias=env.get("CBI_PLANTED_BIAS") or None,
            results=results,
        ),
        "vertex": VertexDeployResource(
            project=env.get("CBI_VERTEX_PROJECT"),
            location=env.get("CBI_VERTEX_LOCATION", "us-central1"),
            image_uri=env.get("CBI_VERTEX_IMAGE_URI"),
            staging_bucket=env.get("CBI_VERTEX_STAGING_BUCKET"),
            shadow_traffic=int(env.get("CBI_VERTEX_SHADOW_TRAFFIC", "0")),
            machine_type=env.get("CBI_VERTEX_MACHINE_TYPE", "n1-standard-2"),
            service_account=env.get("CBI_VERTEX_SERVICE_ACCOUNT"),
        ),
    }
