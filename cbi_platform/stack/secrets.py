"""The stack's secrets: from the environment or a 0600 secrets file; generated when absent.

The database password and the API key pepper are generated on the first `up` into the secrets
file (`<stack home>/secrets.env`, or $CBI_STACK_SECRETS); the SMTP password is never generated
(it belongs to the mail server). A variable set in the environment wins over the file. Values
reach the services through their environment only: never on a command line, in a generated
file, in a log line or in `status` (`redact` is applied to every line the stack writes).
"""

from __future__ import annotations

import os
import re
import secrets as _random
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

DB_PASSWORD = "CBI_STACK_DB_PASSWORD"
API_KEY_PEPPER = "CBI_API_KEY_PEPPER"
SMTP_PASSWORD = "CBI_SMTP_PASSWORD"
KNOWN = (DB_PASSWORD, API_KEY_PEPPER, SMTP_PASSWORD)
GENERATED = (DB_PASSWORD, API_KEY_PEPPER)
MASK = "********"
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
# Credentials in a URI (scheme://user:password@host) and KEY=value pairs of known names.
_URI_CREDENTIALS = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+(?P<at>@)", re.I)
_ASSIGNMENT = re.compile(
    r"(?P<key>\b(?:"
    + "|".join(KNOWN)
    + r"|PGPASSWORD|password)\b\s*[=:]\s*)(?P<value>[^\s,;'\"}]+)",
    re.I,
)


class SecretsError(RuntimeError):
    """A secrets file the stack will not use (readable by others, malformed)."""


def check_permissions(path: Path) -> None:
    """Refuse a secrets file that anyone but its owner can read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretsError(
            f"secrets file {path} has mode {mode:04o}: it must be readable by its owner only "
            f"(run `chmod 600 {path}`)"
        )


def read_secrets_file(path: Path) -> dict[str, str]:
    """KEY=value lines (# comments and blank lines allowed); the mode is checked first."""
    check_permissions(path)
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            # Never echo the line: it may hold a secret.
            raise SecretsError(f"{path}:{number}: not a KEY=value line")
        values[match.group(1)] = match.group(2)
    return values


def write_secrets_file(path: Path, values: Mapping[str, str]) -> None:
    """Write atomically, created 0600 (never briefly readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# cbi stack secrets: keep this file 0600; never commit it.\n")
        for key, value in values.items():
            handle.write(f"{key}={value}\n")
    os.replace(tmp, path)


class Secrets(Mapping[str, str]):
    """Secret values by variable name; its repr never shows a value."""

    def __init__(self, values: Mapping[str, str]):
        self._values = {k: v for k, v in values.items() if v}

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._values)})"

    def redact(self, text: str) -> str:
        return redact(text, self._values.values())


def load_secrets(
    path: Path, env: Mapping[str, str] | None = None, generate: bool = False
) -> Secrets:
    """The known secrets from `env`, else the file; with `generate`, missing generated ones are
    created and added to the file (which is created 0600 if absent)."""
    env = os.environ if env is None else env
    file_values = read_secrets_file(path) if path.exists() else {}
    missing = [k for k in GENERATED if not env.get(k) and not file_values.get(k)]
    if generate and missing:
        file_values.update({k: _random.token_urlsafe(32) for k in missing})
        write_secrets_file(path, file_values)
    return Secrets({k: env.get(k) or file_values.get(k, "") for k in KNOWN})


def redact(text: str, values: Iterable[str] = ()) -> str:
    """`text` with every secret value, URI password and password-like assignment masked."""
    for value in sorted((v for v in values if v and len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _URI_CREDENTIALS.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)
    return _ASSIGNMENT.sub(lambda m: f"{m['key']}{MASK}", text)
