"""Truncation gate for detected regimes: labels and classifier inputs are point in time.

The feature gate (`features/leakage.truncation_gate`) does not see the regime rule, which
builds its own trailing features and crisis threshold. This gate recomputes both on the
series cut at several dates and demands that nothing at or before a cut changes: a centred
window or a threshold that reads tomorrow's volatility changes when tomorrow is removed.
The LightGBM classifier is not refitted: its inputs are what must be point in time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from cbi_platform.features.leakage import MAX_EVIDENCE_ROWS, GateResult
from cbi_platform.regimes.detected import (
    InputsFn,
    classifier_matrix,
    label_regimes,
    regime_inputs,
)

LabelFn = Callable[[pl.Series, np.ndarray], pl.DataFrame]

DATE = "date"
REGIME = "regime"
LABEL_COLUMNS = (REGIME, "trailing_vol", "trailing_return", "crisis_threshold")
EVIDENCE_ROWS_PER_OFFENDER = 5
LATE_FRACTION = 0.75  # at least one cut falls after this fraction of the series


def regime_cuts(dates: pl.Series, labelled_from: int, n_cuts: int) -> list:
    """Cuts spread evenly over the labelled span, staggered by one row each (different
    weekdays), never on the last row, and at least one inside the last quarter."""
    n = dates.len()
    span = n - labelled_from
    positions = {labelled_from + int(span * i / (n_cuts + 1)) + i - 1 for i in range(1, n_cuts + 1)}
    positions = {p for p in positions if labelled_from <= p < n - 1}
    if n >= 8 and not any(p >= LATE_FRACTION * n for p in positions):
        positions.add(n - max(n // 8, 2))
    return [dates[p] for p in sorted(positions)]


def _regime_frame(
    dates: pl.Series, prices: np.ndarray, label: LabelFn, inputs: InputsFn
) -> tuple[pl.DataFrame, list[str]]:
    """The labels and every classifier input column, one row per date."""
    labels = label(dates, prices)
    matrix, input_columns = classifier_matrix(dates, prices, inputs_fn=inputs)
    frame = labels.select(DATE, *LABEL_COLUMNS).with_columns(
        pl.Series(name, matrix[:, j], dtype=pl.Float64) for j, name in enumerate(input_columns)
    )
    return frame, input_columns


def _floats(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _json(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _compare(
    reference: pl.DataFrame,
    other: pl.DataFrame,
    columns: Sequence[str],
    cut: str,
    tolerance: float,
) -> list[dict[str, Any]]:
    """Offenders where `other` differs from `reference`, both already restricted to the same
    rows; labels must be equal (null with null), floats close (NaN with NaN)."""
    if other.height != reference.height or not other[DATE].equals(reference[DATE]):
        return [
            {
                "cut": cut,
                "column": DATE,
                "rows": f"{reference.height} rows in the reference, {other.height} to compare",
            }
        ]
    dates = reference[DATE]
    offenders = []
    for column in columns:
        if column not in other.columns:
            offenders.append({"cut": cut, "column": column, "rows": "column missing"})
            continue
        if column == REGIME:
            full_values = reference[column].cast(pl.Utf8)
            cut_values = other[column].cast(pl.Utf8)
            bad = np.flatnonzero(~full_values.eq_missing(cut_values).to_numpy())
            shown_full = [full_values[int(i)] for i in bad[:EVIDENCE_ROWS_PER_OFFENDER]]
            shown_cut = [cut_values[int(i)] for i in bad[:EVIDENCE_ROWS_PER_OFFENDER]]
        else:
            full_values = _floats(reference, column)
            cut_values = _floats(other, column)
            both_nan = np.isnan(full_values) & np.isnan(cut_values)
            with np.errstate(invalid="ignore"):
                close = np.abs(full_values - cut_values) <= tolerance * (1 + np.abs(full_values))
            bad = np.flatnonzero(~(both_nan | close))
            shown = bad[:EVIDENCE_ROWS_PER_OFFENDER]
            shown_full = [_json(float(full_values[i])) for i in shown]
            shown_cut = [_json(float(cut_values[i])) for i in shown]
        if bad.size:
            offenders.append(
                {
                    "cut": cut,
                    "column": column,
                    "n_rows": int(bad.size),
                    "rows": [int(i) for i in bad[:EVIDENCE_ROWS_PER_OFFENDER]],
                    "dates": [str(dates[int(i)]) for i in bad[:EVIDENCE_ROWS_PER_OFFENDER]],
                    "full": shown_full,
                    "truncated": shown_cut,
                }
            )
    return offenders


def regime_truncation_gate(
    dates: pl.Series,
    prices: np.ndarray,
    label: LabelFn = label_regimes,
    inputs: InputsFn = regime_inputs,
    cut_dates: Sequence | None = None,
    n_cuts: int = 4,
    written: pl.DataFrame | None = None,
    tolerance: float = 1e-9,
) -> GateResult:
    """Labels (regime, trailing_vol, trailing_return, crisis_threshold) and every classifier
    input recomputed on the series cut at each date equal the full run on every row <= cut.

    `written`, when given, is the table as materialized: it must also equal the full
    recomputation on every row, so the gate judges what downstream assets read.
    """
    order = dates.arg_sort()
    dates = dates.gather(order)
    prices = np.asarray(prices, dtype=float)[order.to_numpy()]
    full, input_columns = _regime_frame(dates, prices, label, inputs)
    columns = [*LABEL_COLUMNS, *input_columns]
    labelled = np.flatnonzero(full[REGIME].is_not_null().to_numpy())
    labelled_from = int(labelled[0]) if labelled.size else 0
    cuts = list(cut_dates) if cut_dates is not None else regime_cuts(dates, labelled_from, n_cuts)
    offenders: list[dict[str, Any]] = []
    if written is not None:
        as_written = written.sort(DATE)
        offenders += _compare(full, as_written, LABEL_COLUMNS, "none (as written)", tolerance)
    rows_per_cut: dict[str, int] = {}
    for cut in cuts:
        keep = (dates <= cut).to_numpy()
        truncated, _ = _regime_frame(dates.filter(keep), prices[keep], label, inputs)
        head = full.filter(pl.Series(keep))
        rows_per_cut[str(cut)] = head.height
        offenders += _compare(head, truncated, columns, str(cut), tolerance)
    offending = sorted({o["column"] for o in offenders})
    summary = (
        f"regime labels and {len(input_columns)} classifier inputs equal on rows up to each "
        f"of {len(cuts)} cuts"
        if not offenders
        else f"{len(offending)} regime column(s) change when data after the cut is removed "
        f"or differ from the table as written: {offending}"
    )
    return GateResult(
        passed=not offenders,
        summary=summary,
        evidence={
            "cuts": [str(c) for c in cuts],
            "rows_per_cut": rows_per_cut,
            "rows": full.height,
            "first_date": str(dates[0]) if dates.len() else None,
            "last_date": str(dates[-1]) if dates.len() else None,
            "first_labelled_date": str(dates[labelled_from]) if labelled.size else None,
            "label_columns": list(LABEL_COLUMNS),
            "input_columns": input_columns,
            "checked_as_written": written is not None,
            "offending_columns": offending,
            "offenders": offenders[:MAX_EVIDENCE_ROWS],
        },
    )
