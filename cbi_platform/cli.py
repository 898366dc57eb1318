"""`cbi`: validate a manifest, run the pipeline, print forecasts — with readable errors."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from cbi_platform.market.schema import MarketDataError


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    from cbi_platform.features.build import build_features
    from cbi_platform.features import leakage
    from cbi_platform.features.contract import feature_columns
    from cbi_platform.market.files import load_files_source
    from cbi_platform.market.manifest import load_manifest
    from cbi_platform.market.validation import ERROR, format_report, validate_market_prices

    manifest_path = Path(args.manifest)
    try:
        manifest = load_manifest(manifest_path)
        bundle = load_files_source(manifest_path)
    except MarketDataError as exc:
        return _fail(str(exc))
    print(f"manifest {manifest_path}: {len(manifest.series)} series, target {manifest.target}")
    for notice in bundle.notices:
        print(f"notice: {notice}")
    reference = manifest.as_of or __import__("datetime").date.today()
    findings = validate_market_prices(bundle.prices, manifest.target, reference)
    print(format_report(findings))
    errors = [f for f in findings if f.severity == ERROR and not f.passed]
    if errors:
        print(f"\n{len(errors)} blocking problem(s): the pipeline would refuse this data.")
        return 1
    try:
        built = build_features(bundle.prices, args.horizon, target=manifest.target)
    except MarketDataError as exc:
        return _fail(str(exc))
    frame = built.frame
    print(f"features ({args.horizon}): {frame.height} rows x {len(feature_columns(frame))} features")
    gates = {
        "asof": leakage.asof_gate(frame, bundle.prices),
        "forward_shift": leakage.forward_shift_gate(frame, bundle.prices),
        "target_correlation": leakage.target_correlation_gate(frame),
    }
    failed = False
    for name, gate in gates.items():
        print(f"[{'ok  ' if gate.passed else 'FAIL'}] leakage {name}: {gate.summary}")
        failed |= not gate.passed
    if failed:
        return 1
    print("\nvalid: no blocking problems (warnings above are informational)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.manifest:
        os.environ["CBI_MANIFEST"] = str(Path(args.manifest).resolve())
        os.environ["CBI_SOURCE"] = "files"
    from cbi_platform.runner import run_pipeline

    try:
        return run_pipeline(horizons=args.horizons, stream=sys.stdout)
    except MarketDataError as exc:
        return _fail(str(exc))


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    from cbi_platform.features.contract import HORIZONS

    parser = argparse.ArgumentParser(prog="cbi", description="CBI Platform: ZL price forecasting")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate a data manifest (exit 1 on bad data)")
    p.add_argument("manifest")
    p.add_argument("--horizon", default="1m", choices=list(HORIZONS))
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("run", help="materialize the pipeline with progress output")
    p.add_argument("--manifest", help="use the files source with this manifest")
    p.add_argument("--horizons", nargs="+", default=list(HORIZONS), choices=list(HORIZONS))
    p.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    code = args.func(args)
    if args.command == "run":
        print(f"wall time {time.perf_counter() - started:.1f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
