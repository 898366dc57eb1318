"""The buyer-facing forecast API (FastAPI) and the buyer's page; see `app.create_app`."""

from cbi_platform.api.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
