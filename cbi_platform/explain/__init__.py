"""Why a forecast is what it is: SHAP contributions of the feature models, in tables and words."""
