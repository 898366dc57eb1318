"""Dagster wiring only: assets, checks, sensors, resources, partitions. Logic lives elsewhere."""

from cbi_platform.lifeline import protect_dagster_step_process

# Every code location with our assets imports this package, and so does each step process of
# the multiprocess executor before its step runs: there, the step dies with its run worker
# (issue 21). A no-op in any other process.
protect_dagster_step_process()
