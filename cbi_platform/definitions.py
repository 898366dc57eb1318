"""The one Definitions object the Dagster UI and `cbi` load."""

import dagster as dg

from cbi_platform.defs.pipeline import ALL_ASSETS, ALL_CHECKS, JOBS
from cbi_platform.defs.resources import build_resources

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=JOBS,
    resources=build_resources(),
)
