"""Two Dagster runs in two processes write the one warehouse at the same time (what the run
lanes allow: a retrain and a daily refresh side by side): both succeed, their steps
interleave, and every table ends whole."""

import json
import os
import subprocess
import sys
from pathlib import Path

from cbi_platform.storage import read_connection
from cbi_platform_tests.defs.warehouse_writer import ROWS

ROOT = Path(__file__).resolve().parents[2]
STEPS = 12


def test_a_retrain_and_a_refresh_write_the_warehouse_at_once(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    log = tmp_path / "steps.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": ""}
    env.pop("DAGSTER_HOME")
    runs = {
        lane: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cbi_platform_tests.defs.warehouse_writer",
                str(database),
                lane,
                str(STEPS),
                str(log),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lane in ("training", "refresh")
    }
    for lane, proc in runs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{lane}:\n{err[-3000:]}"

    steps = [json.loads(line) for line in log.read_text().splitlines()]
    spans = {
        lane: (
            min(s["start"] for s in steps if s["lane"] == lane),
            max(s["end"] for s in steps if s["lane"] == lane),
        )
        for lane in runs
    }
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, f"the runs did not overlap: {spans}"
    order = [s["lane"] for s in sorted(steps, key=lambda s: s["start"])]
    switches = sum(1 for x, y in zip(order, order[1:], strict=False) if x != y)
    assert switches >= 2, f"the runs' steps did not interleave: {order}"

    with read_connection(database) as con:
        shared = con.sql("select count(*), count(distinct writer) from cbi.shared_prices")
        assert shared.fetchone() == (ROWS, 1)  # one writer's rows, whole, never both
        for lane in runs:
            last = con.sql(f"select count(*), min(value), max(value) from cbi.{lane}_step_{STEPS}")
            assert last.fetchone() == (ROWS, STEPS, STEPS), lane
