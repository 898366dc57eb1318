"""Code versions on every asset, so Dagster can tell which tables are stale (`cbi run` skips the
rest; the UI shows the same as "Unsynced").

An asset's code version is `versioning.source_version` of the module that defines it (its
whole import closure and the YAML beside it), plus the model specs it trains: a member group
hashes only its own group's entries of specs.yaml, so editing one model makes only that group
and what reads it stale; everything from `member_models` down reads every spec. Assets whose
closure reaches the network code add `fit_code_version()` (its constants and library
versions, the fit cache's key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from cbi_platform.models.fit_cache import FIT_MODULES, fit_code_version
from cbi_platform.models.registry import GROUPS, spec_entries
from cbi_platform.versioning import module_closure, source_version

VOLATILITY_ASSETS = ("volatility_forecasts", "neural_volatility")
ALL_SPECS_FROM = dg.AssetKey("oof_predictions")  # member_models and everything downstream


def _module(assets_def: dg.AssetsDefinition) -> str:
    compute = assets_def.op.compute_fn
    return getattr(compute, "decorated_fn", compute).__module__


def _specs_read(
    assets_def: dg.AssetsDefinition, specs: list[dict[str, Any]], reads_all: set[dg.AssetKey]
) -> list[dict[str, Any]] | None:
    name = assets_def.op.name
    if name.startswith("members_") and name.removeprefix("members_") in GROUPS:
        kinds = GROUPS[name.removeprefix("members_")]
        return [s for s in specs if s["kind"] in kinds]
    if name in VOLATILITY_ASSETS:
        return [s for s in specs if s["kind"] == "volatility"]
    if reads_all & set(assets_def.keys):
        return specs
    return None


def asset_code_version(
    assets_def: dg.AssetsDefinition,
    specs: list[dict[str, Any]],
    reads_all: set[dg.AssetKey],
    fit_code: str | None = None,
) -> str:
    module = _module(assets_def)
    extra: dict[str, Any] = {"asset": assets_def.op.name}
    read = _specs_read(assets_def, specs, reads_all)
    if read is not None:
        extra["specs"] = read
    if set(FIT_MODULES) & set(module_closure([module])):
        extra["fit_code_version"] = fit_code or fit_code_version()
    return source_version([module], extra)


def with_code_versions(
    assets: Sequence[dg.AssetsDefinition], specs: list[dict[str, Any]] | None = None
) -> list[dg.AssetsDefinition]:
    """Copies of `assets` whose every output carries its code version (specs: the zoo's
    entries; default the specs file)."""
    specs = spec_entries() if specs is None else specs
    reads_all = set(dg.AssetSelection.assets(ALL_SPECS_FROM).downstream().resolve(assets))
    fit_code = fit_code_version()
    out = []
    for assets_def in assets:
        version = asset_code_version(assets_def, specs, reads_all, fit_code)
        out.append(
            assets_def.map_asset_specs(lambda s, v=version: s.replace_attributes(code_version=v))
        )
    return out
