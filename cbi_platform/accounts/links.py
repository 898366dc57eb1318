"""Links in mail: absolute URLs on the public base the buyer reaches the platform at."""

from __future__ import annotations

import os

PUBLIC_BASE_ENV = "CBI_PUBLIC_BASE_URL"
DEFAULT_PUBLIC_BASE = "http://127.0.0.1:8000"


def public_url(path: str) -> str:
    """`path` on `$CBI_PUBLIC_BASE_URL` (default http://127.0.0.1:8000)."""
    base = os.environ.get(PUBLIC_BASE_ENV) or DEFAULT_PUBLIC_BASE
    return base.rstrip("/") + "/" + path.lstrip("/")
