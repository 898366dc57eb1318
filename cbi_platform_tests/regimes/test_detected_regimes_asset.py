"""`detected_regimes` materializes behind its blocking truncation gate; a planted look-ahead in
the label rule fails the gate and keeps a downstream consumer from running."""

from functools import partial

import dagster as dg
import polars as pl

from cbi_platform.defs.market.assets import market_prices, raw_market_data
from cbi_platform.defs.pipeline import SHARED_STAGE
from cbi_platform.defs.regimes.assets import detected_regimes
from cbi_platform.defs.regimes.checks import detected_regimes_truncation, regime_checks
from cbi_platform.defs.resources import ProtocolResource
from cbi_platform.regimes.detected import label_regimes
from cbi_platform_tests.conftest import file_resources
from cbi_platform_tests.regimes.test_truncation import threshold_on_future_vol

CHECK = "detected_regimes_truncation"


@dg.asset(group_name="regimes", description="Test consumer: label counts of detected_regimes.")
def regime_label_counts(detected_regimes: pl.DataFrame) -> pl.DataFrame:
    return detected_regimes.group_by("regime").len()


def _materialize(manifest, tmp_path):
    resources = file_resources(manifest, tmp_path / "home")
    resources["protocol"] = ProtocolResource(regime_folds=2)
    return dg.materialize(
        [raw_market_data, market_prices, detected_regimes, regime_label_counts, *regime_checks],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _materialized(result) -> set[str]:
    return {
        e.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }


def test_check_is_registered_as_a_blocking_error_gate():
    (spec,) = detected_regimes_truncation.check_specs
    from cbi_platform.definitions import defs

    assert spec.key in SHARED_STAGE.resolve_checks(defs.resolve_asset_graph())
    assert spec.blocking and spec.asset_key == dg.AssetKey("detected_regimes")


def test_honest_regimes_pass_the_blocking_gate(small_manifest, tmp_path):
    result = _materialize(small_manifest, tmp_path)
    assert result.success
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK]
    assert evaluation.passed and evaluation.blocking
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    evidence = evaluation.metadata["evidence"].value
    assert evidence["rows"] == 900 and evidence["checked_as_written"]
    assert len(evidence["cuts"]) == 4 and evidence["offenders"] == []
    assert evaluation.metadata["rows_written"].value == 900
    assert {"detected_regimes", "regime_label_counts"} <= _materialized(result)


def test_planted_look_ahead_in_the_rule_is_blocked(small_manifest, tmp_path, monkeypatch):
    import cbi_platform.defs.regimes.assets as regime_assets

    leaky = partial(label_regimes, threshold_fn=threshold_on_future_vol)
    monkeypatch.setattr(regime_assets, "label_regimes", leaky)
    result = _materialize(small_manifest, tmp_path)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK]
    assert not evaluation.passed and evaluation.blocking
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    evidence = evaluation.metadata["evidence"].value
    assert "crisis_threshold" in evidence["offending_columns"]
    written = next(o for o in evidence["offenders"] if o["column"] == "crisis_threshold")
    assert written["cut"] == "none (as written)" and written["n_rows"] > 100
    assert len(written["dates"]) == 5
    # Blocking: the table was written, but its consumer did not run on it.
    assert "detected_regimes" in _materialized(result)
    assert "regime_label_counts" not in _materialized(result)
    assert not result.success
