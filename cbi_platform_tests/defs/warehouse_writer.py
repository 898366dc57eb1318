"""One Dagster run that writes the warehouse many times (run as a script by
test_concurrent_runs.py, two at once): `shared_prices` (a table the other run writes too, as
a retrain and a refresh both write market data), then a chain of steps, each loading the one
before it and `shared_prices` and storing its own table. Every step logs when it ran."""

from __future__ import annotations

import json
import sys
import time

import dagster as dg
import polars as pl

from cbi_platform.defs.resources import WarehouseIOManager

ROWS = 20_000


def build_assets(lane: str, steps: int, log_path: str) -> list:
    def log(step: str, started: float) -> None:
        with open(log_path, "a") as handle:
            handle.write(json.dumps({"lane": lane, "step": step, "start": started,
                                     "end": time.time()}) + "\n")  # fmt: skip

    @dg.asset(name="shared_prices")
    def shared_prices() -> pl.DataFrame:
        started = time.time()
        frame = pl.DataFrame({"row": range(ROWS), "writer": [lane] * ROWS})
        log("shared_prices", started)
        return frame

    def step(i: int, upstream: str):
        @dg.asset(
            name=f"{lane}_step_{i}", ins={"before": dg.AssetIn(upstream)}, deps=[shared_prices]
        )
        def one_step(before: pl.DataFrame) -> pl.DataFrame:
            started = time.time()
            if "value" in before.columns:
                out = before.with_columns(pl.col("value") + 1)
            else:
                out = pl.DataFrame({"row": range(ROWS), "value": [1] * ROWS})
            time.sleep(0.05)
            log(f"step_{i}", started)
            return out

        return one_step

    assets, upstream = [shared_prices], "shared_prices"
    for i in range(1, steps + 1):
        assets.append(step(i, upstream))
        upstream = f"{lane}_step_{i}"
    return assets


def main(database: str, lane: str, steps: int, log_path: str) -> int:
    result = dg.materialize(
        build_assets(lane, steps, log_path),
        resources={"io_manager": WarehouseIOManager(database=database, schema="cbi")},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    for event in result.all_events:
        if event.is_step_failure:
            print(event.step_failure_data.error.to_string(), file=sys.stderr)
    return 0 if result.success else 1


if __name__ == "__main__":
    database, lane, steps, log_path = sys.argv[1:5]
    sys.exit(main(database, lane, int(steps), log_path))
