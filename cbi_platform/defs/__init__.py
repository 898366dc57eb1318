"""Dagster wiring only: assets, checks, sensors, resources, partitions. Logic lives elsewhere."""
