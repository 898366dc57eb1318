"""People who sign in: users with argon2 password hashes, sign-in with lockout and rate limit.

A failed sign-in answers the same for an unknown email and a wrong password, and costs about
the same time (an unknown email verifies against a dummy hash), so the answer does not tell
whether an account exists. Lock-outs are counted per email from `signin_attempts`, whether or
not the account exists, for the same reason; a known account also records its count and lock
in `users.failed_signins` / `locked_until` (what `cbi users list` shows, and what a reset
clears).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cbi_platform.accounts.store import AccountStore, Tx

# Sign-in limits, in one place. Reasoning:
# - 5 failures in 15 minutes lock the account for 15 minutes: a person who mistypes does not
#   reach 5 quickly, and an online guesser gets at most 480 guesses a day per account, far too
#   few for a password of 10+ characters; the lock ends by itself, so an attacker cannot lock a
#   buyer out for longer than he keeps trying (an engineer's `cbi users reset` clears it too).
# - 20 tries per client address in 5 minutes: above what one office behind one address does,
#   and it stops one machine from spraying many accounts (each account alone stays under 5).
# - Attempts older than a day are pruned: the windows above need 15 minutes of them.
MAX_FAILED_SIGNINS = 5
FAILURE_WINDOW = dt.timedelta(minutes=15)
LOCKOUT = dt.timedelta(minutes=15)
MAX_TRIES_PER_CLIENT = 20
CLIENT_WINDOW = dt.timedelta(minutes=5)
ATTEMPTS_KEPT = dt.timedelta(days=1)
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # longer is refused before hashing (argon2 cost is per byte)
ROLES = ("buyer", "engineer")
EMAIL_PATTERN = re.compile(
    r"^[^@\s<>\"'`]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
MAX_NAME_LENGTH = 100
SIGNIN_FAILED = "wrong email or password"

HASHER = PasswordHasher()
_DUMMY_HASHES: dict[tuple[int, int, int], str] = {}

Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """The one text form of a time in the store (comparable as text)."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


class AccountError(ValueError):
    """A request about an account that cannot be honoured; `field` names the input at fault."""

    status = 422

    def __init__(self, message: str, field: str | None = None, code: str = "invalid"):
        super().__init__(message)
        self.field, self.code = field, code


class SignInRefused(AccountError):
    """A sign-in refused: wrong credentials (401), a locked account (423), too many tries (429)."""

    def __init__(self, message: str, status: int, code: str, retry_after_s: int | None = None):
        super().__init__(message, None, code)
        self.status, self.retry_after_s = status, retry_after_s


@dataclass(frozen=True)
class User:
    id: int
    email: str
    name: str
    role: str


@dataclass(frozen=True)
class UserRecord:
    """What `cbi users list` shows: never the hash."""

    user: User
    created_at: str
    password_changed_at: str
    failed_signins: int
    locked_until: str | None


def normalise_email(email: str) -> str:
    text = (email or "").strip().lower()
    if len(text) > 254 or not EMAIL_PATTERN.match(text):
        raise AccountError(f"email {email!r} is not a valid address", "email")
    return text


def check_name(name: str) -> str:
    text = (name or "").strip()
    if not text or len(text) > MAX_NAME_LENGTH or any(ord(c) < 32 for c in text):
        raise AccountError(f"name must be 1-{MAX_NAME_LENGTH} printable characters", "name")
    return text


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role {role!r}: use one of {', '.join(ROLES)}", "role")
    return role


def check_password(password: str, email: str, field: str = "password") -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"the password must have at least {MIN_PASSWORD_LENGTH} characters", field
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(
            f"the password must have at most {MAX_PASSWORD_LENGTH} characters", field
        )
    if password.strip().lower() == email.strip().lower():
        raise AccountError("the password must not be the email address", field)
    return password


def _dummy_hash() -> str:
    """A hash of nobody's password with the hasher's parameters (the same verify cost)."""
    params = (HASHER.time_cost, HASHER.memory_cost, HASHER.parallelism)
    if params not in _DUMMY_HASHES:
        _DUMMY_HASHES[params] = HASHER.hash("nobody's password: equal work for unknown emails")
    return _DUMMY_HASHES[params]


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _user(row: dict) -> User:
    return User(id=int(row["id"]), email=row["email"], name=row["name"], role=row["role"])


class Users:
    """Users of one accounts store; `clock` is injectable so tests need not sleep."""

    def __init__(self, store: AccountStore, clock: Clock = system_clock):
        self.store, self.clock = store, clock

    # -- management (the CLI) --------------------------------------------------------------
    def add(self, email: str, name: str, role: str, password: str) -> User:
        email = normalise_email(email)
        name, role = check_name(name), check_role(role)
        check_password(password, email)
        password_hash = HASHER.hash(password)
        now = iso(self.clock())
        with self.store.transaction() as tx:
            if tx.execute("SELECT id FROM users WHERE email = ?", (email,)).one():
                raise AccountError(f"a user with email {email} exists", "email", "exists")
            new_id = tx.insert(
                "INSERT INTO users (email, name, role, password_hash, created_at,"
                " password_changed_at) VALUES (?, ?, ?, ?, ?, ?)",
                (email, name, role, password_hash, now, now),
            )
        return User(new_id, email, name, role)

    def get(self, email: str) -> User:
        email = normalise_email(email)
        with self.store.transaction() as tx:
            row = tx.execute("SELECT * FROM users WHERE email = ?", (email,)).one()
        if row is None:
            raise AccountError(f"no user with email {email}", "email", "unknown_user")
        return _user(row)

    def by_id(self, user_id: int) -> User | None:
        with self.store.transaction() as tx:
            row = tx.execute("SELECT * FROM users WHERE id = ?", (user_id,)).one()
        return None if row is None else _user(row)

    def remove(self, email: str) -> User:
        """Delete the user and everything he owns (sessions, programme, alerts: cascades)."""
        user = self.get(email)
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE user_id = ?", (user.id,))
            tx.execute("DELETE FROM users WHERE id = ?", (user.id,))
        return user

    def list(self) -> list[UserRecord]:
        with self.store.transaction() as tx:
            rows = tx.execute("SELECT * FROM users ORDER BY email").all()
        return [
            UserRecord(
                user=_user(r),
                created_at=r["created_at"],
                password_changed_at=r["password_changed_at"],
                failed_signins=int(r["failed_signins"]),
                locked_until=r["locked_until"],
            )
            for r in rows
        ]

    def _set_password(self, tx: Tx, user_id: int, password: str) -> None:
        tx.execute(
            "UPDATE users SET password_hash = ?, password_changed_at = ?, failed_signins = 0,"
            " locked_until = NULL WHERE id = ?",
            (HASHER.hash(password), iso(self.clock()), user_id),
        )
        tx.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def reset(self, email: str, password: str) -> User:
        """An engineer's reset: the new password, the lock cleared, every session ended."""
        user = self.get(email)
        check_password(password, user.email)
        with self.store.transaction() as tx:
            self._set_password(tx, user.id, password)
        return user

    def change_password(self, user_id: int, current: str, new: str) -> User:
        """The user's own change: needs the current password; ends every session of his
        (the caller makes him a new one)."""
        with self.store.transaction() as tx:
            row = tx.execute("SELECT * FROM users WHERE id = ?", (user_id,)).one()
        if row is None:
            raise AccountError("no such user", None, "unknown_user")
        if not isinstance(current, str) or not _verify(row["password_hash"], current):
            raise AccountError(
                "the current password is wrong", "current_password", "wrong_password"
            )
        check_password(new, row["email"], "new_password")
        if new == current:
            raise AccountError("the new password is the current one", "new_password")
        with self.store.transaction() as tx:
            self._set_password(tx, user_id, new)
        return _user(row)

    # -- sign-in ---------------------------------------------------------------------------
    def authenticate(self, email: str, password: str, client: str) -> User:
        """The user whose email and password these are, or SignInRefused (401, 423 or 429)."""
        now = self.clock()
        email_key = (email or "").strip().lower()[:254]
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM signin_attempts WHERE at < ?", (iso(now - ATTEMPTS_KEPT),))
            tries = tx.execute(
                "SELECT COUNT(*) AS n, MIN(at) AS first FROM signin_attempts"
                " WHERE client = ? AND at >= ?",
                (client, iso(now - CLIENT_WINDOW)),
            ).one()
            if int(tries["n"]) >= MAX_TRIES_PER_CLIENT:
                first = dt.datetime.fromisoformat(tries["first"])
                wait = max(1, int((first + CLIENT_WINDOW - now).total_seconds()) + 1)
                raise SignInRefused(
                    f"too many sign-in attempts from this address: try again in {wait} s",
                    429,
                    "rate_limited",
                    wait,
                )
            row = tx.execute("SELECT * FROM users WHERE email = ?", (email_key,)).one()
            locked_until = self._locked_until(tx, row, email_key, now)
            if locked_until is not None:
                tx.execute(
                    "INSERT INTO signin_attempts (email, client, at, ok) VALUES (?, ?, ?, 0)",
                    (email_key, client, iso(now)),
                )
                wait = max(1, int((locked_until - now).total_seconds()) + 1)
                raise SignInRefused(_locked_message(wait), 423, "locked", wait)
        # Hash outside the transaction: argon2 takes tens of milliseconds.
        password = password if isinstance(password, str) else ""
        if len(password) > MAX_PASSWORD_LENGTH:
            password = password[:MAX_PASSWORD_LENGTH]
        ok = _verify(row["password_hash"] if row else _dummy_hash(), password) and row is not None
        ok = ok and not row["disabled_at"]  # a disabled account answers like a wrong password
        with self.store.transaction() as tx:
            tx.execute(
                "INSERT INTO signin_attempts (email, client, at, ok) VALUES (?, ?, ?, ?)",
                (email_key, client, iso(now), 1 if ok else 0),
            )
            if ok:
                new_hash = (
                    HASHER.hash(password)
                    if HASHER.check_needs_rehash(row["password_hash"])
                    else None
                )
                tx.execute(
                    "UPDATE users SET failed_signins = 0, locked_until = NULL,"
                    " password_hash = COALESCE(?, password_hash) WHERE id = ?",
                    (new_hash, row["id"]),
                )
                return _user(row)
            failures = self._recent_failures(tx, row, email_key, now)
            locks = failures >= MAX_FAILED_SIGNINS
            if row is not None:
                tx.execute(
                    "UPDATE users SET failed_signins = ?, locked_until = ? WHERE id = ?",
                    (failures, iso(now + LOCKOUT) if locks else None, row["id"]),
                )
        if locks:
            wait = int(LOCKOUT.total_seconds())
            raise SignInRefused(_locked_message(wait), 423, "locked", wait)
        raise SignInRefused(SIGNIN_FAILED, 401, "signin_failed")

    def _recent_failures(self, tx: Tx, row: dict | None, email: str, now: dt.datetime) -> int:
        """Failures for `email` in the window, after its last success and (for a known
        account) after its last password change or reset."""
        since = iso(now - FAILURE_WINDOW)
        if row is not None:
            since = max(since, row["password_changed_at"])
        last_ok = tx.execute(
            "SELECT MAX(at) AS at FROM signin_attempts WHERE email = ? AND ok = 1", (email,)
        ).one()["at"]
        if last_ok:
            since = max(since, last_ok)
        return int(
            tx.execute(
                "SELECT COUNT(*) AS n FROM signin_attempts WHERE email = ? AND ok = 0 AND at >= ?"
                " AND at > ?",
                (email, since, last_ok or ""),
            ).one()["n"]
        )

    def _locked_until(
        self, tx: Tx, row: dict | None, email: str, now: dt.datetime
    ) -> dt.datetime | None:
        if row is not None:
            until = row["locked_until"]
            if until and dt.datetime.fromisoformat(until) > now:
                return dt.datetime.fromisoformat(until)
            return None
        # An unknown email locks the same way (so a lock does not reveal an account).
        fails = tx.execute(
            "SELECT at FROM signin_attempts WHERE email = ? AND ok = 0 AND at >= ? ORDER BY at",
            (email, iso(now - FAILURE_WINDOW)),
        ).all()
        if len(fails) >= MAX_FAILED_SIGNINS:
            until = dt.datetime.fromisoformat(fails[MAX_FAILED_SIGNINS - 1]["at"]) + LOCKOUT
            if until > now:
                return until
        return None


def _locked_message(wait_s: int) -> str:
    minutes = max(1, round(wait_s / 60))
    return (
        f"too many failed sign-ins for this account: it is locked for {minutes} minute(s); "
        "try again later or ask an engineer for a reset"
    )
