"""The feature catalogue: what each column `build.py` produces means, in words, and its unit.

Feature names and their descriptions live here, beside the builder, so a new feature comes with
its phrase (a test builds every feature and fails on one missing here). The unit picks how a
value is written in the drivers' sentences (`format_feature_value`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

# feature -> (phrase, unit); unit picks how the feature's value is written (`_VALUE_FORMATS`).
FEATURE_CATALOGUE: dict[str, tuple[str, str]] = {
    "f_zl_ret1": ("ZL 1-day return", "pct_change"),
    "f_zl_ret5": ("ZL 5-day return", "pct_change"),
    "f_zl_ret21": ("ZL 21-day return", "pct_change"),
    "f_zl_ret63": ("ZL 63-day return", "pct_change"),
    "f_zl_ret1_lag1": ("ZL 1-day return a day earlier", "pct_change"),
    "f_zl_ret1_lag2": ("ZL 1-day return two days earlier", "pct_change"),
    "f_zl_ret5_lag5": ("ZL 5-day return the week before", "pct_change"),
    "f_zl_vol5": ("ZL 5-day volatility", "vol"),
    "f_zl_vol21": ("ZL 21-day volatility", "vol"),
    "f_zl_vol63": ("ZL 63-day volatility", "vol"),
    "f_zl_mom21": ("ZL price vs its 21-day average", "pct_change"),
    "f_zl_mom63": ("ZL price vs its 63-day average", "pct_change"),
    "f_zl_mom126": ("ZL price vs its 126-day average", "pct_change"),
    "f_zl_dist_high252": ("ZL distance from its 52-week high", "pct_change"),
    "f_zl_dist_low252": ("ZL distance above its 52-week low", "pct_change"),
    "f_zl_z252": ("ZL price vs its 1-year range", "z"),
    "f_month_sin": ("time of year (month, sine)", "cyclic"),
    "f_month_cos": ("time of year (month, cosine)", "cyclic"),
    "f_dow": ("day of the week", "weekday"),
    "f_zs_ret5": ("soybean (ZS) 5-day return", "pct_change"),
    "f_zs_ret21": ("soybean (ZS) 21-day return", "pct_change"),
    "f_zm_ret5": ("soybean meal (ZM) 5-day return", "pct_change"),
    "f_zm_ret21": ("soybean meal (ZM) 21-day return", "pct_change"),
    "f_palm_ret5": ("palm oil 5-day return", "pct_change"),
    "f_palm_ret21": ("palm oil 21-day return", "pct_change"),
    "f_wti_ret5": ("WTI crude 5-day return", "pct_change"),
    "f_wti_ret21": ("WTI crude 21-day return", "pct_change"),
    "f_brent_ret5": ("Brent crude 5-day return", "pct_change"),
    "f_brent_ret21": ("Brent crude 21-day return", "pct_change"),
    "f_dxy_ret5": ("US dollar index 5-day change", "pct_change"),
    "f_dxy_ret21": ("US dollar index 21-day change", "pct_change"),
    "f_usdbrl_ret5": ("dollar vs Brazilian real, 5-day change", "pct_change"),
    "f_usdbrl_ret21": ("dollar vs Brazilian real, 21-day change", "pct_change"),
    "f_rin_d4_ret5": ("D4 RIN price 5-day change", "pct_change"),
    "f_rin_d4_ret21": ("D4 RIN price 21-day change", "pct_change"),
    "f_cot_zl_net": ("speculators' net position in ZL (COT)", "pct_oi"),
    "f_cot_zl_chg4": ("4-week change in speculators' ZL net position (COT)", "pct_oi_change"),
    "f_palm_m_chg3": ("palm oil 3-month change (monthly prices)", "pct_change"),
    "f_zl_m_chg3": ("soybean oil 3-month change (monthly prices)", "pct_change"),
    "f_soy_palm_spread": ("soy oil premium over palm oil", "usd_t"),
    "f_soy_palm_spread_z63": ("soy-palm spread vs its 63-day range", "z"),
    "f_crush_usd_bu": ("soybean crush margin", "usd_bu"),
    "f_oil_share": ("oil share of the crush value", "share"),
    "f_zl_wti_ratio": ("ZL / WTI crude price ratio", "ratio"),
    "f_corr63_zl_palm": ("63-day correlation of ZL with palm oil", "corr"),
    "f_corr63_zl_wti": ("63-day correlation of ZL with WTI crude", "corr"),
    "f_corr63_zl_zs": ("63-day correlation of ZL with soybeans", "corr"),
}

FEATURE_DESCRIPTIONS: dict[str, str] = {
    name: phrase for name, (phrase, _) in FEATURE_CATALOGUE.items()
}
FEATURE_UNITS: dict[str, str] = {name: unit for name, (_, unit) in FEATURE_CATALOGUE.items()}

_WEEKDAYS = {1: "Monday", 2: "Tuesday", 3: "Wednesday", 4: "Thursday", 5: "Friday"}
_VALUE_FORMATS = {
    "pct_change": lambda v: f"{100.0 * math.expm1(v):+.1f}%",  # log change -> percent
    "vol": lambda v: f"{100.0 * v:.0f}% annualised",
    "z": lambda v: f"z {v:+.1f}",
    "cyclic": lambda v: f"{v:+.2f}",
    "weekday": lambda v: _WEEKDAYS.get(int(round(v)), f"day {v:g}"),
    "pct_oi": lambda v: f"{v:+.1f}% of open interest",
    "pct_oi_change": lambda v: f"{v:+.1f} pts",
    "usd_t": lambda v: f"{v:,.0f} USD/t",
    "usd_bu": lambda v: f"{v:.2f} USD/bu",
    "share": lambda v: f"{100.0 * v:.1f}%",
    "ratio": lambda v: f"{v:.2f}",
    "corr": lambda v: f"{v:+.2f}",
    "number": lambda v: f"{v:.3g}",
}
VALUE_UNITS = frozenset(_VALUE_FORMATS)
# Fallback for names not in the dict: the build.py naming patterns, then the bare name.
_PATTERNS = (
    (re.compile(r"^f_(.+)_ret(\d+)$"), "{0} {1}-day return", "pct_change"),
    (re.compile(r"^f_(.+)_chg(\d+)$"), "{0} change over {1} releases", "number"),
    (re.compile(r"^f_(.+)_vol(\d+)$"), "{0} {1}-day volatility", "vol"),
    (re.compile(r"^f_(.+)_mom(\d+)$"), "{0} price vs its {1}-day average", "pct_change"),
)


def _symbol_words(token: str) -> str:
    return token.upper().replace("_", " ")


def describe_feature(
    name: str, feature_descriptions: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(phrase, unit) for a feature: the given phrases over FEATURE_DESCRIPTIONS, else its name."""
    descriptions = {**FEATURE_DESCRIPTIONS, **(feature_descriptions or {})}
    unit = FEATURE_UNITS.get(name)
    if name in descriptions:
        return descriptions[name], unit or "number"
    for pattern, template, pattern_unit in _PATTERNS:
        match = pattern.match(name)
        if match:
            return template.format(_symbol_words(match[1]), match[2]), unit or pattern_unit
    bare = name[2:] if name.startswith("f_") else name
    return bare.replace("_", " "), unit or "number"


def format_feature_value(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "missing"
    return _VALUE_FORMATS.get(unit, _VALUE_FORMATS["number"])(float(value))


def uncatalogued(columns: Iterable[str]) -> list[str]:
    """Feature columns without a catalogue entry (their words would fall back to the bare name)."""
    return sorted(c for c in columns if c.startswith("f_") and c not in FEATURE_CATALOGUE)
