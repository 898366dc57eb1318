"""Error-by-origin chart for the UI (PNG bytes, matplotlib Agg, no pyplot global state)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import polars as pl

from cbi_platform.evaluation.metrics import RANDOM_WALK, scored_rows, with_random_walk


def error_by_origin_png(
    oof: pl.DataFrame, models: Sequence[str], horizon: str | None = None, dpi: int = 100
) -> bytes:
    """Absolute % error |forecast - actual| / actual by scored origin, one panel per horizon.

    The random walk (forecast = price at the origin) is always drawn, dashed, for reference.
    """
    data = with_random_walk(oof)
    if horizon is not None:
        data = data.filter(pl.col("horizon") == horizon)
    data = scored_rows(data).with_columns(
        ape=(pl.col("forecast") - pl.col("actual")).abs() / pl.col("actual").abs() * 100.0
    )
    horizons = (
        data.select("horizon", "horizon_days").unique().sort("horizon_days")["horizon"].to_list()
    )
    drawn = [RANDOM_WALK, *[m for m in models if m != RANDOM_WALK]]
    n_panels = max(1, len(horizons))
    # matplotlib (~0.4 s to import) only where a plot is drawn, not in every run process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 2.6 * n_panels), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_panels, 1, squeeze=False)[:, 0]
    if not horizons:
        axes[0].text(0.5, 0.5, "no scored origins", ha="center", va="center")
    for ax, h in zip(axes, horizons, strict=False):
        part = data.filter(pl.col("horizon") == h)
        for name in drawn:
            series = part.filter(pl.col("model") == name).sort("origin")
            if series.is_empty():
                continue
            is_rw = name == RANDOM_WALK
            ax.plot(
                series["origin"].to_list(),
                series["ape"].to_list(),
                label=name,
                color="black" if is_rw else None,
                linestyle="--" if is_rw else "-",
                marker="." if not is_rw else None,
                linewidth=1.2,
            )
        ax.set_title(f"{h}: absolute % error by origin")
        ax.set_ylabel("|error| / actual, %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
