"""The buyer's insight payloads (issue 22 §3, §4, §7): past zones against what happened, the
market-intelligence card and the notices, built from published snapshots only (the forecast
history, `published/market_state.json`, `published/news_sentiment.json` and the walk-forward's
past zones) and checked against `schemas`. `HomeReader` builds each once per source version.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.api import schemas
from cbi_platform.api.views import ForecastView, clean
from cbi_platform.operations.past_zones import (
    METHOD,
    matured_served,
    past_zones,
    walk_forward_rows,
)
from cbi_platform.sentiment.features import SENTIMENT_WINDOW_DAYS, SURPRISE_WINDOW_DAYS
from cbi_platform.serving.notices import notices
from cbi_platform.settings import HORIZON_NAMES, HORIZONS

# A weekly series (COT) is current while its report is at most this many business days older
# than the reference date: a report is dated Tuesday and usable from the Monday after, so two
# missed releases make it stale.
WEEKLY_ALLOWED_BUSINESS_DAYS = 10
MIN_VOLATILITY_HISTORY = 20  # earlier daily values needed before saying "high" or "low"
VOLATILITY_HORIZON = "1m"  # the card's volatility is the 1-month forecast's (others in detail)


def _dump(model: type[schemas.BaseModel], payload: dict[str, Any]) -> bytes:
    return model.model_validate(clean(payload)).model_dump_json().encode()


def _date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _pct(x: float, digits: int = 0) -> str:
    return f"{100 * x:.{digits}f}%"


def _signed(x: float, digits: int = 2) -> str:
    return f"{'+' if x > 0 else '−' if x < 0 else ''}{abs(x):.{digits}f}"


# ---- past zones --------------------------------------------------------------------------


def calibration_json(
    view: ForecastView | None, walk_forward: pl.DataFrame | None, horizon: str
) -> bytes:
    served = matured_served(pl.DataFrame(), pl.DataFrame(), horizon)  # none yet
    if view is not None and not view.empty and view.closes.height:
        served = matured_served(view.served, view.closes.rename({"price": "value"}), horizon)
    payload = past_zones(horizon, served, walk_forward_rows(walk_forward, horizon))
    return _dump(schemas.CalibrationOut, {**payload, "method": METHOD})


# ---- notices -----------------------------------------------------------------------------


def notices_json(view: ForecastView | None, health: Mapping[str, Any]) -> bytes:
    horizons = []
    if view is not None and not view.empty:
        for horizon, row in view.latest.items():
            found = notices(row, health)
            horizons.append({"horizon": horizon, "notices": [n.as_dict() for n in found]})
    as_of = view.as_of if view is not None and not view.empty else None
    return _dump(
        schemas.NoticesOut,
        {"as_of": as_of, "health_status": health.get("status", "no_data"), "horizons": horizons},
    )


# ---- market intelligence -----------------------------------------------------------------


def _business_days_between(start: dt.date, end: dt.date) -> int:
    return int(np.busday_count(start, end)) if start < end else 0


def _freshness(as_of: dt.date | None, reference: dt.date | None, allowed: int) -> tuple[bool, str]:
    if as_of is None:
        return False, "no date"
    if reference is None:
        return False, f"as of {as_of}"
    behind = _business_days_between(as_of, reference)
    if behind > allowed:
        return True, f"as of {as_of} · stale: {behind} business days before {reference}"
    return False, f"as of {as_of} · current"


def _item(
    key: str,
    title: str,
    text: str,
    *,
    status: str = "ok",
    as_of: dt.date | None = None,
    reference: dt.date | None = None,
    allowed: int = 0,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if status == "ok":
        stale, freshness = _freshness(as_of, reference, allowed)
    else:
        stale, freshness = False, status.replace("_", " ")
    return {
        "key": key,
        "title": title,
        "status": status,
        "as_of": as_of,
        "stale": stale,
        "freshness": freshness,
        "text": text,
        "detail": dict(detail or {}),
    }


def _probabilities(outlook: str | None) -> dict[str, float]:
    return {
        name: float(pct) / 100.0
        for name, pct in re.findall(r"([A-Za-z_]+)\s+(\d+(?:\.\d+)?)%", outlook or "")
    }


def regime_item(
    view: ForecastView | None, state: Mapping[str, Any] | None, reference: dt.date | None, allowed
) -> dict[str, Any]:
    spell = (state or {}).get("regime")
    newest = None
    if view is not None and not view.empty:
        newest = max(view.latest.values(), key=lambda r: (r["as_of"], HORIZONS[r["horizon"]]))
    probabilities = _probabilities(newest.get("regime_outlook") if newest else None)
    words = ", ".join(f"{k} {_pct(v)}" for k, v in probabilities.items())
    outlook = (
        f" The classifier's probabilities one month ahead (as of {newest['as_of']}): {words}."
        if probabilities
        else ""
    )
    if spell:
        days = int(spell["trading_days"])
        text = (
            f"{str(spell['regime']).capitalize()} since {spell['since']}: {days} trading "
            f"day{'' if days == 1 else 's'} so far (detected from trailing prices only)." + outlook
        )
        detail = {**spell, "probabilities": probabilities}
        return _item(
            "regime",
            "Detected regime",
            text,
            as_of=_date(spell["as_of"]),
            reference=reference,
            allowed=allowed,
            detail=detail,
        )
    if newest and newest.get("regime"):
        text = (
            f"{str(newest['regime']).capitalize()} (detected from trailing prices only); how long "
            "it has lasted is published by the daily refresh, which has not run yet." + outlook
        )
        return _item(
            "regime",
            "Detected regime",
            text,
            as_of=newest["as_of"],
            reference=reference,
            allowed=allowed,
            detail={"regime": newest["regime"], "probabilities": probabilities},
        )
    return _item(
        "regime",
        "Detected regime",
        "No regime is published yet: the daily refresh publishes it.",
        status="not_published",
    )


def volatility_item(
    view: ForecastView | None, reference: dt.date | None, allowed: int
) -> dict[str, Any]:
    """Today's served volatility forecast (annualised) against its own history: every earlier
    served forecast's volatility at the same horizon (the last issue per day)."""
    per_horizon = []
    if view is not None and not view.empty:
        served = view.served.filter(pl.col("volatility").is_not_null())
        for horizon in HORIZONS:
            rows = (
                served.filter(pl.col("horizon") == horizon)
                .unique("as_of", keep="last", maintain_order=True)
                .sort("as_of")
            )
            if rows.height == 0:
                continue
            values = rows["volatility"].to_numpy().astype(float)
            today, earlier = values[-1], values[:-1]
            scale = math.sqrt(252 / HORIZONS[horizon])
            per_horizon.append(
                {
                    "horizon": horizon,
                    "as_of": rows["as_of"][-1],
                    "volatility": float(today),
                    "annualised": float(today * scale),
                    "earlier_values": int(earlier.size),
                    "since": rows["as_of"][0],
                    "percentile": float(np.mean(earlier <= today) * 100) if earlier.size else None,
                    "history_low": float(earlier.min() * scale) if earlier.size else None,
                    "history_high": float(earlier.max() * scale) if earlier.size else None,
                }
            )
    if not per_horizon:
        return _item(
            "volatility",
            "Volatility forecast",
            "The served forecasts carry no volatility forecast yet.",
            status="not_published",
        )
    chosen = next((p for p in per_horizon if p["horizon"] == VOLATILITY_HORIZON), per_horizon[0])
    h = chosen["horizon"]
    text = (
        f"The {HORIZON_NAMES[h]} forecast expects volatility of {_pct(chosen['annualised'], 1)} "
        "a year (annualised)"
    )
    if chosen["earlier_values"] >= MIN_VOLATILITY_HISTORY:
        text += (
            f", higher than {chosen['percentile']:.0f}% of its {chosen['earlier_values']} earlier "
            f"daily values since {chosen['since']} (range {_pct(chosen['history_low'], 1)}–"
            f"{_pct(chosen['history_high'], 1)})."
        )
    else:
        text += (
            f"; only {chosen['earlier_values']} earlier daily values, too few to say whether "
            "that is high or low."
        )
    return _item(
        "volatility",
        "Volatility forecast",
        text,
        as_of=chosen["as_of"],
        reference=reference,
        allowed=allowed,
        detail={"horizon": h, "horizons": per_horizon},
    )


def correlation_items(
    state: Mapping[str, Any] | None, reference: dt.date | None, allowed: int
) -> list[dict[str, Any]]:
    if state is None:
        return [
            _item(
                "correlation",
                "Soy–crude and soy–palm correlation",
                "Not published yet: the daily refresh's correlation monitor publishes it.",
                status="not_published",
            )
        ]
    items = []
    for pair in state.get("correlations") or []:
        name = pair.get("name") or pair["pair"]
        key, title = f"correlation_{pair['pair']}", f"{name} correlation"
        if pair.get("skipped"):
            items.append(
                _item(key, title, f"Not in this data: {pair['skipped']}.", status="not_in_data")
            )
            continue
        corr, lo, hi = pair.get("corr"), pair.get("band_lo"), pair.get("band_hi")
        head = f"{name} daily-return correlation {_signed(corr)}"
        state_word = pair.get("state")
        if state_word == "inside":
            text = f"{head}, inside its usual range ({_signed(lo)} to {_signed(hi)})."
        elif state_word in ("below", "above"):
            run = int(pair.get("run_length") or 0)
            text = (
                f"{head}, {state_word} its usual range ({_signed(lo)} to {_signed(hi)}) for "
                f"{run} trading day{'' if run == 1 else 's'}"
            )
            text += (
                ": a break, so models that learned the usual link may mislead."
                if pair.get("breaking")
                else "."
            )
        else:
            text = f"{head}; no usual range yet (it needs two years of history)."
        items.append(
            _item(
                key,
                title,
                text,
                as_of=_date(pair.get("as_of")),
                reference=reference,
                allowed=allowed,
                detail=pair,
            )
        )
    return items


def cot_item(state: Mapping[str, Any] | None, reference: dt.date | None) -> dict[str, Any]:
    title = "Speculators' positioning (COT)"
    if state is None:
        return _item(
            "cot",
            title,
            "Not published yet: the daily refresh publishes it.",
            status="not_published",
        )
    cot = state.get("cot")
    if not cot:
        target = state.get("target", "the target")
        return _item(
            "cot",
            title,
            f"Not in this data: there is no CFTC COT series for {target}.",
            status="not_in_data",
        )
    net = float(cot["net_pct_oi"])
    side = "long" if net >= 0 else "short"
    text = (
        f"Managed money is net {side} {abs(net):.1f}% of open interest (report of {cot['as_of']}"
        + (f", published {cot['published_at']}" if cot.get("published_at") else "")
        + ")"
    )
    if cot.get("change_4w") is not None:
        change = float(cot["change_4w"])
        text += f", {'up' if change >= 0 else 'down'} {abs(change):.1f} points over 4 weeks"
    if cot.get("percentile") is not None and cot.get("history_reports"):
        text += (
            f"; higher than {cot['percentile']:.0f}% of the previous {cot['history_reports']} "
            "weekly reports"
        )
    return _item(
        "cot",
        title,
        text + ".",
        as_of=_date(cot["as_of"]),
        reference=reference,
        allowed=WEEKLY_ALLOWED_BUSINESS_DAYS,
        detail=cot,
    )


def news_item(
    configured: Sequence[str],
    news: Mapping[str, Any] | None,
    published: bool,
    reference: dt.date | None,
    allowed: int,
) -> dict[str, Any]:
    title = "News sentiment"
    if not configured:
        return _item(
            "news",
            title,
            "Not configured: sentiment.yaml puts news in no horizon's forecast.",
            status="not_configured",
        )
    where = ", ".join(configured)
    if not published:
        return _item(
            "news",
            title,
            f"Configured for the {where} forecast, but no score is published yet: the "
            "news_sentiment asset publishes it when it runs.",
            status="not_published",
        )
    if not news or news.get("mean_score") is None:
        return _item(
            "news",
            title,
            f"Configured for the {where} forecast, but no news article was scored in the "
            "latest window.",
            status="not_published",
        )
    text = (
        f"Tone of the news over the last {SENTIMENT_WINDOW_DAYS} business days: mean score "
        f"{_signed(news['mean_score'])}"
        f" (−1 negative to +1 positive) from {news['articles']} articles"
    )
    if news.get("percentile") is not None and news.get("history_days"):
        text += (
            f", higher than {news['percentile']:.0f}% of the {news['history_days']} earlier days"
        )
    if news.get("surprise") is not None:
        text += f"; {_signed(news['surprise'])} against the {SURPRISE_WINDOW_DAYS}-day tone"
    text += f". Used in the {where} forecast."
    return _item(
        "news",
        title,
        text,
        as_of=_date(news["as_of"]),
        reference=reference,
        allowed=allowed,
        detail=news,
    )


def intelligence_json(
    view: ForecastView | None,
    health: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    news: Mapping[str, Any] | None,
    news_published: bool,
    news_configured: Sequence[str],
) -> bytes:
    reference = _date(health.get("data_reference_date"))
    if reference is None and view is not None and not view.empty:
        reference = view.as_of
    if reference is None and state is not None:
        reference = _date(state.get("as_of"))
    allowed = int(health.get("max_business_days_behind") or 0)
    items = [
        regime_item(view, state, reference, allowed),
        volatility_item(view, reference, allowed),
        *correlation_items(state, reference, allowed),
        cot_item(state, reference),
        news_item(news_configured, news, news_published, reference, allowed),
    ]
    return _dump(schemas.IntelligenceOut, {"reference_date": reference, "items": items})
