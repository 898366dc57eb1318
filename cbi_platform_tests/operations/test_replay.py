"""A miniature operations replay: one horizon, a tiny zoo, two weeks, a planted degradation.

It runs the production paths in-process (refresh job selection, sensors, retraining) and must
show: exactly one alert when the degradation is caught and one "resolved" mail when it clears,
exactly one retraining run, no duplicate across repeated ticks and a daemon restart, the
challenger forecasting in shadow, and the report with its timeline plot.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import polars as pl
import pytest

from cbi_platform.operations.mailbox import LocalMailbox
from cbi_platform.operations.replay import ReplaySettings, format_report, run_replay
from cbi_platform.replay_driver import DagsterReplayDriver
from cbi_platform_tests.conftest import write_small_manifest

SMALL = dict(  # 24 walk-forward origins ~21.8 trading days apart, the live one aside
    n_scored=6,
    span=110,
    end_offset=5,
    n_development=8,
    n_calibration=10,
    min_first_origin_row=100,
    n_workers=1,
    min_history=5,
    regime_folds=2,
    specs_file=str(Path(__file__).with_name("replay_specs.yaml")),
)
MONITORING = """
validation: {window: 3, min_matured: 3, rel_mae_alert: 1.5, rel_mae_clear: 1.2, min_episode_days: 2,
  regime_min_n: 50}
drift: {min_rows: 50}
shadow: {min_outcomes: 3}
"""


@pytest.mark.slow
def test_a_replay_catches_a_planted_degradation_once_and_retrains_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    manifest = write_small_manifest(data, n_days=1400)
    monitoring = tmp_path / "monitoring.yaml"
    monitoring.write_text(MONITORING)
    last = pl.read_csv(data / "zl.csv")["Date"].str.to_date().max()
    start = last - dt.timedelta(days=24)
    while start.weekday() != 0:
        start -= dt.timedelta(days=1)
    plant_to = start + dt.timedelta(days=4)  # forecasts issued on the first 5 days are 8% high
    box = LocalMailbox()
    settings = ReplaySettings(
        start=start,
        days=14,
        home=tmp_path / "home",
        env={
            "CBI_SOURCE": "files",
            "CBI_MANIFEST": str(manifest),
            "CBI_MONITORING": str(monitoring),
        },
        horizons=("1w",),
        protocol_overrides=SMALL,
        model_kinds=("benchmark", "tree"),
        planted_bias=f"1w:0.08:{start}:{plant_to}",
        restart_at=9,
    )
    settings.smtp = box.start()
    try:
        report = run_replay(settings, io.StringIO(), DagsterReplayDriver)
    finally:
        box.stop()
    accuracy = report.alerts.filter(pl.col("key") == "accuracy/1w")
    # Caught once (after 3 biased forecasts matured) and resolved once (after clean ones did).
    assert accuracy["event"].to_list() == ["fired", "resolved"], format_report(report)
    fired, resolved = accuracy["as_of"].to_list()
    assert start + dt.timedelta(days=7) <= fired < resolved
    subjects = [m["Subject"] for m in box.messages if "accuracy 1w" in m["Subject"]]
    assert [s.split()[2] for s in subjects] == ["FIRING", "RESOLVED"]
    # One retraining run for the horizon, however many ticks and the restart.
    assert [r["horizon"] for r in report.retrains] == ["1w"]
    assert report.retrains[0]["outcome"] == "ok" and report.retrains[0]["day"] == fired
    requested = report.audit.filter(pl.col("action") == "retrain_requested")
    assert requested.height == 1 and report.duplicate_requests == 0
    # The retrained version forecasts in shadow beside the (still served) champion.
    from cbi_platform.serving.store import ForecastStore

    history = ForecastStore(settings.home / "forecasts.duckdb").history()
    shadow = history.filter(pl.col("role") == "shadow")
    assert shadow.height > 0 and set(shadow["model_version"]) == {"cbi-zl-1w/v2"}
    served = history.filter((pl.col("role") == "served") & (pl.col("as_of") >= start))
    assert set(served["model_version"]) == {"cbi-zl-1w/v1"}
    assert served["as_of"].n_unique() == served.height == 14
    assert report.plot is not None and report.plot.stat().st_size > 10_000
    text = format_report(report)
    assert "Retraining runs" in text and "vs random walk" in text
