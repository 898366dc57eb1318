"""API keys: random, shown once, stored only as SHA-256 hashes in `<home>/api_keys.json`.

Why a JSON file and not an `ops` table: the API is a reader and never opens a DuckDB file, so an
ops table would have to be published as a snapshot anyway; one small JSON file, written under
the same cross-process lock as the stores (`storage.write_lock`) and replaced atomically
(temporary file + `os.replace`), is read by the API with one `os.stat` per request, so a
revocation takes effect on the next request without a restart. The file holds no key, only
hashes: a leaked copy cannot be replayed. It is created with mode 0600 all the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from cbi_platform.storage import write_lock

KEY_PREFIX = "cbi_"
PREFIX_CHARS = 12  # "cbi_" + 8 random characters: enough to name a key, useless to guess it
MAX_KEY_LENGTH = 200  # longer presented keys are refused before hashing
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
KEYS_FILE = "api_keys.json"


class ApiKeyError(ValueError):
    """A key-management request that cannot be honoured (duplicate name, no match...)."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    prefix: str
    sha256: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def keys_path(home: str | Path) -> Path:
    return Path(home) / KEYS_FILE


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_keys(data: bytes) -> tuple[ApiKey, ...]:
    """The records of a keys file's bytes (an empty file: none)."""
    if not data.strip():
        return ()
    raw = json.loads(data)
    return tuple(ApiKey(**record) for record in raw.get("keys", []))


def read_keys(home: str | Path) -> tuple[ApiKey, ...]:
    try:
        return parse_keys(keys_path(home).read_bytes())
    except FileNotFoundError:
        return ()


def _write_keys(home: str | Path, keys: tuple[ApiKey, ...]) -> None:
    target = keys_path(home)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"version": 1, "keys": [asdict(k) for k in keys]}, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp creates the file with mode 0600
            handle.write(payload + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def create_key(home: str | Path, name: str) -> tuple[str, ApiKey]:
    """A new key for `name`: returns (the key, shown once; its stored record)."""
    if not NAME_PATTERN.match(name):
        raise ApiKeyError(
            f"key name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-' "
            "(starting with a letter or digit)"
        )
    with write_lock(keys_path(home)):
        keys = read_keys(home)
        if any(k.name == name and k.active for k in keys):
            raise ApiKeyError(f"an active key named {name!r} exists: revoke it first")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            name=name, prefix=key[:PREFIX_CHARS], sha256=hash_key(key), created_at=_now()
        )
        _write_keys(home, (*keys, record))
    return key, record


def revoke_key(home: str | Path, name_or_prefix: str) -> ApiKey:
    """Revoke the one active key whose name is, or whose prefix starts with, the argument."""
    needle = name_or_prefix.strip()
    with write_lock(keys_path(home)):
        keys = read_keys(home)
        by_name = [k for k in keys if k.active and k.name == needle]
        by_prefix = (
            [k for k in keys if k.active and len(needle) >= 8 and k.prefix.startswith(needle)]
            if not by_name
            else []
        )
        matches = by_name or by_prefix
        if not matches:
            raise ApiKeyError(f"no active key named {needle!r} or with prefix {needle!r}")
        if len(matches) > 1:
            names = ", ".join(k.name for k in matches)
            raise ApiKeyError(f"{needle!r} matches several keys ({names}): give the name")
        target = matches[0]
        revoked = ApiKey(**{**asdict(target), "revoked_at": _now()})
        _write_keys(home, tuple(revoked if k is target else k for k in keys))
    return revoked


def verify_key(keys: tuple[ApiKey, ...], presented: str) -> ApiKey | None:
    """The record whose hash matches `presented` (active or revoked), or None.

    Every record is compared with `hmac.compare_digest`, without stopping at a match, so the
    time taken says nothing about which record (if any) matched."""
    if not presented or len(presented) > MAX_KEY_LENGTH:
        return None
    digest = hash_key(presented)
    found = None
    for record in keys:
        if hmac.compare_digest(digest, record.sha256):
            found = record
    return found
