"""Asset code versions: every asset has one; one model's spec changes only its group's and
what reads every spec."""

import copy

import dagster as dg

from cbi_platform.defs.pipeline import ALL_ASSETS, UNVERSIONED_ASSETS
from cbi_platform.defs.versions import with_code_versions
from cbi_platform.models.registry import spec_entries


def _versions(assets) -> dict[dg.AssetKey, str]:
    return {k: v for a in assets for k, v in a.code_versions_by_key.items()}


def test_every_asset_has_a_code_version():
    versions = _versions(ALL_ASSETS)
    assert versions and all(versions.values())


def test_one_tree_spec_changes_only_the_trees_group_and_what_reads_every_spec():
    specs = spec_entries()
    changed = copy.deepcopy(specs)
    tree = next(s for s in changed if s["kind"] == "tree")
    tree["params"] = {**tree.get("params", {}), "n_estimators": 12345}
    before = _versions(with_code_versions(UNVERSIONED_ASSETS, specs))
    after = _versions(with_code_versions(UNVERSIONED_ASSETS, changed))
    moved = {k.to_user_string() for k in before if before[k] != after[k]}
    assert {"oof_trees", "shap_trees", "oof_predictions", "registered_version"} <= moved
    unmoved = {
        "oof_benchmarks",
        "oof_statistical",
        "oof_specialists",
        "oof_neural",
        "features",
        "market_prices",
        "raw_market_prices",
        "volatility_forecasts",
        "detected_regimes",
    }
    assert not moved & unmoved
    downstream = dg.AssetSelection.assets("oof_trees").downstream().resolve(UNVERSIONED_ASSETS)
    assert moved <= {k.to_user_string() for k in downstream} | {"shap_trees"}
