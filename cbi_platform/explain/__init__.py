"""Why a forecast is what it is: SHAP contributions of the feature models, in tables and words."""

from cbi_platform.explain.shap_tables import (
    FEATURE_DESCRIPTIONS,
    SHAP_TABLE_SCHEMA,
    ShapAdditivityError,
    coverage_curve,
    ensemble_shap,
    explain_model,
    explain_row,
    shap_contributions,
    shap_coverage,
    shap_table,
    top_drivers,
)

__all__ = [
    "FEATURE_DESCRIPTIONS",
    "SHAP_TABLE_SCHEMA",
    "ShapAdditivityError",
    "coverage_curve",
    "ensemble_shap",
    "explain_model",
    "explain_row",
    "shap_contributions",
    "shap_coverage",
    "shap_table",
    "top_drivers",
]
