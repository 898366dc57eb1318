"""What the buyer must never misread (issue 22 §7): a provisional forecast, stale data and a
forecast that is the random walk, each as one plain sentence.

One source of truth: the API sends these sentences with the forecast (GET /notices) and the
page shows them as they are; the mail digest calls `notices` itself. Each notice has a kind
(the page and the digest style each kind differently, with a label, never by colour alone),
a short label and the sentence that says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cbi_platform.settings import HORIZON_NAMES, RANDOM_WALK

PROVISIONAL, STALE, RANDOM_WALK_KIND = "provisional", "stale", "random_walk"
LABELS = {
    PROVISIONAL: "Provisional forecast",
    STALE: "Stale data",
    RANDOM_WALK_KIND: "Random walk: no change",
}
ORDER = (STALE, PROVISIONAL, RANDOM_WALK_KIND)


@dataclass(frozen=True)
class Notice:
    kind: str  # provisional | stale | random_walk
    label: str  # a few words, shown beside the icon
    sentence: str  # why, in one plain sentence

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def is_random_walk(record: Mapping[str, Any]) -> bool:
    """The served forecast is the random walk: its combiner is the random walk, or it is
    shrunk all the way to it (weight 0 on the models)."""
    shrink = record.get("shrink_weight")
    note = record.get("driver_note") or ""
    return (
        record.get("combiner") == RANDOM_WALK
        or (shrink is not None and shrink == 0)
        or note.startswith("the ensemble is the random walk")
    )


def _business_days(n: int) -> str:
    return f"{n} business day{'' if n == 1 else 's'}"


def health_of(
    record: Mapping[str, Any], max_business_days_behind: int, stale_condition: bool = False
) -> dict[str, Any]:
    """The `health` mapping `notices` reads, from one forecast record's own freshness fields
    (for callers without the API's /health, e.g. the mail digest): stale when the data were more
    than `max_business_days_behind` business days behind, or when the daily refresh's freshness
    check fires (`stale_condition`)."""
    behind = record.get("data_business_days_behind")
    late = behind is not None and behind > max_business_days_behind
    return {
        "status": "stale" if late or stale_condition else "ok",
        "data_last_date": record.get("data_last_date"),
        "business_days_behind": behind,
        "data_reference_date": record.get("data_reference_date"),
        "max_business_days_behind": max_business_days_behind,
    }


def stale_notice(health: Mapping[str, Any] | None) -> Notice | None:
    """The stale-data notice from the API's health (`/health`: status, data_last_date,
    business_days_behind, data_reference_date, max_business_days_behind), or None when fresh."""
    if not health or health.get("status") != "stale":
        return None
    last = health.get("data_last_date")
    behind = health.get("business_days_behind")
    reference = health.get("data_reference_date")
    allowed = health.get("max_business_days_behind")
    if last is not None and behind is not None and allowed is not None and behind > allowed:
        sentence = (
            f"Data are stale: the last close is {last}, {_business_days(behind)} before "
            f"{reference}, and forecasts are only kept current up to {_business_days(allowed)} "
            "behind; the numbers below describe the market as it was then."
        )
    else:
        where = f" (the last close is {last})" if last is not None else ""
        sentence = (
            f"Data are stale: the daily refresh found the market data out of date{where}; "
            "the numbers below may not reflect the market today."
        )
    return Notice(STALE, LABELS[STALE], sentence)


def provisional_notice(record: Mapping[str, Any]) -> Notice | None:
    if not record.get("provisional"):
        return None
    gates = [str(g) for g in record.get("failed_gates") or [] if g]
    why = "; ".join(gates) if gates else "see the model card"
    sentence = (
        f"This forecast is provisional: no model version passed the promotion checks ({why}), "
        "so its zones are less trustworthy than usual."
    )
    return Notice(PROVISIONAL, LABELS[PROVISIONAL], sentence)


def random_walk_notice(record: Mapping[str, Any]) -> Notice | None:
    if not is_random_walk(record):
        return None
    price = record.get("price")
    horizon = record.get("horizon")
    ahead = f" {HORIZON_NAMES[horizon]} ahead" if horizon in HORIZON_NAMES else ""
    today = f" ({float(price):.2f} c/lb)" if price is not None else ""
    sentence = (
        f"This forecast is the random walk: no model beat 'no change' on past data{ahead}, so "
        f"the best estimate is today's price{today}; the zones show how far it may move."
    )
    return Notice(RANDOM_WALK_KIND, LABELS[RANDOM_WALK_KIND], sentence)


def notices(record: Mapping[str, Any], health: Mapping[str, Any] | None = None) -> list[Notice]:
    """Every notice that applies to one served forecast `record` (the forecast record or the
    API's forecast, flat fields) given the data's `health`, stale first."""
    found = [stale_notice(health), provisional_notice(record), random_walk_notice(record)]
    return sorted((n for n in found if n is not None), key=lambda n: ORDER.index(n.kind))
