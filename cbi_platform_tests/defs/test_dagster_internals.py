"""Pins the Dagster-internals adapter on the pinned Dagster: partition-aware check reads, the
latest evaluation per check, the op copy with tags; and that nothing else imports internals."""

import re
from pathlib import Path

import dagster as dg
import pytest

import cbi_platform
from cbi_platform.defs.dagster_internals import (
    latest_check_evaluations,
    leakage_check_results,
    with_op_tags,
)
from cbi_platform.release.gates import LEAKAGE_CHECKS

PARTITIONS = dg.StaticPartitionsDefinition(["1w", "1m", "3m"])
KEYS = [dg.AssetCheckKey(dg.AssetKey("features"), name) for name in LEAKAGE_CHECKS]


@dg.asset(
    name="features", partitions_def=PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run()
)
def features_stub() -> None:
    return None


def _checks(failing: set[str]) -> list[dg.AssetChecksDefinition]:
    """The blocking gates on `features`; each fails when the run covers a partition in `failing`
    and records the partitions it judged (as the real gates do)."""

    def make(name: str) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset="features", name=name, blocking=True, partitions_def=PARTITIONS)
        def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
            keys = list(context.partition_keys)
            return dg.AssetCheckResult(
                passed=not failing & set(keys),
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"judged {keys}",
                metadata={"horizons": dg.MetadataValue.json(keys)},
            )

        return _check

    return [make(name) for name in LEAKAGE_CHECKS]


def _run(instance, failing: set[str], **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [features_stub, *_checks(failing)], instance=instance, raise_on_error=False, **kwargs
    )


def _all(value) -> dict[str, bool | None]:
    return {name: value for name in LEAKAGE_CHECKS}


def test_check_results_are_read_per_partition():
    instance = dg.DagsterInstance.ephemeral()
    _run(instance, failing=set(), partition_key="1m")
    _run(instance, failing={"1w"}, partition_key="1w")
    assert leakage_check_results(instance, "1m") == _all(True)
    assert leakage_check_results(instance, "1w") == _all(False)
    assert leakage_check_results(instance, "3m") == _all(None)  # never evaluated


def test_a_range_run_counts_for_the_partitions_it_names_until_a_later_run():
    instance = dg.DagsterInstance.ephemeral()
    range_tags = {
        "dagster/asset_partition_range_start": "1m",
        "dagster/asset_partition_range_end": "3m",
    }
    _run(instance, failing={"3m"}, tags=range_tags)  # one partition-less evaluation: failed
    assert leakage_check_results(instance, "1m") == _all(False)
    assert leakage_check_results(instance, "3m") == _all(False)
    assert leakage_check_results(instance, "1w") == _all(None)  # not in the range
    _run(instance, failing=set(), partition_key="1m")  # the later evaluation wins
    assert leakage_check_results(instance, "1m") == _all(True)
    assert leakage_check_results(instance, "3m") == _all(False)


def test_planned_but_never_evaluated_checks_read_as_none():
    @dg.asset(
        name="features",
        partitions_def=PARTITIONS,
        check_specs=[dg.AssetCheckSpec(n, asset="features", blocking=True) for n in LEAKAGE_CHECKS],
    )
    def failing_features():
        raise RuntimeError("the asset fails before its checks run")

    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([failing_features], instance=instance, partition_key="1m", raise_on_error=False)
    stored = instance.event_log_storage.get_latest_asset_check_execution_by_key(KEYS)
    assert set(stored) == set(KEYS)  # the plan is recorded ...
    assert leakage_check_results(instance, "1m") == _all(None)  # ... but judged nothing
    assert latest_check_evaluations(instance, KEYS) == {}


def test_latest_evaluation_per_check_carries_outcome_run_and_evidence():
    instance = dg.DagsterInstance.ephemeral()
    passed = _run(instance, failing=set(), partition_key="1m")
    assert latest_check_evaluations(instance, KEYS)[KEYS[0]].failed is False
    failed = _run(instance, failing={"1w"}, partition_key="1w")
    latest = latest_check_evaluations(instance, KEYS)
    assert set(latest) == set(KEYS)
    for evaluation in latest.values():
        assert evaluation.failed is True
        assert evaluation.run_id == failed.run_id != passed.run_id
        assert evaluation.description == "judged ['1w']"
        assert evaluation.timestamp is not None and evaluation.timestamp > 0
    other = dg.AssetCheckKey(dg.AssetKey("features"), "never_defined")
    assert other not in latest_check_evaluations(instance, [*KEYS, other])


def test_op_copy_adds_tags_and_keeps_the_rest():
    @dg.asset(pool="gpu", op_tags={"team": "cbi"}, partitions_def=PARTITIONS)
    def trains(context: dg.AssetExecutionContext) -> int:
        return 1

    copy = with_op_tags(trains, {"dagster-celery/queue": "gpu"})
    assert copy.op.tags == {"team": "cbi", "dagster-celery/queue": "gpu"}
    assert "dagster-celery/queue" not in trains.op.tags  # the original is untouched
    assert copy.op.pool == "gpu"
    assert copy.keys == trains.keys
    assert copy.partitions_def == trains.partitions_def
    result = dg.materialize([copy], partition_key="1w", instance=dg.DagsterInstance.ephemeral())
    assert result.output_for_node("trains") == 1


@pytest.mark.parametrize(
    "pattern",
    [
        r"^\s*(from|import) dagster\._",
        r"dagster_internal_init",
        r"^\s*from dagster_\w+\.[\w.]+ import .*\b_\w+",  # a library's private name
        r"^\s*from dagster_celery\.core_execution_loop import",
    ],
)
def test_no_module_but_the_adapter_uses_dagster_internals(pattern):
    package = Path(cbi_platform.__file__).parent
    adapter = package / "defs" / "dagster_internals.py"
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path != adapter and re.search(pattern, path.read_text(), flags=re.MULTILINE)
    ]
    assert offenders == []
