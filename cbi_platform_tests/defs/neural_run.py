"""A neural group run in its own process, as a second Dagster run would be (the pool test).

Usage: python -m cbi_platform_tests.defs.neural_run HOME PARTITION [TAG [SPECS]]
The Dagster instance is $DAGSTER_HOME; the warehouse is HOME's; SPECS a specs YAML (default: the
tiny neural specs).
"""

import sys

import dagster as dg

from cbi_platform.defs.pipeline import ALL_ASSETS
from cbi_platform_tests.defs.test_neural_assets import neural_resources


def main(home: str, partition: str, tag: str = "", specs: str = "") -> int:
    result = dg.materialize(
        ALL_ASSETS,
        selection=dg.AssetSelection.assets("oof_neural", "shap_neural"),
        partition_key=partition,
        resources=neural_resources(home, specs or None),
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        tags={"cbi/test": tag},
    )
    # The networks train in spawned processes: TensorFlow never loads in the run's own.
    print(f"tensorflow loaded in the run process: {'tensorflow' in sys.modules}")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
