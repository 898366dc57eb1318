"""Coverage tables with their 95% intervals, recomputed from the results files the accuracy
and zone benchmarks already wrote (no walk-forward is re-run).

Usage: .venv/bin/python benchmarks/coverage_intervals.py [--source shared_data]

Every stored coverage row holds the coverage and its effective sample size (`n_effective`:
non-overlapping target windows), which is all `coverage_interval` (Wilson, 95%) needs, so the
interval is exact for the stored run; nothing is re-estimated. Reads
benchmarks/results/accuracy_<source>.json, accuracy_<source>_tail3000.json and
zones_<source>.json where present; writes benchmarks/results/coverage_intervals_<source>.{md,json}
with the machine, date, command, commit, wall time, and the stamp of each file it read.

`with_intervals` is also what accuracy.py, zones.py and daily_coverage.py use to print the
interval beside each coverage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

from cbi_platform.ensemble.conformal import COVERAGE_INTERVAL_LEVEL, coverage_interval  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
HORIZON_ORDER = {"1w": 0, "1m": 1, "3m": 2, "6m": 3, "12m": 4}


def interval_text(lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"[{lo:.2f}, {hi:.2f}]"


def with_intervals(table: pl.DataFrame, levels: tuple[int, ...] = (80, 90)) -> pl.DataFrame:
    """`coverage<L> [95%]` text columns beside each coverage<L>, from `n_effective`
    (`coverage_interval`; the lo/hi columns are computed where the table lacks them)."""
    out = table
    for level in levels:
        cov, lo, hi = f"coverage{level}", f"coverage{level}_lo", f"coverage{level}_hi"
        if cov not in out.columns:
            continue
        if lo not in out.columns or hi not in out.columns:
            bounds = [
                coverage_interval(float(c), int(n))
                if c is not None and n is not None
                else (math.nan, math.nan)
                for c, n in zip(out[cov].to_list(), out["n_effective"].to_list(), strict=True)
            ]
            out = out.with_columns(
                pl.Series(lo, [b[0] for b in bounds], dtype=pl.Float64),
                pl.Series(hi, [b[1] for b in bounds], dtype=pl.Float64),
            )
        text = [
            interval_text(a, b) for a, b in zip(out[lo].to_list(), out[hi].to_list(), strict=True)
        ]
        out = out.with_columns(pl.Series(f"{cov} [95%]", text, dtype=pl.Utf8))
    return out


def _sorted(table: pl.DataFrame) -> pl.DataFrame:
    keys = [k for k in ("window", "model", "method") if k in table.columns]
    return table.sort(
        *keys[:1], pl.col("horizon").replace_strict(HORIZON_ORDER, default=9), *keys[1:]
    )


SHOW = (
    "n",
    "n_effective",
    "coverage80",
    "coverage80 [95%]",
    "coverage90",
    "coverage90 [95%]",
    "width90_pct",
    "interval_mean_pct",
)


def accuracy_section(path: Path) -> tuple[list[str], dict]:
    data = json.loads(path.read_text())
    table = _sorted(with_intervals(pl.DataFrame(data["coverage"])))
    shown = table.select("window", "horizon", "model", *SHOW)
    stamp = data["machine"]
    lines = [
        f"## {path.name}",
        "",
        f"Run {stamp['date']} on {stamp['machine']} (protocol `{data['protocol_hash']}`, "
        f"tail rows {data.get('tail_rows')}); zones `{data['protocol']['zone_method']}` for "
        "the ensemble, `rw_normal_band` = the random walk's normal band.",
        "",
        markdown_table(shown),
        "",
    ]
    return lines, {"file": path.name, "machine": stamp, "rows": shown.to_dicts()}


def zones_section(path: Path) -> tuple[list[str], dict]:
    data = json.loads(path.read_text())
    stamp = data["machine"]
    lines = [
        f"## {path.name}",
        "",
        f"Run {stamp['date']} on {stamp['machine']} (protocol `{data['protocol_hash']}`); "
        f"method chosen on development: `{data['chosen']}`; `rw:` = the random walk's zones.",
        "",
    ]
    rows = {}
    for window in ("development", "scored"):
        table = _sorted(with_intervals(pl.DataFrame(data[window])))
        shown = table.select("horizon", "method", *SHOW)
        lines += [f"### {window}", "", markdown_table(shown), ""]
        rows[window] = shown.to_dicts()
    return lines, {"file": path.name, "machine": stamp, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="shared_data")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    stamp = machine_stamp()
    sections, payload = [], {}
    for name, build in (
        (f"accuracy_{args.source}.json", accuracy_section),
        (f"accuracy_{args.source}_tail3000.json", accuracy_section),
        (f"zones_{args.source}.json", zones_section),
    ):
        path = RESULTS / name
        if not path.exists():
            print(f"skipped: {path} is absent")
            continue
        lines, part = build(path)
        sections += lines
        payload[name] = part
    if not payload:
        print("nothing to do: no stored results")
        return 0
    command = f".venv/bin/python benchmarks/coverage_intervals.py {' '.join(sys.argv[1:])}"
    md = [
        f"# Coverage with its {COVERAGE_INTERVAL_LEVEL:.0%} interval: {args.source}",
        "",
        f"- date: {stamp['date']}; machine: {stamp['machine']} ({stamp['platform']}, "
        f"{stamp['cpus']} CPUs, {stamp['memory_gib']} GiB); python {stamp['python']}; "
        f"commit `{stamp['commit']}`",
        f"- command: `{command.strip()}`",
        "- recomputed from the stored results files named below (each with its own run date); "
        "no forecast or zone is re-estimated. Interval: Wilson score interval "
        f"({COVERAGE_INTERVAL_LEVEL:.0%}) of the coverage on `n_effective`, the number of "
        "non-overlapping target windows (`cbi_platform.ensemble.conformal.coverage_interval`): "
        "at 3m-12m the 60 origins hold about 20, 12 and 6 independent outcomes, so the "
        "intervals are wide. A goal (e.g. 90% covering 85-95%) is missed on the evidence only "
        "where the whole interval lies outside it.",
        "",
        *sections,
    ]
    out = Path(args.out)
    (out / f"coverage_intervals_{args.source}.md").write_text("\n".join(md) + "\n")
    (out / f"coverage_intervals_{args.source}.json").write_text(
        json.dumps(
            {"machine": stamp, "command": command.strip(), **payload},
            default=str,
            indent=1,
        )
    )
    record_run(out / f"coverage_intervals_{args.source}.md")
    print(f"wrote {out / f'coverage_intervals_{args.source}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
