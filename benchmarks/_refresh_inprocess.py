"""One process, several simulated days of the daily refresh, each run in-process (what
benchmarks/refresh.py times for each side of its comparison). Imports `cbi_platform` from
PYTHONPATH, so the same driver times a baseline checkout and the current one. Prints one JSON
line per day: {"day", "wall_seconds", "success", "steps": {step: seconds}}.

Usage: PYTHONPATH=<checkout> python benchmarks/_refresh_inprocess.py --home DIR DAY [DAY ...]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("days", nargs="+")
    args = parser.parse_args()
    started = time.perf_counter()
    import dagster as dg

    from cbi_platform.defs.pipeline import REFRESH
    from cbi_platform.defs.resources import build_resources
    from cbi_platform.runner import materialize

    print(json.dumps({"import_seconds": round(time.perf_counter() - started, 2)}), flush=True)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    for day in args.days:
        resources = build_resources({"CBI_HOME": args.home, "CBI_SIM_END": day})
        t0 = time.perf_counter()
        result = materialize(
            REFRESH,
            resources=resources,
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
            run_config=quiet,
        )
        wall = time.perf_counter() - t0
        steps = {
            e.step_key: round(e.event_specific_data.duration_ms / 1000, 2)
            for e in result.all_events
            if e.event_type_value == "STEP_SUCCESS"
        }
        line = {"day": day, "wall_seconds": round(wall, 2), "success": result.success}
        print(json.dumps({**line, "steps": steps}), flush=True)


if __name__ == "__main__":
    main()
