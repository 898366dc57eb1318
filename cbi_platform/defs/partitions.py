"""Partitions, defined once: the forecast horizons."""

import dagster as dg

from cbi_platform.settings import HORIZON_KEYS as HORIZON_KEYS  # ("1w", "1m", "3m", "6m", "12m")

horizon_partitions = dg.StaticPartitionsDefinition(list(HORIZON_KEYS))
# One run may carry several horizons: the asset bodies loop over context.partition_keys.
horizon_backfill = dg.BackfillPolicy.single_run()
PARTITION_EXPR = {"partition_expr": "horizon"}
