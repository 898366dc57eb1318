"""The buyer's digest by mail (issue 22 §5, §7): what the page says, once a day or once a week.

Inputs are the home's published snapshots, the same the API serves (`read_inputs`): the served
forecast history (zones, statement, drivers, regime, freshness, provisional, random walk), the
recommendation log and the freshness judgement of the condition log. The mail is HTML for mail
clients (tables, inline CSS only, no script, no external resource: the chart is a PNG in the
mail, multipart/related, referenced by `cid:`) with a plain-text alternative, and:

- "what changed since the last digest": P50 and P30-P70 moves per horizon, the regime, the
  recommendation, against the payload of the last digest *sent* (`last_payload`);
- three states the buyer must never misread, each a labelled block of its own colour with one
  plain sentence (`notice_sentences`): a provisional forecast, stale data, a forecast that is
  the random walk;
- an unsubscribe link (a random token per mail, only its hash stored) and List-Unsubscribe.

Cadence (`is_due`): daily, every new as-of date; weekly, on the first as-of date of an ISO
week (a weekly subscriber whose Monday was missed gets it on the next as-of of that week);
`off` after unsubscribing. Mails go through the outbox (`accounts.outbox`): one per user and
as-of date, never twice.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import polars as pl

from cbi_platform.accounts import outbox
from cbi_platform.accounts.links import public_url
from cbi_platform.accounts.store import AccountStore, Tx, utc_now
from cbi_platform.serving.notices import is_random_walk  # the page's rule, one place
from cbi_platform.settings import HORIZONS
from cbi_platform.storage import read_snapshot

CADENCES = ("daily", "weekly", "off")
FORECASTS_DB, OPERATIONS_DB = "forecasts.duckdb", "operations.duckdb"
FORECAST_TABLE = "cbi.forecast_history"  # serving.store.TABLE (serving sits below: read as data)
RECOMMENDATIONS_TABLE = "ops.recommendations"
CONDITIONS_TABLE = "ops.condition_log"
ZONES = ("p10", "p30", "p50", "p70", "p90")
TOP_DRIVERS = 3
CHART_CID = "zl-chart"

# The three states (issue 22 §7): colours of their blocks (border, background).
PROVISIONAL, STALE, RANDOM_WALK_STATE = "provisional", "stale", "random_walk"
NOTICE_STYLE = {
    PROVISIONAL: ("#b45309", "#fff7ed"),
    STALE: ("#b91c1c", "#fef2f2"),
    RANDOM_WALK_STATE: ("#1d4ed8", "#eff6ff"),
}
NOTICE_TITLE = {
    PROVISIONAL: "Provisional forecast",
    STALE: "Stale data",
    RANDOM_WALK_STATE: "No change forecast (the random walk)",
}
SUBJECT_MARK = {PROVISIONAL: "PROVISIONAL", STALE: "STALE DATA", RANDOM_WALK_STATE: "RANDOM WALK"}


class DigestError(ValueError):
    """A request about digests that cannot be honoured; the message names the field."""


@dataclass(frozen=True)
class HorizonForecast:
    horizon: str
    target_date: dt.date | None
    price: float | None
    zones: dict[str, float | None]
    statement: str
    drivers: tuple[str, ...]
    provisional: bool
    failed_gates: tuple[str, ...]
    random_walk: bool


@dataclass(frozen=True)
class DigestInputs:
    """What a digest shows, read from the home's snapshots."""

    as_of: dt.date
    forecasts: tuple[HorizonForecast, ...]
    regime: str | None
    regime_outlook: str | None
    data_last_date: dt.date | None
    data_reference_date: dt.date | None
    business_days_behind: int | None
    max_business_days_behind: int
    stale_condition: bool
    recommendation: dict[str, Any] | None
    closes: tuple[tuple[dt.date, float], ...]
    as_of_dates: tuple[dt.date, ...] = field(default=())  # every served as-of (weekly cadence)

    @property
    def stale(self) -> bool:
        behind = self.business_days_behind
        return self.stale_condition or (
            behind is not None and behind > self.max_business_days_behind
        )


def _json_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError):
        return []
    return decoded if isinstance(decoded, list) else []


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def buyer_words(text: str) -> str:
    """The page's words: a statement's "band" is the buyer's "range" (static/app.js)."""
    return re.sub(
        r"\bbands?\b",
        lambda m: "ranges" if m.group(0).lower().endswith("s") else "range",
        text,
        flags=re.IGNORECASE,
    )


def read_inputs(home: Path, max_business_days_behind: int | None = None) -> DigestInputs | None:
    """The digest's inputs from `home`'s snapshots; None when no forecast was served yet."""
    home = Path(home)
    if max_business_days_behind is None:
        from cbi_platform.operations.config import load_monitoring

        max_business_days_behind = load_monitoring(None).refresh.max_business_days_behind
    history = read_snapshot(home / FORECASTS_DB, FORECAST_TABLE)
    if history is None or history.height == 0:
        return None
    if "role" in history.columns:
        history = history.filter(pl.col("role").is_null() | (pl.col("role") == "served"))
    history = history.filter(pl.col("horizon").is_in(list(HORIZONS)))
    if history.height == 0:
        return None
    as_of = history["as_of"].max()
    latest = {
        r["horizon"]: r
        for r in history.filter(pl.col("as_of") == as_of)
        .sort("created_at")
        .group_by("horizon", maintain_order=True)
        .last()
        .iter_rows(named=True)
    }
    forecasts = []
    for h in HORIZONS:
        row = latest.get(h)
        if row is None:
            continue
        note = row.get("driver_note")
        words = [w for w in _json_list(row.get("drivers")) if isinstance(w, str) and w != note]
        forecasts.append(
            HorizonForecast(
                horizon=h,
                target_date=row.get("target_date"),
                price=_finite(row.get("price")),
                zones={z: _finite(row.get(z)) for z in ZONES},
                statement=buyer_words(str(row.get("statement") or "")),
                drivers=() if is_random_walk(row) else tuple(words[:TOP_DRIVERS]),
                provisional=bool(row.get("provisional")),
                failed_gates=tuple(str(g) for g in _json_list(row.get("failed_gates"))),
                random_walk=is_random_walk(row),
            )
        )
    newest = max(latest.values(), key=lambda r: HORIZONS[r["horizon"]])
    behind = [
        int(r["data_business_days_behind"])
        for r in latest.values()
        if r.get("data_business_days_behind") is not None
    ]
    closes = (
        history.filter(pl.col("price").is_not_null() & (pl.col("price") > 0))
        .select(pl.col("as_of").cast(pl.Date), "price")
        .unique("as_of", keep="last")
        .sort("as_of")
    )
    return DigestInputs(
        as_of=as_of,
        forecasts=tuple(forecasts),
        regime=newest.get("regime"),
        regime_outlook=newest.get("regime_outlook"),
        data_last_date=newest.get("data_last_date"),
        data_reference_date=newest.get("data_reference_date"),
        business_days_behind=max(behind) if behind else None,
        max_business_days_behind=max_business_days_behind,
        stale_condition=_stale_condition(home),
        recommendation=_recommendation(home),
        closes=tuple((d, float(p)) for d, p in closes.iter_rows()),
        as_of_dates=tuple(closes["as_of"].to_list()),
    )


def _stale_condition(home: Path) -> bool:
    """Whether the newest `stale_data` judgement of the condition log is firing."""
    frame = read_snapshot(home / OPERATIONS_DB, CONDITIONS_TABLE)
    if frame is None or frame.height == 0 or "kind" not in frame.columns:
        return False
    stale = frame.filter(pl.col("kind") == "stale_data")
    return bool(stale.sort("as_of", "seq").row(-1, named=True)["firing"]) if stale.height else False


def _recommendation(home: Path) -> dict[str, Any] | None:
    frame = read_snapshot(home / OPERATIONS_DB, RECOMMENDATIONS_TABLE)
    if frame is None or frame.height == 0:
        return None
    row = frame.sort("as_of", "logged_at").row(-1, named=True)
    return {
        "as_of": row["as_of"],
        "policy": row["policy"],
        "action": row["action"],
        "buy_lb": _finite(row["buy_lb"]),
        "text": row["text"],
        "reason": row["reason"],
    }


# -- what the buyer must never misread --------------------------------------------------------
def notice_sentences(inputs: DigestInputs) -> list[tuple[str, str]]:
    """(state, one plain sentence why) for each of the three states that applies. Kept in one
    function so it can point at the page's sentences (`serving.notices`) once they exist."""
    out: list[tuple[str, str]] = []
    provisional = [f for f in inputs.forecasts if f.provisional]
    if provisional:
        names = ", ".join(f.horizon for f in provisional)
        gates = next((f.failed_gates[0] for f in provisional if f.failed_gates), None)
        why = f" ({gates})" if gates else ""
        out.append(
            (
                PROVISIONAL,
                f"The {names} forecast is provisional: no model version passed the promotion "
                f"checks{why}, so read its zones with more caution than usual.",
            )
        )
    if inputs.stale:
        behind = inputs.business_days_behind
        lag = f", {behind} business day(s) behind" if behind is not None else ""
        out.append(
            (
                STALE,
                f"The market data end on {inputs.data_last_date}{lag}: these forecasts do not "
                "know the latest prices.",
            )
        )
    walks = [f for f in inputs.forecasts if f.random_walk]
    if walks:
        names = ", ".join(f.horizon for f in walks)
        out.append(
            (
                RANDOM_WALK_STATE,
                f"The {names} forecast is the last close carried forward (the random walk): no "
                "model beat it on past data, so it predicts no change.",
            )
        )
    return out


# -- what changed ----------------------------------------------------------------------------
def payload(inputs: DigestInputs) -> dict[str, Any]:
    """What the next digest compares with (stored as `last_payload` once this one is sent)."""
    rec = inputs.recommendation or {}
    return {
        "as_of": inputs.as_of.isoformat(),
        "zones": {f.horizon: {z: f.zones[z] for z in ZONES} for f in inputs.forecasts},
        "regime": inputs.regime,
        "recommendation": {"action": rec.get("action"), "buy_lb": rec.get("buy_lb")},
    }


def _action(rec: Mapping[str, Any]) -> str:
    action = str(rec.get("action") or "none").upper()
    buy = rec.get("buy_lb")
    return f"{action} {buy:,.0f} lb" if buy else action


def changes(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """Sentences: the moves since the previous digest's payload (none before the first)."""
    if not previous:
        return []
    out = []
    since = previous.get("as_of")
    for h, zones in current["zones"].items():
        before = (previous.get("zones") or {}).get(h)
        if not before:
            continue
        p50, was = zones.get("p50"), before.get("p50")
        if p50 is not None and was is not None and abs(p50 - was) >= 0.005:
            text = f"{h}: P50 {was:.2f} → {p50:.2f} c/lb ({p50 - was:+.2f})"
            lo, hi, was_lo, was_hi = (
                zones.get("p30"),
                zones.get("p70"),
                before.get("p30"),
                before.get("p70"),
            )
            if None not in (lo, hi, was_lo, was_hi):
                text += f"; P30–P70 {was_lo:.2f}–{was_hi:.2f} → {lo:.2f}–{hi:.2f}"
            out.append(text)
    if previous.get("regime") != current.get("regime"):
        out.append(
            f"Regime: {previous.get('regime') or 'none'} → {current.get('regime') or 'none'}"
        )
    was_rec, rec = previous.get("recommendation") or {}, current.get("recommendation") or {}
    if _action(was_rec) != _action(rec):
        out.append(f"Recommendation: {_action(was_rec)} → {_action(rec)}")
    if not out:
        out.append(f"Nothing moved since the digest of {since}.")
    return out


# -- the chart -------------------------------------------------------------------------------
def chart_png(inputs: DigestInputs, last_closes: int = 120) -> bytes:
    """The closes and each horizon's P10-P90 / P30-P70 zone at its target date (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.0), dpi=100)
    ax = fig.add_subplot()
    closes = inputs.closes[-last_closes:]
    if closes:
        ax.plot([d for d, _ in closes], [p for _, p in closes], color="#111827", lw=1.4)
    for f in inputs.forecasts:
        z = f.zones
        if f.target_date is None or None in (z["p10"], z["p90"], z["p30"], z["p70"], z["p50"]):
            continue
        ax.vlines(f.target_date, z["p10"], z["p90"], color="#93c5fd", lw=6)
        ax.vlines(f.target_date, z["p30"], z["p70"], color="#2563eb", lw=6)
        ax.plot([f.target_date], [z["p50"]], "o", color="#1e3a8a", ms=4)
        ax.annotate(f.horizon, (f.target_date, z["p90"]), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("c/lb")
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# -- the mail --------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def message_id(user_id: int, as_of: dt.date) -> str:
    return f"<cbi-buyer-digest.{user_id}.{as_of.isoformat()}@cbi-platform>"


def render(
    *,
    user_id: int,
    name: str,
    inputs: DigestInputs,
    moved: Sequence[str],
    unsubscribe_url: str,
    subject_prefix: str = "[CBI ZL]",
    chart: bytes | None = None,
) -> EmailMessage:
    """The digest mail (no From/To: the mailer adds them). `chart`: the PNG, when already drawn
    for these inputs (one drawing serves every subscriber of a day)."""
    notices = notice_sentences(inputs)
    e = html.escape
    message = EmailMessage()
    marks = "".join(f" [{SUBJECT_MARK[s]}]" for s, _ in notices)
    message["Subject"] = f"{subject_prefix} Your ZL digest for {inputs.as_of}{marks}".strip()
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = message_id(user_id, inputs.as_of)
    message["X-CBI-Digest-As-Of"] = inputs.as_of.isoformat()
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(_text(name, inputs, moved, notices, unsubscribe_url))

    cell = "padding:6px 4px;border-bottom:1px solid #e5e7eb;font-size:13px;"
    head = cell + "text-align:left;color:#6b7280;font-weight:600;"
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ZL digest {e(str(inputs.as_of))}</title></head>"
        '<body style="margin:0;padding:0;background:#f3f4f6;">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        'style="background:#f3f4f6;"><tr><td align="center" style="padding:16px 8px;">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        'style="max-width:640px;background:#ffffff;border-radius:6px;'
        'font-family:Arial,Helvetica,sans-serif;color:#111827;">',
        '<tr><td style="padding:16px 20px;">'
        '<h1 style="margin:0 0 4px 0;font-size:20px;">'
        f"Soybean oil (CBOT ZL) — {e(str(inputs.as_of))}</h1>"
        f'<p style="margin:0;color:#6b7280;font-size:14px;">Hello {e(name)}, your digest of '
        "the price outlook.</p></td></tr>",
    ]
    for state, sentence in notices:
        border, background = NOTICE_STYLE[state]
        parts.append(
            f'<tr><td style="padding:4px 20px;"><table role="presentation" width="100%" '
            f'cellpadding="0" cellspacing="0" data-notice="{state}" style="border-left:4px solid '
            f'{border};background:{background};"><tr><td style="padding:8px 12px;font-size:14px;">'
            f'<strong style="color:{border};">{e(NOTICE_TITLE[state])}</strong><br>'
            f"{e(sentence)}</td></tr></table></td></tr>"
        )
    parts.append(
        '<tr><td style="padding:8px 20px;">'
        f'<img src="cid:{CHART_CID}" width="600" alt="ZL closes and the target zones of each '
        'horizon" style="display:block;width:100%;max-width:600px;height:auto;border:0;">'
        "</td></tr>"
    )
    rows = "".join(
        f'<tr><td style="{cell}"><strong>{e(f.horizon)}</strong><br>'
        f'<span style="font-size:11px;color:#6b7280;">{e(str(f.target_date or "–"))}</span></td>'
        + "".join(f'<td style="{cell}text-align:right;">{_fmt(f.zones[z])}</td>' for z in ZONES)
        + "</tr>"
        for f in inputs.forecasts
    )
    header = f'<th style="{head}">Horizon, date</th>'
    header += "".join(f'<th style="{head}text-align:right;">{z.upper()}</th>' for z in ZONES)
    parts.append(
        '<tr><td style="padding:8px 20px;"><h2 style="font-size:16px;margin:8px 0;">Target zones '
        '(c/lb)</h2><table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        f'data-section="zones"><tr>{header}</tr>{rows}</table></td></tr>'
    )
    statements = "".join(
        f'<p style="margin:6px 0;font-size:14px;"><strong>{e(f.horizon)}:</strong> '
        f"{e(f.statement)}</p>"
        + (
            '<ul style="margin:2px 0 8px 18px;padding:0;font-size:13px;color:#374151;">'
            + "".join(f"<li>{e(d)}</li>" for d in f.drivers)
            + "</ul>"
            if f.drivers
            else '<p style="margin:2px 0 8px 18px;font-size:13px;color:#374151;">No driver moves '
            "this forecast: it is the random walk.</p>"
            if f.random_walk
            else ""
        )
        for f in inputs.forecasts
    )
    parts.append(
        '<tr><td style="padding:8px 20px;"><h2 style="font-size:16px;margin:8px 0;">What the '
        f'forecasts say, and the largest drivers</h2><div data-section="statements">{statements}'
        "</div></td></tr>"
    )
    rec = inputs.recommendation
    rec_when = f" (logged for {rec['as_of']})" if rec and rec.get("as_of") != inputs.as_of else ""
    rec_html = (
        f'<p style="margin:4px 0;font-size:15px;"><strong>{e(_action(rec))}</strong>'
        f"{e(rec_when)}</p>"
        f'<p style="margin:4px 0;font-size:14px;">{e(str(rec.get("text") or ""))}</p>'
        if rec
        else '<p style="margin:4px 0;font-size:14px;">No recommendation was logged yet.</p>'
    )
    regime = (
        f"Detected regime: <strong>{e(inputs.regime)}</strong>"
        if inputs.regime
        else "No regime was detected"
    )
    if inputs.regime_outlook:
        regime += f" (one month ahead: {e(inputs.regime_outlook)})"
    fresh = (
        f"Data through {e(str(inputs.data_last_date))}, "
        f"{inputs.business_days_behind if inputs.business_days_behind is not None else '?'} "
        f"business day(s) behind {e(str(inputs.data_reference_date))}"
        + (" — stale" if inputs.stale else " — up to date")
    )
    parts.append(
        '<tr><td style="padding:8px 20px;"><h2 style="font-size:16px;margin:8px 0;">Today\'s '
        f'procurement recommendation</h2><div data-section="recommendation">{rec_html}</div>'
        f'<p style="margin:8px 0 2px 0;font-size:14px;" data-section="regime">{regime}.</p>'
        f'<p style="margin:2px 0;font-size:14px;" data-section="freshness">{fresh}.</p></td></tr>'
    )
    moved_html = (
        '<ul style="margin:2px 0 0 18px;padding:0;font-size:14px;">'
        + "".join(f"<li>{e(m)}</li>" for m in moved)
        + "</ul>"
        if moved
        else '<p style="margin:2px 0;font-size:14px;">This is your first digest.</p>'
    )
    parts.append(
        '<tr><td style="padding:8px 20px;"><h2 style="font-size:16px;margin:8px 0;">What changed '
        f'since your last digest</h2><div data-section="changes">{moved_html}</div></td></tr>'
    )
    parts.append(
        '<tr><td style="padding:16px 20px;font-size:12px;color:#6b7280;">You receive this because '
        "you chose a digest on the ZL page. "
        f'<a href="{e(unsubscribe_url, quote=True)}" style="color:#2563eb;">Unsubscribe</a> '
        "(no sign-in needed).</td></tr></table></td></tr></table></body></html>"
    )
    message.add_alternative("".join(parts), subtype="html")
    html_part = message.get_payload()[1]
    html_part.add_related(
        chart if chart is not None else chart_png(inputs),
        maintype="image",
        subtype="png",
        cid=f"<{CHART_CID}>",
        filename="zl-chart.png",
    )
    return message


def _text(
    name: str,
    inputs: DigestInputs,
    moved: Sequence[str],
    notices: Sequence[tuple[str, str]],
    unsubscribe_url: str,
) -> str:
    lines = [f"Soybean oil (CBOT ZL) — {inputs.as_of}", f"Hello {name}, your digest.", ""]
    for state, sentence in notices:
        lines += [f"** {NOTICE_TITLE[state].upper()} ** {sentence}", ""]
    lines.append("Target zones (c/lb): horizon, target date, P10 P30 P50 P70 P90")
    for f in inputs.forecasts:
        zones = " ".join(_fmt(f.zones[z]) for z in ZONES)
        lines.append(f"  {f.horizon:>3}  {f.target_date}  {zones}")
    lines.append("")
    for f in inputs.forecasts:
        lines.append(f"{f.horizon}: {f.statement}")
        lines += [f"    - {d}" for d in f.drivers]
    rec = inputs.recommendation
    lines += [
        "",
        "Recommendation: "
        + (f"{_action(rec)}. {rec.get('text') or ''}" if rec else "none logged yet"),
    ]
    lines.append(f"Regime: {inputs.regime or 'none detected'} ({inputs.regime_outlook or ''})")
    lines.append(
        f"Data through {inputs.data_last_date} ({'stale' if inputs.stale else 'up to date'})"
    )
    lines += ["", "What changed since your last digest:"]
    lines += [f"  - {m}" for m in moved] or ["  This is your first digest."]
    lines += ["", f"Unsubscribe (no sign-in needed): {unsubscribe_url}"]
    return "\n".join(lines) + "\n"


# -- cadence and subscriptions ---------------------------------------------------------------
def is_due(
    cadence: str,
    last_sent_as_of: dt.date | None,
    as_of: dt.date,
    as_of_dates: Sequence[dt.date],
) -> bool:
    """Whether a subscriber's digest is due for the data of `as_of` (module docstring)."""
    if cadence == "off" or (last_sent_as_of is not None and last_sent_as_of >= as_of):
        return False
    if cadence == "daily":
        return True
    week = as_of.isocalendar()[:2]
    if last_sent_as_of is not None and last_sent_as_of.isocalendar()[:2] == week:
        return False
    first_of_week = min((d for d in as_of_dates if d.isocalendar()[:2] == week), default=as_of)
    return as_of == first_of_week or last_sent_as_of is not None


def subscription(store: AccountStore, user_id: int) -> dict[str, Any]:
    """The user's digest choice ('off' when he never chose one) and when the last one went."""
    with store.transaction() as tx:
        row = tx.execute(
            "SELECT cadence, last_sent_as_of FROM digest_subscriptions WHERE user_id = ?",
            (user_id,),
        ).one()
    return row or {"cadence": "off", "last_sent_as_of": None}


def set_cadence(store: AccountStore, user_id: int, cadence: str) -> dict[str, Any]:
    if cadence not in CADENCES:
        raise DigestError(f"cadence: {cadence!r} is not one of {', '.join(CADENCES)}")
    with store.transaction() as tx:
        found = tx.execute(
            "SELECT user_id FROM digest_subscriptions WHERE user_id = ?", (user_id,)
        ).one()
        if found:
            tx.execute(
                "UPDATE digest_subscriptions SET cadence = ? WHERE user_id = ?", (cadence, user_id)
            )
        else:
            _, hashed = outbox.new_token()  # replaced by each mail's own token
            tx.execute(
                "INSERT INTO digest_subscriptions (user_id, cadence, unsubscribe_token_hash) "
                "VALUES (?, ?, ?)",
                (user_id, cadence, hashed),
            )
    return subscription(store, user_id)


def _queue_one(
    tx: Tx, sub: Mapping[str, Any], inputs: DigestInputs, prefix: str, chart: bytes
) -> int | None:
    previous = json.loads(sub["last_payload"]) if sub["last_payload"] else None
    current = payload(inputs)
    token, hashed = outbox.new_token()
    message = render(
        user_id=sub["user_id"],
        name=sub["name"],
        inputs=inputs,
        moved=changes(previous, current),
        unsubscribe_url=public_url(f"/unsubscribe?token={token}"),
        subject_prefix=prefix,
        chart=chart,
    )
    # An older digest still waiting (SMTP down) is superseded: the buyer wants today's.
    tx.execute(
        "UPDATE mail_outbox SET status = ? WHERE user_id = ? AND kind = ? AND status = ?",
        (outbox.SUPERSEDED, sub["user_id"], outbox.DIGEST, outbox.QUEUED),
    )
    queued = outbox.enqueue(
        tx,
        user_id=sub["user_id"],
        kind=outbox.DIGEST,
        dedup_key=f"digest:{sub['user_id']}:{inputs.as_of.isoformat()}",
        recipient=sub["email"],
        as_of=inputs.as_of,
        message=message,
        token_hash_=hashed,
        payload=json.dumps(current),
    )
    if queued is not None:
        tx.execute(
            "UPDATE digest_subscriptions SET unsubscribe_token_hash = ? WHERE user_id = ?",
            (hashed, sub["user_id"]),
        )
    return queued


def queue_due_digests(
    store: AccountStore, inputs: DigestInputs, subject_prefix: str = "[CBI ZL]"
) -> list[int]:
    """Queue the digest of `inputs.as_of` for every subscriber it is due for; returns the user
    ids queued. Each user's decision and queueing is one transaction (re-read inside it)."""
    with store.transaction() as tx:
        users = [
            r["user_id"]
            for r in tx.execute(
                "SELECT s.user_id FROM digest_subscriptions s JOIN users u ON u.id = s.user_id "
                "WHERE s.cadence <> 'off' AND u.disabled_at IS NULL ORDER BY s.user_id"
            ).all()
        ]
    queued: list[int] = []
    chart: bytes | None = None
    for user_id in users:
        with store.transaction() as tx:
            sub = tx.execute(
                "SELECT s.user_id, s.cadence, s.last_sent_as_of, s.last_payload, u.email, u.name "
                "FROM digest_subscriptions s JOIN users u ON u.id = s.user_id "
                "WHERE s.user_id = ?",
                (user_id,),
            ).one()
            last = dt.date.fromisoformat(sub["last_sent_as_of"]) if sub["last_sent_as_of"] else None
            pending = tx.execute(
                "SELECT MAX(as_of) AS a FROM mail_outbox WHERE user_id = ? AND kind = ? "
                "AND status IN ('queued', 'sending', 'in_doubt')",
                (user_id, outbox.DIGEST),
            ).one()["a"]
            if pending and dt.date.fromisoformat(pending) >= inputs.as_of:
                continue  # this day's digest is already on its way
            if not is_due(sub["cadence"], last, inputs.as_of, inputs.as_of_dates):
                continue
            chart = chart if chart is not None else chart_png(inputs)
            if _queue_one(tx, sub, inputs, subject_prefix, chart) is not None:
                queued.append(user_id)
    return queued


def unsubscribe(store: AccountStore, token: str) -> str | None:
    """Act on a mail's unsubscribe token: a digest's turns the digest off, a price alert's
    removes that alert. Idempotent; returns what it did in words, None for an unknown token."""
    hashed = outbox.token_hash(token)
    with store.transaction() as tx:
        row = tx.execute(
            "SELECT user_id, kind, ref_id FROM mail_outbox WHERE unsubscribe_token_hash = ?",
            (hashed,),
        ).one()
        if row is None:
            sub = tx.execute(
                "SELECT user_id FROM digest_subscriptions WHERE unsubscribe_token_hash = ?",
                (hashed,),
            ).one()
            if sub is None:
                return None
            row = {"user_id": sub["user_id"], "kind": outbox.DIGEST, "ref_id": None}
        if row["kind"] == outbox.DIGEST:
            tx.execute(
                "UPDATE digest_subscriptions SET cadence = 'off' WHERE user_id = ?",
                (row["user_id"],),
            )
            return "You will receive no more digests. You can choose one again on the ZL page."
        tx.execute(
            "UPDATE price_alerts SET removed_at = COALESCE(removed_at, ?) WHERE id = ?",
            (utc_now(), row["ref_id"]),
        )
        return "This price alert is removed: it will mail you no more."
