"""A second `cbi run` on an unchanged home does nothing (no new model version, no history row);
a changed model spec reruns only its group and what depends on it (issue 19)."""

import copy
import io
from pathlib import Path

import dagster as dg
import pytest

from cbi_platform.defs.pipeline import UNVERSIONED_ASSETS
from cbi_platform.defs.resources import ProtocolResource
from cbi_platform.defs.versions import with_code_versions
from cbi_platform.models.registry import spec_entries
from cbi_platform.runner import run_pipeline
from cbi_platform_tests.conftest import SMALL_PROTOCOL, file_resources

HORIZONS = ["1w", "1m"]
SPECS = Path(__file__).with_name("warm_run_specs.yaml")
SOURCE_KEYS = {"raw_market_prices", "news_articles"}


def _small_resources(manifest, home) -> dict:
    protocol = ProtocolResource(
        **SMALL_PROTOCOL,
        model_kinds=["benchmark", "tree"],
        specs_file=str(SPECS),
    )
    return {**file_resources(manifest, home), "protocol": protocol}


def _run(resources, instance, assets=None, force=False) -> tuple[int, set[str], str]:
    materialized: set[str] = set()

    def collect(label, result):
        for event in result.get_asset_materialization_events():
            materialized.add(event.materialization.asset_key.to_user_string())

    out = io.StringIO()
    code = run_pipeline(
        HORIZONS, out, resources, on_result=collect, force=force, assets=assets, instance=instance
    )
    return code, materialized - SOURCE_KEYS, out.getvalue()


def _model_versions(resources) -> int:
    client = resources["mlflow"].tracker().client
    return len(client.search_model_versions("name LIKE 'cbi-zl-%'"))


def _history_rows(resources) -> int:
    return resources["forecast_store"].store().history().height


@pytest.mark.slow
def test_a_second_run_does_nothing_and_a_spec_change_reruns_only_its_group(
    small_manifest, tmp_path
):
    resources = _small_resources(small_manifest, tmp_path / "home")
    with dg.instance_for_test() as instance:
        code, cold, _ = _run(resources, instance)
        assert code == 0 and {"features", "oof_trees", "registered_version"} <= cold
        versions, rows = _model_versions(resources), _history_rows(resources)
        assert versions >= len(HORIZONS) and rows >= len(HORIZONS)

        code, warm, printed = _run(resources, instance)
        assert code == 0
        assert warm == set(), f"a no-op run materialized {sorted(warm)}"
        assert "nothing to do" in printed
        assert _model_versions(resources) == versions
        assert _history_rows(resources) == rows

        specs = copy.deepcopy(spec_entries())
        tree = next(s for s in specs if s["kind"] == "tree")
        tree["params"] = {**tree.get("params", {}), "n_estimators": 12345}
        changed = with_code_versions(UNVERSIONED_ASSETS, specs)
        code, rerun, printed = _run(resources, instance, assets=changed)
        assert code == 0
        assert "oof_trees[1w] (oof_trees[1w] has a new code version)" in printed
        downstream = {
            k.to_user_string()
            for k in dg.AssetSelection.assets("oof_trees", "shap_trees")
            .downstream()
            .resolve(changed)
        }
        assert {"oof_trees", "shap_trees", "oof_predictions", "registered_version"} <= rerun
        assert rerun <= downstream, sorted(rerun - downstream)
        assert not rerun & {"features", "oof_benchmarks", "market_prices", "regime_datasets"}

        code, again, _ = _run(resources, instance, assets=changed)
        assert code == 0 and again == set()
