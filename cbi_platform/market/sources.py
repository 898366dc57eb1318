"""Choose and load a market-data source by configuration: simulated, files or bigquery."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path

from cbi_platform import clock
from cbi_platform.market.schema import MarketBundle, MarketDataError

SOURCE_KINDS = ("simulated", "files", "bigquery")


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "simulated"
    manifest: str | None = None  # files: path to the YAML manifest
    simulator_seed: int | None = None
    simulator_end: dt.date | None = None
    simulator_live: bool = False  # end = today: each business day adds one row, earlier unchanged
    replay_through: dt.date | None = None  # replay: only data published by this day
    cache_dir: str | None = None  # bigquery: earlier loads, so a refresh reads only new rows
    bigquery_prices_table: str | None = None
    bigquery_news_table: str | None = None
    bigquery_start: dt.date = dt.date(2000, 1, 1)


def load_market(config: SourceConfig, bigquery_client=None) -> MarketBundle:
    bundle = _load(config, bigquery_client)
    if config.replay_through is not None:
        from cbi_platform.market.replay import published_by

        bundle = published_by(bundle, config.replay_through)
    if config.kind == "simulated":
        from cbi_platform.market.planted import plant, planted_faults

        faults = planted_faults()  # the soak's bad days (CBI_PLANTED_DATA); none by default
        if faults and bundle.as_of is not None:
            bundle = dataclasses.replace(
                bundle, prices=plant(bundle.prices, bundle.target, bundle.as_of, faults)
            )
    return bundle


def simulator_end(config: SourceConfig) -> dt.date:
    """The simulator's last day: configured, the clock's today in live mode, else its fixed
    default."""
    from cbi_platform.market.simulator import SimulatorConfig

    if config.simulator_end is not None:
        return config.simulator_end
    return clock.today() if config.simulator_live else SimulatorConfig().end


def _load(config: SourceConfig, bigquery_client=None) -> MarketBundle:
    if config.kind == "simulated":
        from cbi_platform.market.simulator import SimulatorConfig, simulate_market

        overrides = {}
        if config.simulator_seed is not None:
            overrides["seed"] = config.simulator_seed
        overrides["end"] = simulator_end(config)
        return simulate_market(SimulatorConfig(**overrides))
    if config.kind == "files":
        if not config.manifest:
            raise MarketDataError(
                "source 'files' needs a manifest: set CBI_MANIFEST or pass --manifest PATH"
            )
        from cbi_platform.market.files import load_files_source

        return load_files_source(Path(config.manifest))
    if config.kind == "bigquery":
        if bigquery_client is None or not config.bigquery_prices_table:
            raise MarketDataError(
                "source 'bigquery' needs a client and CBI_BQ_PRICES_TABLE (project.dataset.table)"
            )
        from cbi_platform.market.bigquery import load_bigquery_incremental, load_bigquery_source

        if config.cache_dir:
            return load_bigquery_incremental(
                bigquery_client,
                config.bigquery_prices_table,
                config.bigquery_news_table,
                Path(config.cache_dir),
                start=config.bigquery_start,
            )
        return load_bigquery_source(
            bigquery_client,
            config.bigquery_prices_table,
            config.bigquery_news_table,
            start=config.bigquery_start,
        )
    raise MarketDataError(f"unknown market source {config.kind!r}; choose one of {SOURCE_KINDS}")


@functools.lru_cache(maxsize=8)
def _manifest(path: str, mtime_ns: int):
    """The manifest parsed once per file version (its path and modification time)."""
    from cbi_platform.market.manifest import load_manifest

    return load_manifest(Path(path))


def manifest_of(config: SourceConfig):
    """The parsed manifest of a files source (cached: parsed once, not at every call site)."""
    path = Path(config.manifest).resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = -1  # load_manifest raises the clear error
    return _manifest(str(path), mtime)


def target_symbol(config: SourceConfig) -> str:
    """The symbol to forecast: the manifest's `target` for files, ZL otherwise (the bundle a
    source loads carries the same value as `MarketBundle.target`)."""
    if config.kind == "files" and config.manifest:
        return manifest_of(config).target
    return "ZL"


def reference_date(config: SourceConfig) -> dt.date:
    """The date staleness is judged against: the replayed day, a snapshot's as_of, the
    simulator's end, or today."""
    if config.replay_through is not None:
        return config.replay_through
    if config.kind == "files" and config.manifest:
        return manifest_of(config).as_of or clock.today()
    if config.kind == "simulated":
        return simulator_end(config)
    return clock.today()
