"""Small helpers that turn frames and figures into what the Dagster UI renders."""

from __future__ import annotations

import base64

import polars as pl


def markdown_table(df: pl.DataFrame, float_digits: int = 4, max_rows: int = 200) -> str:
    """A GitHub-style markdown table (the UI renders it in asset metadata)."""
    if df.height == 0:
        return "_no rows_"
    head = "| " + " | ".join(df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    lines = [head, rule]
    for row in df.head(max_rows).iter_rows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if v != v else f"{v:.{float_digits}g}")
            else:
                cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    if df.height > max_rows:
        lines.append(f"\n_{df.height - max_rows} more rows_")
    return "\n".join(lines)


def png_markdown(png: bytes, alt: str = "plot") -> str:
    """Embed a PNG in markdown metadata as a data URI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
