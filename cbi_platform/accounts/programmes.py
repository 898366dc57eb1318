"""The buyer's programme: what he buys per window, over how many trading days, what carrying
oil costs him, and how bad a window he tolerates; stored per user, and its backtest queued and
cached per programme.

A buyer who has set nothing reads procurement.yaml's programme (10 railcars × 180,000 lb per
21-trading-day window, carry 0.25 c/lb/month, tolerance 2.0 c/lb), marked as the default.
Every field is checked against a stated range; an error names the field
(`ProgrammeError.field`), which the API answers with 422.

Cache: `programme_hash` is the SHA-256 of the canonical JSON of the fields that change the
backtest (the five below) and of the frozen configuration (procurement.yaml and the
development record), so two buyers with the same programme share one backtest, and a changed
configuration is a new programme. A row of `programme_backtests` holds one programme's
backtest: queued → running → ready (the result JSON) | failed (the message). `params_json`
records the data as-of date (the served forecasts' as_of) the row is for: a ready row of an
older as-of date is outdated, and a new request queues it again; a failed row may be
requested again. What the backtest computes: `procurement.programme_backtest`.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cbi_platform.accounts.store import AccountStore, utc_now
from cbi_platform.procurement.programme import DEFAULT_CONFIG, Programme, load_config
from cbi_platform.procurement.programme_backtest import (
    DEVELOPMENT_RECORD,
    load_development_record,
    recommended_policy,
)

# field: (low, high, unit, integer). Inclusive bounds.
BOUNDS: dict[str, tuple[float, float, str, bool]] = {
    "railcar_lb": (1_000.0, 1_000_000.0, "lb", False),
    "railcars_per_window": (1, 1_000, "railcars", True),
    "window_days": (5, 126, "trading days", True),
    "carry_cents_per_lb_month": (0.0, 5.0, "c/lb per month", False),
    "max_worst_shortfall_cents": (0.0, 20.0, "c/lb", False),
}
TOTAL_LB_BOUNDS = (1_000.0, 1_000_000_000.0)
STATUSES = ("queued", "running", "ready", "failed")


class ProgrammeError(ValueError):
    """A field of a programme is missing or out of range; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class BuyerProgramme:
    """The five things the buyer sets (procurement.yaml's programme keeps the rest)."""

    railcar_lb: float
    railcars_per_window: int
    window_days: int
    carry_cents_per_lb_month: float
    max_worst_shortfall_cents: float

    @property
    def total_lb(self) -> float:
        return self.railcar_lb * self.railcars_per_window

    def programme(self) -> Programme:
        """The backtest's Programme: his fields, the default's price ceiling and pace floor."""
        base = load_config().programme
        return Programme(
            **asdict(self),
            price_ceiling=base.price_ceiling,
            min_daily_fraction=base.min_daily_fraction,
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "total_lb": self.total_lb}


def default_programme() -> BuyerProgramme:
    """procurement.yaml's programme (what the platform's own backtest and advice use)."""
    base = load_config().programme
    return BuyerProgramme(
        railcar_lb=float(base.railcar_lb),
        railcars_per_window=int(base.railcars_per_window),
        window_days=int(base.window_days),
        carry_cents_per_lb_month=float(base.carry_cents_per_lb_month),
        max_worst_shortfall_cents=float(base.max_worst_shortfall_cents),
    )


def _number(raw: Mapping[str, Any], name: str) -> float:
    value = raw.get(name)
    if value is None or value == "":
        raise ProgrammeError(name, f"{name} is required")
    if isinstance(value, bool):
        raise ProgrammeError(name, f"{name} must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProgrammeError(name, f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ProgrammeError(name, f"{name} must be a finite number, not {value!r}")
    return number


def _checked(raw: Mapping[str, Any], name: str) -> float | int:
    low, high, unit, integer = BOUNDS[name]
    number = _number(raw, name)
    if integer and number != int(number):
        raise ProgrammeError(name, f"{name} must be a whole number of {unit}, not {number:g}")
    if not low <= number <= high:
        raise ProgrammeError(
            name, f"{name} must be between {low:g} and {high:g} {unit}, not {number:g}"
        )
    return int(number) if integer else round(number, 6)


def validate_programme(raw: Mapping[str, Any]) -> BuyerProgramme:
    """A BuyerProgramme from the buyer's fields, or ProgrammeError naming the first bad field.

    Volume: `railcars_per_window` and `railcar_lb`, or `total_lb` (lb per window) alone (one
    lot of that size), or `total_lb` with `railcar_lb` (a whole number of railcars)."""
    if not isinstance(raw, Mapping):
        raise ProgrammeError("body", "the programme must be a JSON object")
    known = {*BOUNDS, "total_lb"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ProgrammeError(
            unknown[0], f"unknown field(s) {unknown}; expected some of {sorted(known)}"
        )
    values: dict[str, Any] = {}
    if raw.get("total_lb") not in (None, ""):
        total = _number(raw, "total_lb")
        low, high = TOTAL_LB_BOUNDS
        if not low <= total <= high:
            raise ProgrammeError(
                "total_lb", f"total_lb must be between {low:g} and {high:g} lb, not {total:g}"
            )
        if raw.get("railcars_per_window") not in (None, ""):
            raise ProgrammeError(
                "total_lb", "give total_lb or railcars_per_window (with railcar_lb), not both"
            )
        if raw.get("railcar_lb") in (None, ""):
            values["railcar_lb"], values["railcars_per_window"] = round(total, 6), 1
        else:
            values["railcar_lb"] = _checked(raw, "railcar_lb")
            cars = total / values["railcar_lb"]
            if abs(cars - round(cars)) > 1e-9:
                raise ProgrammeError(
                    "total_lb",
                    f"total_lb {total:g} is not a whole number of railcars of "
                    f"{values['railcar_lb']:g} lb",
                )
            whole = {"railcars_per_window": round(cars)}
            values["railcars_per_window"] = _checked(whole, "railcars_per_window")
    else:
        values["railcar_lb"] = _checked(raw, "railcar_lb")
        values["railcars_per_window"] = _checked(raw, "railcars_per_window")
    for name in ("window_days", "carry_cents_per_lb_month", "max_worst_shortfall_cents"):
        values[name] = _checked(raw, name)
    return BuyerProgramme(
        railcar_lb=float(values["railcar_lb"]),
        railcars_per_window=int(values["railcars_per_window"]),
        window_days=int(values["window_days"]),
        carry_cents_per_lb_month=float(values["carry_cents_per_lb_month"]),
        max_worst_shortfall_cents=float(values["max_worst_shortfall_cents"]),
    )


def config_fingerprint() -> str:
    """The frozen configuration the backtest reads (procurement.yaml, the development record)."""
    digest = hashlib.sha256(DEFAULT_CONFIG.read_bytes())
    digest.update(DEVELOPMENT_RECORD.read_bytes())
    return digest.hexdigest()[:16]


def programme_hash(programme: BuyerProgramme) -> str:
    """Stable: canonical JSON (sorted keys, floats as floats) of the fields and the config."""
    canonical = json.dumps(
        {
            "railcar_lb": float(programme.railcar_lb),
            "railcars_per_window": int(programme.railcars_per_window),
            "window_days": int(programme.window_days),
            "carry_cents_per_lb_month": float(programme.carry_cents_per_lb_month),
            "max_worst_shortfall_cents": float(programme.max_worst_shortfall_cents),
            "config": config_fingerprint(),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---- per user ---------------------------------------------------------------------------


def get_programme(store: AccountStore, user_id: int) -> tuple[BuyerProgramme, bool]:
    """His programme and whether it is the default (he has set none)."""
    with store.transaction() as tx:
        row = tx.execute("SELECT * FROM programmes WHERE user_id = ?", (user_id,)).one()
    if row is None:
        return default_programme(), True
    return validate_programme({f.name: row[f.name] for f in fields(BuyerProgramme)}), False


def set_programme(store: AccountStore, user_id: int, programme: BuyerProgramme) -> None:
    values = asdict(programme)
    with store.transaction() as tx:
        tx.execute("DELETE FROM programmes WHERE user_id = ?", (user_id,))
        tx.execute(
            "INSERT INTO programmes (user_id, railcar_lb, railcars_per_window, window_days, "
            "carry_cents_per_lb_month, max_worst_shortfall_cents, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user_id, *(values[f.name] for f in fields(BuyerProgramme)), utc_now()),
        )


# ---- the backtest queue -----------------------------------------------------------------


def _view(row: Mapping[str, Any] | None, as_of: str | None) -> dict[str, Any]:
    """A backtest row as the API answers it; `outdated` when it is for another as-of date."""
    if row is None:
        return {"status": "none", "outdated": False, "result": None}
    params = json.loads(row["params_json"])
    out = {
        "programme_hash": row["programme_hash"],
        "status": row["status"],
        "as_of": params.get("as_of"),
        "requested_at": row["requested_at"],
        "finished_at": row["finished_at"],
        "run_id": row["run_id"],
        "error": row["error"],
        "result": json.loads(row["result_json"]) if row["result_json"] else None,
    }
    out["outdated"] = bool(as_of is not None and out["as_of"] != as_of)
    return out


def backtest_status(
    store: AccountStore, programme: BuyerProgramme, as_of: str | None
) -> dict[str, Any]:
    """The row of his programme's backtest (status "none" when never requested)."""
    with store.transaction() as tx:
        row = tx.execute(
            "SELECT * FROM programme_backtests WHERE programme_hash = ?",
            (programme_hash(programme),),
        ).one()
    return _view(row, as_of)


def request_backtest(
    store: AccountStore, programme: BuyerProgramme, as_of: str
) -> tuple[dict[str, Any], bool]:
    """Queue his programme's backtest for data as of `as_of` unless the same programme has one:
    ready for that date (cached), queued or running (its status). A failed or outdated one is
    queued again. Returns the row's view and whether this call queued it."""
    key = programme_hash(programme)
    # A queued or running row is left as it is: its run reads the newest data anyway and
    # records the date it ran on. Each queueing gets its own request id (the run key's last
    # part), so a failed backtest asked for again is a new Dagster run, not a skipped key.
    params = json.dumps(
        {"programme": asdict(programme), "as_of": as_of, "request": secrets.token_hex(8)},
        sort_keys=True,
    )
    now = utc_now()
    with store.transaction() as tx:
        row = tx.execute("SELECT * FROM programme_backtests WHERE programme_hash = ?", (key,)).one()
        queued = False
        if row is None:
            tx.execute(
                "INSERT INTO programme_backtests (programme_hash, params_json, status, "
                "requested_at) VALUES (?, ?, 'queued', ?)",
                (key, params, now),
            )
            queued = True
        elif row["status"] == "failed" or (
            row["status"] == "ready" and json.loads(row["params_json"]).get("as_of") != as_of
        ):
            tx.execute(
                "UPDATE programme_backtests SET params_json = ?, status = 'queued', "
                "requested_at = ?, run_id = NULL, finished_at = NULL, result_json = NULL, "
                "error = NULL WHERE programme_hash = ?",
                (params, now, key),
            )
            queued = True
        row = tx.execute("SELECT * FROM programme_backtests WHERE programme_hash = ?", (key,)).one()
    return _view(row, as_of), queued


@dataclass(frozen=True)
class QueuedBacktest:
    programme_hash: str
    programme: BuyerProgramme
    as_of: str
    request: str

    @property
    def run_key(self) -> str:
        """One Dagster run per programme, data as-of date and request (a failed backtest asked
        for again is a new request, so it gets a new run)."""
        return f"programme-{self.programme_hash[:16]}-{self.as_of}-{self.request}"


def store_exists(store: AccountStore) -> bool:
    """Whether there is a store to read (a sensor tick must not create the SQLite file)."""
    return store.dialect == "postgresql" or Path(store.location).exists()


def queued_backtests(store: AccountStore) -> list[QueuedBacktest]:
    with store.transaction() as tx:
        rows = tx.execute(
            "SELECT * FROM programme_backtests WHERE status = 'queued' ORDER BY requested_at"
        ).all()
    out = []
    for row in rows:
        params = json.loads(row["params_json"])
        out.append(
            QueuedBacktest(
                row["programme_hash"],
                BuyerProgramme(**params["programme"]),
                params["as_of"],
                params["request"],
            )
        )
    return out


def running_backtests(store: AccountStore) -> list[dict[str, Any]]:
    with store.transaction() as tx:
        return tx.execute(
            "SELECT programme_hash, run_id FROM programme_backtests WHERE status = 'running'"
        ).all()


def mark_running(store: AccountStore, key: str, run_id: str) -> None:
    with store.transaction() as tx:
        tx.execute(
            "UPDATE programme_backtests SET status = 'running', run_id = ? "
            "WHERE programme_hash = ?",
            (run_id, key),
        )


def mark_ready(store: AccountStore, key: str, result: Mapping[str, Any], as_of: str) -> None:
    """The result, and the as-of date it ran on (it may be newer than the one requested)."""
    with store.transaction() as tx:
        row = tx.execute(
            "SELECT params_json FROM programme_backtests WHERE programme_hash = ?", (key,)
        ).one()
        params = {**json.loads(row["params_json"]), "as_of": as_of}
        tx.execute(
            "UPDATE programme_backtests SET status = 'ready', finished_at = ?, result_json = ?, "
            "params_json = ?, error = NULL WHERE programme_hash = ?",
            (utc_now(), json.dumps(result, default=str), json.dumps(params, sort_keys=True), key),
        )


def mark_failed(store: AccountStore, key: str, error: str) -> None:
    with store.transaction() as tx:
        tx.execute(
            "UPDATE programme_backtests SET status = 'failed', finished_at = ?, error = ? "
            "WHERE programme_hash = ?",
            (utc_now(), error[:2000], key),
        )


def execute_backtest(
    store: AccountStore,
    queued: QueuedBacktest,
    run_id: str,
    compute: Callable[[BuyerProgramme], tuple[dict[str, Any], str]],
) -> dict[str, Any]:
    """Run one queued backtest: running → ready (compute's result and the as-of date it ran
    on) or failed (the error's message, then re-raised so the run fails too)."""
    mark_running(store, queued.programme_hash, run_id)
    try:
        result, as_of = compute(queued.programme)
    except Exception as exc:
        mark_failed(store, queued.programme_hash, f"{type(exc).__name__}: {exc}")
        raise
    result = {**result, "programme_hash": queued.programme_hash, "as_of": as_of}
    mark_ready(store, queued.programme_hash, result, as_of)
    return result


def shown_policy(programme: BuyerProgramme) -> str:
    """The policy shown for his tolerance (the development rule; see programme_backtest)."""
    return recommended_policy(
        programme.max_worst_shortfall_cents, load_config(), load_development_record()
    )


def scaled_recommendation(
    recommendation: Mapping[str, Any] | None, programme: BuyerProgramme
) -> dict[str, Any] | None:
    """Today's recommendation as a share of the platform's window, applied to his volume: the
    lb and railcars to buy today out of his window's lb (None without a recommendation).
    `same_policy` says whether the platform's logged policy is the one shown for his tolerance
    (on the real development record it always is: even buying)."""
    if not recommendation or not recommendation.get("total_lb"):
        return None
    share = float(recommendation.get("buy_lb") or 0.0) / float(recommendation["total_lb"])
    buy_lb = share * programme.total_lb
    mine = shown_policy(programme)
    return {
        "shown_policy": mine,
        "same_policy": mine == recommendation.get("policy"),
        "as_of": str(recommendation.get("as_of")),
        "action": recommendation.get("action"),
        "policy": recommendation.get("policy"),
        "share": share,
        "buy_lb": buy_lb,
        "buy_railcars": buy_lb / programme.railcar_lb,
        "window_lb": programme.total_lb,
    }
