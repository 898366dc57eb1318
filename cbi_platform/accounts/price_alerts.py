"""The buyer's price alerts (issue 22 §6): a level, or a rule on a served zone; one mail per
crossing.

Two kinds of alert, stored in `price_alerts` (`rule` says which):

- a **level**, fixed when set: `rule` "below" or "above", `level` in c/lb ("ZL settles below
  42.00"); `horizon` holds "close" (the level is compared with the settle, no forecast);
- a **zone rule**: `rule` "below:p30" ("below today's 1m P30"), `horizon` the forecast's,
  `level` null. The level is re-read on every as-of date: the zone served at the *previous*
  as-of date (the zone on the buyer's page while the day traded) against the day's settle. A
  fixed copy would go stale as the zones move; re-reading is what "today's P30" means.

Each new as-of date (`evaluate`), every active alert compares the settle with its level and
keeps the side in `last_side` ("below" / "above"; a settle equal to the level counts as not
crossed: "above" for a below-alert, "below" for an above-alert). An alert mails when its side
becomes the one it watches: on the first evaluation where the condition already holds, or when
it crosses into it. Staying there mails nothing; crossing back and in again mails again. The
decision, `last_side` and the queued mail are one transaction, and the mail's dedup key is
(alert, as-of), recorded in `price_alert_mails` when sent (see `accounts.outbox`).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from cbi_platform.accounts import outbox
from cbi_platform.accounts.links import public_url
from cbi_platform.accounts.store import AccountStore, utc_now
from cbi_platform.settings import HORIZONS

MAX_ALERTS_PER_USER = 20
MAX_NOTE = 200
SIDES = ("below", "above")
ZONE_LEVELS = ("p10", "p30", "p50", "p70", "p90")
CLOSE = "close"  # the horizon column of a fixed level


class PriceAlertError(ValueError):
    """An alert that cannot be set; `field` names the input at fault (the API answers 422)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


@dataclass(frozen=True)
class PriceAlert:
    id: int
    user_id: int
    side: str
    level: float | None  # a fixed level; None for a zone rule
    horizon: str | None  # a zone rule's horizon
    zone: str | None  # a zone rule's level (p10 ... p90)
    note: str | None
    created_at: str
    last_side: str | None

    def describe(self) -> str:
        if self.zone is None:
            return f"ZL settles {self.side} {self.level:.2f} c/lb"
        return f"ZL settles {self.side} the day's {self.horizon} {self.zone.upper()}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": "level" if self.zone is None else "zone",
            "side": self.side,
            "level": self.level,
            "horizon": self.horizon,
            "zone": self.zone,
            "note": self.note,
            "description": self.describe(),
            "created_at": self.created_at,
            "last_side": self.last_side,
        }


def _alert(row: Mapping[str, Any]) -> PriceAlert:
    side, _, zone = str(row["rule"]).partition(":")
    return PriceAlert(
        id=int(row["id"]),
        user_id=int(row["user_id"]),
        side=side,
        level=None if zone else float(row["level"]),
        horizon=row["horizon"] if zone else None,
        zone=zone or None,
        note=row.get("note"),
        created_at=row["created_at"],
        last_side=row["last_side"],
    )


def validate(
    side: str,
    level: float | None = None,
    horizon: str | None = None,
    zone: str | None = None,
    note: str | None = None,
) -> tuple[str, str, float | None, str | None]:
    """(rule, horizon column, level, note) for a new alert; PriceAlertError names the field."""
    if side not in SIDES:
        raise PriceAlertError("side", f"{side!r} is not one of {', '.join(SIDES)}")
    if note is not None:
        note = note.strip() or None
        if note is not None and len(note) > MAX_NOTE:
            raise PriceAlertError("note", f"at most {MAX_NOTE} characters ({len(note)} given)")
    if zone is None:
        if horizon is not None:
            raise PriceAlertError("horizon", "a fixed level takes no horizon (give a zone too)")
        if level is None:
            raise PriceAlertError("level", "a level in c/lb is required (or a horizon and zone)")
        if not math.isfinite(level) or level <= 0:
            raise PriceAlertError("level", f"{level!r} is not a positive price in c/lb")
        return side, CLOSE, float(level), note
    if level is not None:
        raise PriceAlertError("level", "a zone rule takes no fixed level")
    if horizon not in HORIZONS:
        raise PriceAlertError("horizon", f"{horizon!r} is not one of {', '.join(HORIZONS)}")
    if zone not in ZONE_LEVELS:
        raise PriceAlertError("zone", f"{zone!r} is not one of {', '.join(ZONE_LEVELS)}")
    return f"{side}:{zone}", horizon, None, note


def add_alert(
    store: AccountStore,
    user_id: int,
    side: str,
    level: float | None = None,
    horizon: str | None = None,
    zone: str | None = None,
    note: str | None = None,
) -> PriceAlert:
    rule, horizon_column, level, note = validate(side, level, horizon, zone, note)
    with store.transaction() as tx:
        count = tx.execute(
            "SELECT COUNT(*) AS n FROM price_alerts WHERE user_id = ? AND removed_at IS NULL",
            (user_id,),
        ).one()["n"]
        if int(count) >= MAX_ALERTS_PER_USER:
            raise PriceAlertError(
                "alerts",
                f"you have {count} alerts, the most allowed is {MAX_ALERTS_PER_USER}: remove one "
                "first",
                status=409,
            )
        alert_id = tx.insert(
            "INSERT INTO price_alerts (user_id, horizon, rule, level, created_at, note) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (user_id, horizon_column, rule, level, utc_now(), note),
        )
        row = tx.execute("SELECT * FROM price_alerts WHERE id = ?", (alert_id,)).one()
    return _alert(row)


def list_alerts(store: AccountStore, user_id: int) -> list[PriceAlert]:
    """The user's active alerts (only his: every query filters by user_id)."""
    with store.transaction() as tx:
        rows = tx.execute(
            "SELECT * FROM price_alerts WHERE user_id = ? AND removed_at IS NULL ORDER BY id",
            (user_id,),
        ).all()
    return [_alert(r) for r in rows]


def remove_alert(store: AccountStore, user_id: int, alert_id: int) -> bool:
    """Remove the user's alert; False when he has no such active alert (another user's id
    reads the same as a missing one, so ids do not leak)."""
    with store.transaction() as tx:
        return (
            tx.execute(
                "UPDATE price_alerts SET removed_at = ? "
                "WHERE id = ? AND user_id = ? AND removed_at IS NULL",
                (utc_now(), alert_id, user_id),
            ).rowcount
            == 1
        )


# -- evaluation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Day:
    """What the alerts are judged on: the settle of `as_of`, and the zones the buyer saw while
    that day traded (served at the previous as-of date; None on the first)."""

    as_of: dt.date
    close: float
    zones: Mapping[str, Mapping[str, float | None]] | None  # horizon -> p10..p90


def day_from_history(history: Any, as_of: dt.date | None = None) -> Day | None:
    """The `Day` of `as_of` (default: the newest) from a served forecast history frame."""
    import polars as pl

    served = history
    if "role" in served.columns:
        served = served.filter(pl.col("role").is_null() | (pl.col("role") == "served"))
    if served.height == 0:
        return None
    days = sorted(set(served["as_of"].to_list()))
    as_of = as_of or days[-1]
    if as_of not in days:
        return None
    today = served.filter(pl.col("as_of") == as_of).sort("created_at")
    close = today["price"].drop_nulls()
    if close.len() == 0:
        return None
    before = [d for d in days if d < as_of]
    zones = None
    if before:
        rows = served.filter(pl.col("as_of") == before[-1]).sort("created_at")
        zones = {
            r["horizon"]: {z: r.get(z) for z in ZONE_LEVELS}
            for r in rows.group_by("horizon", maintain_order=True).last().iter_rows(named=True)
        }
    return Day(as_of=as_of, close=float(close[-1]), zones=zones)


def level_on(alert: PriceAlert, day: Day) -> float | None:
    """The alert's level on `day` (None: its zone is not known that day)."""
    if alert.zone is None:
        return alert.level
    value = ((day.zones or {}).get(alert.horizon or "") or {}).get(alert.zone)
    return None if value is None or not math.isfinite(value) else float(value)


def side_of(alert: PriceAlert, close: float, level: float) -> str:
    if alert.side == "below":
        return "below" if close < level else "above"
    return "above" if close > level else "below"


def message_id(alert_id: int, as_of: dt.date) -> str:
    return f"<cbi-price-alert.{alert_id}.{as_of.isoformat()}@cbi-platform>"


def render(
    alert: PriceAlert,
    name: str,
    day: Day,
    level: float,
    unsubscribe_url: str,
    subject_prefix: str = "[CBI ZL]",
) -> EmailMessage:
    e = html.escape
    what = f"ZL settled at {day.close:.2f} c/lb on {day.as_of}, {alert.side} {level:.2f}"
    rule = alert.describe() + (f" ({level:.2f} that day)" if alert.zone else "")
    message = EmailMessage()
    message["Subject"] = f"{subject_prefix} Price alert: {what}".strip()
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = message_id(alert.id, day.as_of)
    message["X-CBI-Price-Alert"] = str(alert.id)
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    note = f"Your note: {alert.note}\n" if alert.note else ""
    message.set_content(
        f"Hello {name},\n\n{what}.\nYour alert: {rule}.\n{note}\nIt mails once per crossing: "
        "staying on this side mails nothing more.\n\n"
        f"Remove this alert (no sign-in needed): {unsubscribe_url}\n"
    )
    note_html = (
        f'<p style="margin:4px 0;font-size:14px;">Your note: {e(alert.note)}</p>'
        if alert.note
        else ""
    )
    message.add_alternative(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Price alert</title>'
        '</head><body style="margin:0;padding:16px;font-family:Arial,Helvetica,sans-serif;'
        'color:#111827;"><table role="presentation" cellpadding="0" cellspacing="0" '
        'style="max-width:600px;"><tr><td>'
        f'<p style="margin:0 0 8px 0;font-size:14px;">Hello {e(name)},</p>'
        f'<p style="margin:4px 0;font-size:16px;"><strong>{e(what)}</strong></p>'
        f'<p style="margin:4px 0;font-size:14px;">Your alert: {e(rule)}.</p>{note_html}'
        '<p style="margin:8px 0;font-size:13px;color:#6b7280;">It mails once per crossing: '
        "staying on this side mails nothing more.</p>"
        f'<p style="font-size:12px;"><a href="{e(unsubscribe_url, quote=True)}" '
        'style="color:#2563eb;">Remove this alert</a> (no sign-in needed)</p>'
        "</td></tr></table></body></html>",
        subtype="html",
    )
    return message


@dataclass
class Evaluation:
    queued: list[int]  # alert ids mailed (queued) for this day
    unchanged: int
    unknown_level: int  # zone rules whose zone is not known that day

    def summary(self, day: Day) -> str:
        return (
            f"price alerts on {day.as_of} (settle {day.close:.2f}): {len(self.queued)} crossed "
            f"{self.queued or ''}, {self.unchanged} unchanged, {self.unknown_level} without a "
            "zone that day"
        )


def evaluate(store: AccountStore, day: Day, subject_prefix: str = "[CBI ZL]") -> Evaluation:
    """Judge every active alert on `day`; queue one mail per crossing (module docstring)."""
    with store.transaction() as tx:
        ids = [
            r["id"]
            for r in tx.execute(
                "SELECT a.id FROM price_alerts a JOIN users u ON u.id = a.user_id "
                "WHERE a.removed_at IS NULL AND u.disabled_at IS NULL ORDER BY a.id"
            ).all()
        ]
    result = Evaluation([], 0, 0)
    for alert_id in ids:
        with store.transaction() as tx:
            row = tx.execute(
                "SELECT a.*, u.email, u.name FROM price_alerts a JOIN users u ON u.id = a.user_id "
                "WHERE a.id = ? AND a.removed_at IS NULL",
                (alert_id,),
            ).one()
            if row is None:
                continue
            alert = _alert(row)
            level = level_on(alert, day)
            if level is None:
                result.unknown_level += 1
                continue
            side = side_of(alert, day.close, level)
            if side == alert.last_side:
                result.unchanged += 1
                continue
            tx.execute("UPDATE price_alerts SET last_side = ? WHERE id = ?", (side, alert.id))
            if side != alert.side:
                result.unchanged += 1
                continue
            token, hashed = outbox.new_token()
            queued = outbox.enqueue(
                tx,
                user_id=alert.user_id,
                kind=outbox.PRICE_ALERT,
                dedup_key=f"price_alert:{alert.id}:{day.as_of.isoformat()}",
                recipient=row["email"],
                as_of=day.as_of,
                message=render(
                    alert,
                    row["name"],
                    day,
                    level,
                    public_url(f"/unsubscribe?token={token}"),
                    subject_prefix,
                ),
                token_hash_=hashed,
                ref_id=alert.id,
                payload=f"settle {day.close:.2f} {alert.side} {level:.2f}",
            )
            if queued is not None:
                result.queued.append(alert.id)
    return result
