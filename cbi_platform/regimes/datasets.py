"""Per-regime exports of the feature frame, with the calendar's sample weights."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cbi_platform.regimes.calendar import RegimeCalendar


def attach_calendar(frame: pl.DataFrame, calendar: RegimeCalendar) -> pl.DataFrame:
    """Add calendar_regime and regime_weight columns (hindsight: for weights and exports only)."""
    labels = calendar.label(frame["date"])
    return frame.join(labels, on="date", how="left")


def write_regime_datasets(
    frame: pl.DataFrame, calendar: RegimeCalendar, folder: Path
) -> pl.DataFrame:
    """One Parquet per calendar regime; returns a summary (regime, rows, weight, dates, path)."""
    folder.mkdir(parents=True, exist_ok=True)
    labelled = attach_calendar(frame, calendar)
    rows = []
    for regime in calendar.regime_names:
        part = labelled.filter(pl.col("calendar_regime") == regime)
        path = folder / f"{regime}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        part.write_parquet(tmp)
        tmp.replace(path)  # atomic: a failed run never leaves a half-written export
        rows.append(
            {
                "regime": regime,
                "rows": part.height,
                "weight": float(part["regime_weight"].max()) if part.height else None,
                "first_date": str(part["date"].min()) if part.height else None,
                "last_date": str(part["date"].max()) if part.height else None,
                "path": str(path),
            }
        )
    return pl.DataFrame(rows, schema_overrides={"weight": pl.Float64})
