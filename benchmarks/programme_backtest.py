"""How long a buyer's programme backtest takes, on the real ZL closes.

Usage: .venv/bin/python benchmarks/programme_backtest.py [--repeat 3]
Results: benchmarks/results/programme_backtest.{md,json}.

The data a `make run` home gives the backtest: the real ZL closes (manifests/shared_data.yaml)
and one decision forecast per trading day of the scored period (the last 1,512 trading days;
1w, 1m, 3m). On the real data every walk-forward state of that series was the random walk
(benchmarks/results/procurement_shared_data.md: 121 random-walk states, none with members), so
the decision forecasts here are the random walk with normal zones, which is what the policies
read there. Timed: the programme backtest for the default programme (even buying shown: only
even runs), for one with a forecast-driven policy shown (a made-up development record puts cvar
first, so its day-by-day decisions run too), the platform's full procurement backtest (all six
policies) for comparison, and the whole Dagster path (sensor + programme_backtest_job in
process, reading the warehouse and writing the accounts store).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SCORED_DAYS = 1512


def real_closes():
    import polars as pl

    from cbi_platform.market.sources import SourceConfig, load_market

    bundle = load_market(
        SourceConfig(kind="files", manifest=str(ROOT / "manifests/shared_data.yaml"))
    )
    zl = bundle.prices.filter(pl.col("symbol") == "ZL").sort("date")
    return zl.select("date", price="value")


def timed(fn, repeat: int) -> tuple[float, object]:
    seconds, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import dagster as dg
    import polars as pl

    from cbi_platform.accounts import programmes as pg
    from cbi_platform.accounts.store import AccountStore
    from cbi_platform.defs.procurement.programme import (
        programme_backtest_job,
        programme_backtest_sensor,
    )
    from cbi_platform.defs.resources import build_resources
    from cbi_platform.procurement import backtest as bt
    from cbi_platform.procurement import programme_backtest as pb
    from cbi_platform.procurement.programme import load_config
    from cbi_platform.serving.store import ForecastStore
    from cbi_platform_tests.accounts.programme_home import add_user, write_warehouse
    from cbi_platform_tests.api.conftest import forecast_row

    config = load_config()
    closes = real_closes()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        forecasts, prices = write_warehouse(
            home, prices=closes, forecasts_from=closes.height - SCORED_DAYS
        )
        last_day, last_price = prices["date"][-1], float(prices["price"][-1])
        ForecastStore(home / "forecasts.duckdb").append(
            [forecast_row(last_day, h, last_price) for h in ("1w", "1m", "3m", "6m", "12m")]
        )
        served = ForecastStore(home / "forecasts.duckdb").latest()
        default = config.programme
        record = pb.load_development_record()
        cvar_first = {**record, "cvar": {"mean_savings_cents": 0.1, "worst_shortfall_cents": 0.5}}

        t_default, result = timed(
            lambda: pb.run_programme_backtest(forecasts, prices, default, config, served),
            args.repeat,
        )
        t_cvar, cvar_result = timed(
            lambda: pb.run_programme_backtest(
                forecasts, prices, default, config, served, cvar_first
            ),
            args.repeat,
        )
        usable = forecasts.filter(pl.col("horizon").is_in(list(config.pipeline.horizons)))
        windows = bt.default_windows(prices, default, config.backtest, usable["date"].min())
        t_full, _ = timed(
            lambda: bt.run_backtest(
                usable, prices, default, config.policies, windows, keep_reasons=False
            ),
            args.repeat,
        )

        # the Dagster path: queue, sensor, job in process (reads the warehouse, writes the store)
        store = AccountStore.for_home(home, env={})
        add_user(store, "buyer@example.com")
        resources = build_resources({"CBI_HOME": str(home), "CBI_SOURCE": "simulated"})
        runs = []
        for i in range(args.repeat):
            programme = pg.validate_programme(
                {
                    **pg.default_programme().as_json(),
                    "total_lb": None,
                    "railcars_per_window": 10 + i,
                }
            )
            pg.request_backtest(store, programme, str(last_day))
            started = time.perf_counter()
            context = dg.build_sensor_context(
                resources={"home": resources["home"]}, instance=dg.DagsterInstance.ephemeral()
            )
            [request] = programme_backtest_sensor(context).run_requests
            run = programme_backtest_job.execute_in_process(
                run_config=request.run_config,
                resources={k: resources[k] for k in ("home", "market_source", "forecast_store")},
                instance=dg.DagsterInstance.ephemeral(),
            )
            assert run.success
            runs.append(time.perf_counter() - started)
            assert pg.backtest_status(store, programme, str(last_day))["status"] == "ready"
        t_dagster = statistics.median(runs)

    machine = machine_stamp()
    summary = {
        "machine": machine,
        "data": {
            "closes": closes.height,
            "first_close": str(closes["date"][0]),
            "last_close": str(last_day),
            "decision_days": SCORED_DAYS,
            "horizons": list(config.pipeline.horizons),
            "windows": result["windows"],
            "first_window": result["first_window"],
        },
        "repeat": args.repeat,
        "seconds": {
            "programme_backtest_default (even shown)": round(t_default, 3),
            "programme_backtest_cvar_shown": round(t_cvar, 3),
            "platform_backtest_all_six_policies": round(t_full, 3),
            "dagster_sensor_and_job_in_process": round(t_dagster, 3),
        },
        "default_result": {
            "even": result["record"]["even"],
            "coming_window": result["coming_window"]["even"],
        },
        "cvar_shown_worst_shortfall_cents": cvar_result["worst_shortfall_cents"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "programme_backtest.json").write_text(
        json.dumps(summary, indent=1, default=str) + "\n"
    )
    even = result["record"]["even"]
    coming = result["coming_window"]["even"]
    lines = [
        "# A buyer's programme backtest: how long it takes",
        "",
        f"Machine: {machine['machine']} ({machine['cpus']} cpus), {machine['date']}. Median of "
        f"{args.repeat} runs each. Command: `.venv/bin/python benchmarks/programme_backtest.py "
        f"--repeat {args.repeat}`.",
        "",
        f"Data: the real ZL closes ({closes.height} days, {closes['date'][0]} .. {last_day}) and "
        f"random-walk decision forecasts for the last {SCORED_DAYS} trading days (the scored "
        f"period; 1w, 1m, 3m), as a `make run` home's decision series reads on the real data. "
        f"Default programme: {result['windows']} windows of 21 trading days, one every "
        f"{config.backtest.window_step}, from {result['first_window']}.",
        "",
        "| what | seconds |",
        "| --- | --- |",
        *(f"| {k} | {v:.3f} |" for k, v in summary["seconds"].items()),
        "",
        "The programme backtest runs even buying and, when another policy is shown, that one: "
        "not the six policies of the platform's backtest. The Dagster path adds the run's "
        "start (ephemeral instance, resources) and the warehouse read under its lock.",
        "",
        f"Default programme, past windows (even buying = the recommendation): P10 "
        f"{even['p10_cents']:.2f}, P50 {even['p50_cents']:.2f}, P90 {even['p90_cents']:.2f} c/lb "
        f"(${even['p10_dollars']:,.0f} / ${even['p50_dollars']:,.0f} / ${even['p90_dollars']:,.0f} "
        f"per 1.8 million lb). Coming window from the served zones (synthetic zones of the API "
        f"tests, centred 3% below the last close): P10 {coming['p10_cents']:.2f}, P50 "
        f"{coming['p50_cents']:.2f}, P90 {coming['p90_cents']:.2f} c/lb.",
    ]
    (RESULTS / "programme_backtest.md").write_text("\n".join(lines) + "\n")
    record_run(RESULTS / "programme_backtest.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
