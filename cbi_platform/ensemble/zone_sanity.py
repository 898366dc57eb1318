"""Is the live 90% band a band a buyer can use? A sanity check of its width against the history.

A zone method can pass every coverage test on the origins it was chosen on and still serve a
band that is absurd on new data (issue 18 §6: a 12m band 241% of the price wide). This compares
the live 90% band of each horizon with two references that need no model and no tuning:

* **the largest absolute h-day log move** in the history up to the live origin,
  M = max_s |log(P_{s+h} / P_s)|. The band is **too wide** when half its log width,
  log(hi90 / lo90) / 2, exceeds M: its 5% and 95% quantiles then lie, on average, beyond every
  h-day move ever seen, i.e. it gives a move larger than any in the record a 10% chance.
  Used only where the history holds at least `min_independent` (= 10) non-overlapping h-day
  windows; with fewer, the largest move is too noisy a reference and the check says so.
* **the random walk's normal band**: sigma of all daily log returns up to the live origin
  (ddof 1) x sqrt(h), +-1.645 sigma, log width W_n = 2 x 1.645 x sigma x sqrt(h). The band is
  **too wide** when its log width exceeds `max_normal_ratio` (= 3) x W_n and **too narrow**
  when it is below `min_normal_ratio` (= 1/3) x W_n: the band then implies an h-day volatility
  more than three times, or less than a third of, the series' long-run volatility, held over
  the whole horizon. A factor of three, not two, because short-horizon volatility does reach
  twice its long-run level in crises (a warning there would be noise); the factor is the same
  both ways so that neither wide nor narrow is favoured.

The thresholds were fixed on these principles before any zone was measured against them; they
are not fitted to data. Widths are compared in log terms (a volatility scale); the evidence
also gives the width in % of the price, as the buyer sees it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from cbi_platform.settings import ENSEMBLE, horizon_days

Z90 = 1.6448536269514722  # standard normal 95% quantile: the 90% central band


@dataclass(frozen=True)
class ZoneSanityConfig:
    max_normal_ratio: float = 3.0
    min_normal_ratio: float = 1.0 / 3.0
    min_independent: int = 10  # non-overlapping h-day windows before M is a reference
    min_daily_returns: int = 60


@dataclass(frozen=True)
class ZoneSanity:
    """The verdict on one horizon's live 90% band, with its evidence."""

    horizon: str
    origin: str
    price: float
    lo90: float
    hi90: float
    width90_pct: float  # (hi90 - lo90) / price, in %
    log_width90: float  # log(hi90 / lo90)
    largest_move: float | None  # M: largest |h-day log move| in the history
    independent_windows: int  # non-overlapping h-day windows in the history
    normal_log_width: float | None  # W_n
    normal_width_pct: float | None  # the normal band's width in % of the price
    ratio_to_normal: float | None  # log_width90 / W_n
    verdict: str  # "ok", "too wide", "too narrow", "no band"
    reasons: tuple[str, ...]

    @property
    def sane(self) -> bool:
        return self.verdict in ("ok", "no band")

    def as_dict(self) -> dict:
        return asdict(self)


def _history_logp(history: pl.DataFrame, up_to) -> np.ndarray:
    date_col = "date" if "date" in history.columns else "origin"
    value_col = "price" if "price" in history.columns else "value"
    rows = (
        history.select(pl.col(date_col).cast(pl.Date).alias("d"), pl.col(value_col).alias("v"))
        .drop_nulls()
        .filter((pl.col("v") > 0) & (pl.col("d") <= up_to))
        .sort("d")
    )
    return np.log(rows["v"].cast(pl.Float64).to_numpy())


def check_band(
    horizon: str,
    origin,
    price: float,
    lo90: float | None,
    hi90: float | None,
    history: pl.DataFrame,
    config: ZoneSanityConfig | None = None,
) -> ZoneSanity:
    """The verdict on one 90% band issued at `origin`, from the history up to that origin."""
    cfg = config or ZoneSanityConfig()
    h = horizon_days(horizon)
    logp = _history_logp(history, origin)
    moves = logp[h:] - logp[:-h] if len(logp) > h else np.array([])
    independent = len(moves) // h if len(moves) else 0
    largest = float(np.max(np.abs(moves))) if len(moves) else None
    daily = np.diff(logp)
    normal = (
        2 * Z90 * float(np.std(daily, ddof=1)) * math.sqrt(h)
        if len(daily) >= cfg.min_daily_returns
        else None
    )
    normal_pct = None if normal is None else (math.exp(normal / 2) - math.exp(-normal / 2)) * 100
    base = {
        "horizon": horizon,
        "origin": str(origin),
        "price": float(price),
        "largest_move": largest,
        "independent_windows": independent,
        "normal_log_width": normal,
        "normal_width_pct": normal_pct,
    }
    if lo90 is None or hi90 is None or not (0 < lo90 <= hi90):
        return ZoneSanity(
            **base,
            lo90=math.nan if lo90 is None else float(lo90),
            hi90=math.nan if hi90 is None else float(hi90),
            width90_pct=math.nan,
            log_width90=math.nan,
            ratio_to_normal=None,
            verdict="no band",
            reasons=("no calibrated 90% band at the live origin",),
        )
    log_width = math.log(hi90 / lo90)
    width_pct = (hi90 - lo90) / price * 100
    ratio = None if not normal else log_width / normal
    wide, narrow = [], []
    if largest is not None and independent >= cfg.min_independent:
        if log_width / 2 > largest:
            wide.append(
                f"half its log width {log_width / 2:.3f} exceeds the largest {horizon} "
                f"({h}-day) log move in the history, {largest:.3f} "
                f"({independent} independent windows)"
            )
    if ratio is not None and ratio > cfg.max_normal_ratio:
        wide.append(
            f"{ratio:.2f} x the random walk's normal band ({normal_pct:.1f}% of the price), "
            f"above {cfg.max_normal_ratio:g} x"
        )
    if ratio is not None and ratio < cfg.min_normal_ratio:
        narrow.append(
            f"{ratio:.2f} x the random walk's normal band ({normal_pct:.1f}% of the price), "
            f"below the floor of {cfg.min_normal_ratio:.2f} x"
        )
    notes = []
    if largest is not None and independent < cfg.min_independent:
        notes.append(
            f"largest-move reference not used: {independent} independent {horizon} windows "
            f"< {cfg.min_independent}"
        )
    if normal is None:
        notes.append(f"normal-band reference not used: < {cfg.min_daily_returns} daily returns")
    verdict = "too wide" if wide else "too narrow" if narrow else "ok"
    head = f"{horizon} 90% band {width_pct:.1f}% of the price ({lo90:.2f}-{hi90:.2f})"
    reasons = tuple(f"{head} is {verdict}: {r}" for r in wide + narrow) + tuple(notes)
    return ZoneSanity(
        **base,
        lo90=float(lo90),
        hi90=float(hi90),
        width90_pct=width_pct,
        log_width90=log_width,
        ratio_to_normal=ratio,
        verdict=verdict,
        reasons=reasons,
    )


def live_band_sanity(
    zones: pl.DataFrame,
    history: pl.DataFrame,
    model: str = ENSEMBLE,
    config: ZoneSanityConfig | None = None,
) -> list[ZoneSanity]:
    """One verdict per horizon on `model`'s band at its latest origin (the live one) in
    `zones` (target_zones rows); `history`: (date, price) of the target series."""
    rows = zones.filter(pl.col("model") == model) if "model" in zones.columns else zones
    out = []
    for (horizon,), part in rows.group_by(["horizon"], maintain_order=True):
        live = part.sort("origin").row(-1, named=True)
        out.append(
            check_band(
                str(horizon),
                live["origin"],
                float(live["price"]),
                live.get("lo90"),
                live.get("hi90"),
                history,
                config,
            )
        )
    return out
