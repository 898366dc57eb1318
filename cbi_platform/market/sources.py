"""Choose and load a market-data source by configuration: simulated, files or bigquery."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cbi_platform.market.schema import MarketBundle, MarketDataError

SOURCE_KINDS = ("simulated", "files", "bigquery")


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "simulated"
    manifest: str | None = None  # files: path to the YAML manifest
    simulator_seed: int | None = None
    simulator_end: dt.date | None = None
    bigquery_prices_table: str | None = None
    bigquery_news_table: str | None = None
    bigquery_start: dt.date = dt.date(2000, 1, 1)


def load_market(config: SourceConfig, bigquery_client=None) -> MarketBundle:
    if config.kind == "simulated":
        from cbi_platform.market.simulator import SimulatorConfig, simulate_market

        overrides = {}
        if config.simulator_seed is not None:
            overrides["seed"] = config.simulator_seed
        if config.simulator_end is not None:
            overrides["end"] = config.simulator_end
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
        from cbi_platform.market.bigquery import load_bigquery_source

        return load_bigquery_source(
            bigquery_client,
            config.bigquery_prices_table,
            config.bigquery_news_table,
            start=config.bigquery_start,
        )
    raise MarketDataError(f"unknown market source {config.kind!r}; choose one of {SOURCE_KINDS}")


def target_symbol(config: SourceConfig) -> str:
    """The symbol to forecast: the manifest's `target` for files, ZL otherwise."""
    if config.kind == "files" and config.manifest:
        from cbi_platform.market.manifest import load_manifest

        return load_manifest(Path(config.manifest)).target
    return "ZL"


def reference_date(config: SourceConfig) -> dt.date:
    """The date staleness is judged against: a snapshot's as_of, the simulator's end, or today."""
    if config.kind == "files" and config.manifest:
        from cbi_platform.market.manifest import load_manifest

        as_of = load_manifest(Path(config.manifest)).as_of
        return as_of or dt.date.today()
    if config.kind == "simulated":
        from cbi_platform.market.simulator import SimulatorConfig

        return config.simulator_end or SimulatorConfig().end
    return dt.date.today()
