"""Links a person follows from a mail (a digest, an alert, an unsubscribe): absolute URLs on
the platform's public address, `CBI_PUBLIC_BASE_URL` (default http://127.0.0.1:8000, what
`cbi serve` listens on). Read here only, so every mail links to the same place."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping

PUBLIC_BASE_URL_ENV = "CBI_PUBLIC_BASE_URL"
DEFAULT_PUBLIC_BASE_URL = "http://127.0.0.1:8000"


class PublicUrlError(ValueError):
    """CBI_PUBLIC_BASE_URL is not an absolute http(s) URL."""


def public_base_url(env: Mapping[str, str] | None = None) -> str:
    """The configured base URL without a trailing slash (it may carry a path prefix)."""
    env = os.environ if env is None else env
    base = (env.get(PUBLIC_BASE_URL_ENV) or DEFAULT_PUBLIC_BASE_URL).strip().rstrip("/")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise PublicUrlError(
            f"{PUBLIC_BASE_URL_ENV}={base!r}: give an absolute http(s) URL such as "
            "https://zl.example.com (no query or fragment)"
        )
    return base


def public_url(
    path: str = "/",
    query: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """`path` (and `query`, encoded) on the public base URL: public_url("/me/unsubscribe",
    {"token": t}) -> "https://zl.example.com/me/unsubscribe?token=..."."""
    if "://" in path or path.startswith("//"):
        raise PublicUrlError(f"{path!r}: give a path on this platform, not another site")
    url = public_base_url(env) + "/" + path.lstrip("/")
    if query:
        url += "?" + urllib.parse.urlencode(dict(query))
    return url
