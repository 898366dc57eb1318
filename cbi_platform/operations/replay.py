"""`cbi replay`: what operating the platform would have done, day by day, over history.

On each simulated business day the replay wraps the configured source so it delivers only what
was published by that day (`market.replay.published_by`), then runs the production code paths
in-process: the daily refresh (ingest, features, served and shadow forecasts, validation, drift,
correlation breaks, shadow comparison, with their checks), the alert sensor and the retraining
sensor (each ticked twice a day: the second tick must change nothing), and any retraining run the
sensor requests (market data and the requested horizon's pipeline). Halfway through, the
"daemon" restarts: sensor state is read back from disk, as Dagster reads a sensor's cursor from
its storage. Alerts go to a real SMTP server.

The replay is orchestrator-free: it runs the pipeline through a `ReplayDriver` it is given (the
Dagster one is `cbi_platform.replay_driver.DagsterReplayDriver`), so this layer never imports the
Dagster wiring above it.

It begins from a champion trained on data up to the day before `start`. If that version fails
the promotion gates it is promoted by the replay (an audit row says so and names the gates),
because operating needs a champion to shadow against.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
import polars as pl

from cbi_platform.settings import HORIZON_KEYS


@dataclass
class ReplaySettings:
    start: dt.date
    days: int
    home: Path
    env: dict[str, str]  # build_resources settings (source, manifest, protocol, ...)
    horizons: tuple[str, ...] = HORIZON_KEYS
    protocol_overrides: dict[str, Any] = field(default_factory=dict)
    model_kinds: tuple[str, ...] | None = None
    planted_bias: str | None = None  # "HORIZON:LOGRET:FROM[:TO]"
    restart_at: int | None = None  # day index of the simulated daemon restart (default: middle)
    smtp: tuple[str, int] | None = None  # a running SMTP server (host, port); None: log only


@dataclass
class ReplayReport:
    days: list[dt.date]
    seconds: float
    alerts: pl.DataFrame  # the alert log (fired / resolved)
    audit: pl.DataFrame  # retrain requests, promotions
    retrains: list[dict[str, Any]]
    duplicate_requests: int  # for a launched key, or on a repeated tick: must be 0
    validation: pl.DataFrame  # served accuracy next to the random walk, per horizon
    timeline: pl.DataFrame  # per day: price, served forecast per horizon, firing conditions
    mails: int | None = None  # mails the SMTP server received (None: no server)
    plot: Path | None = None
    seconds_per_day: list[float] = field(default_factory=list)


def _business_days(start: dt.date, n: int) -> list[dt.date]:
    out, day = [], start
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += dt.timedelta(days=1)
    return out


@dataclass(frozen=True)
class RetrainRequest:
    """A retraining run the retraining sensor asked for (its run key makes it idempotent)."""

    run_key: str
    horizon: str
    tags: dict[str, str]


@dataclass(frozen=True)
class RetrainingTick:
    cursor: str | None
    requests: list[RetrainRequest]


class ReplayDriver(Protocol):
    """What the replay runs each simulated day, on data published by that day: the production
    pipeline, sensors and stores (one orchestrator instance for the whole replay)."""

    def resources(self, through: dt.date) -> Mapping[str, Any]:
        """The configured resources (stores, tracker, source) seeing data published by `through`."""
        ...

    def train_shared(self, through: dt.date, tags: Mapping[str, str]) -> str | None:
        """Market data and the shared assets; the failure's text, or None on success."""
        ...

    def train_horizon(self, through: dt.date, horizon: str, tags: Mapping[str, str]) -> str | None:
        """One horizon's pipeline (registers a version, runs the promotion gates)."""
        ...

    def refresh(self, day: dt.date) -> str | None:
        """The daily refresh with its checks."""
        ...

    def alert_tick(self, day: dt.date) -> None:
        """One tick of the alert sensor."""
        ...

    def retraining_tick(self, day: dt.date, cursor: str | None) -> RetrainingTick:
        """One tick of the retraining sensor from `cursor`."""
        ...


def train(
    driver: ReplayDriver,
    through: dt.date,
    horizons: Sequence[str],
    tags: Mapping[str, str] | None = None,
    say: Callable[[str], None] | None = None,
) -> None:
    """Market data and the horizon pipeline on data published by `through` (registers a
    version per horizon and runs the promotion gates)."""
    tags = dict(tags or {})
    failure = driver.train_shared(through, tags)
    if failure is not None:
        raise RuntimeError(f"replay: market data through {through} failed: {failure}")
    for horizon in horizons:
        started = time.perf_counter()
        failure = driver.train_horizon(through, horizon, tags)
        if say is not None:
            say(f"    trained {horizon} through {through} in {time.perf_counter() - started:.0f}s")
        if failure is not None:
            raise RuntimeError(f"replay: training {horizon} through {through} failed: {failure}")


class _SensorState:
    """The sensors' cursors and launched run keys, on disk (what the daemon keeps in storage)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1))


def run_replay(
    settings: ReplaySettings,
    stream: TextIO,
    driver: Callable[[ReplaySettings], ReplayDriver],
    progress: Callable[[str], None] | None = None,
) -> ReplayReport:
    """Replay `settings.days` business days through the driver `driver(settings)` builds."""
    from cbi_platform.release.control import promote
    from cbi_platform.release.versions import champion_version
    from cbi_platform.tracking import registered_model_name

    say = progress or (lambda line: (stream.write(line + "\n"), stream.flush()))
    started = time.perf_counter()
    settings.home.mkdir(parents=True, exist_ok=True)
    run = driver(settings)
    days = _business_days(settings.start, settings.days)
    before = settings.start - dt.timedelta(days=1)
    say(
        f"replay: training the starting champion on data published by {before} "
        f"({', '.join(settings.horizons)})"
    )
    train(run, before, settings.horizons, say=say)
    resources = run.resources(before)
    tracker = resources["mlflow"].tracker()
    audit = resources["operations"].audit()
    for horizon in settings.horizons:
        name = registered_model_name(horizon)
        if champion_version(tracker, horizon) is None:
            version = tracker.latest_version(name)
            failed = json.loads(tracker.version_tags(name, version).get("failed_gates", "[]"))
            promote(
                tracker,
                audit,
                horizon,
                version,
                actor="replay",
                reason="replay starts from the version trained to its start date; it failed "
                f"the gates: {'; '.join(failed) or 'none recorded'}",
                force=True,  # it serves provisional, flagged with its gates (issue 18)
            )
            say(
                f"  {horizon}: v{version} failed the gates ({len(failed)}); promoted to start, "
                "served provisional"
            )
    state = _SensorState(settings.home / "replay_sensor_state.json")
    restart_at = settings.restart_at if settings.restart_at is not None else len(days) // 2
    retrains: list[dict[str, Any]] = []
    duplicates = 0
    per_day: list[float] = []
    timeline = []
    for i, day in enumerate(days):
        t0 = time.perf_counter()
        if i == restart_at:
            say(f"  {day}: daemon restart (sensor state re-read from disk)")
            state = _SensorState(state.path)
        resources = run.resources(day)
        failure = run.refresh(day)
        if failure is not None:
            say(f"  {day}: refresh failed: {failure}")
        launched = set(state.data.get("launched", []))
        requests = []
        for tick in range(2):  # a second tick must change nothing
            run.alert_tick(day)
            out = run.retraining_tick(day, state.data.get("cursor:retraining_sensor"))
            state.data["cursor:retraining_sensor"] = out.cursor
            for request in out.requests:
                if request.run_key in launched:
                    duplicates += 1
                    continue
                launched.add(request.run_key)
                requests.append(request)
            if tick == 1 and out.requests:
                duplicates += len(out.requests)
        state.data["launched"] = sorted(launched)
        state.save()
        for request in requests:
            horizon = request.horizon
            say(f"  {day}: retraining {horizon} ({request.tags.get('cbi/retrain_reason')})")
            r0 = time.perf_counter()
            try:
                train(
                    run,
                    day,
                    [horizon],
                    tags={"cbi/run_key": request.run_key, **request.tags},
                    say=say,
                )
                outcome = "ok"
            except RuntimeError as exc:
                outcome = str(exc)
            retrains.append(
                {
                    "day": day,
                    "horizon": horizon,
                    "run_key": request.run_key,
                    "seconds": round(time.perf_counter() - r0, 1),
                    "outcome": outcome,
                }
            )
        per_day.append(time.perf_counter() - t0)
        timeline.append(_timeline_row(day, resources, settings.horizons))
        firing = [
            c.key
            for c in resources["operations"].conditions().latest()
            if c.firing and c.as_of == day
        ]
        say(
            f"  day {i + 1}/{len(days)} {day}: {per_day[-1]:.1f}s"
            f"{'; firing: ' + ', '.join(firing) if firing else ''}"
        )
    ops = resources["operations"]
    history = resources["forecast_store"].store().history()
    from cbi_platform.market.schema import target_series
    from cbi_platform.operations.validation import score_matured, summary

    prices = ops_target = None
    bundle_resources = run.resources(days[-1])
    prices = bundle_resources["market_source"].load().prices
    ops_target = target_series(prices, bundle_resources["market_source"].target())
    window = history.filter(pl.col("as_of") >= settings.start) if history.height else history
    scored = score_matured(window, ops_target.select("date", "value"), role="served")
    report = ReplayReport(
        days=days,
        seconds=time.perf_counter() - started,
        alerts=ops.alert_book().log(),
        audit=ops.audit().rows(),
        retrains=retrains,
        duplicate_requests=duplicates,
        validation=summary(scored, ["horizon"]) if scored.height else pl.DataFrame(),
        timeline=pl.DataFrame(timeline, infer_schema_length=None),
        seconds_per_day=per_day,
    )
    report.plot = timeline_plot(report, ops_target, settings.home / "replay_timeline.png")
    return report


def _timeline_row(day: dt.date, resources: dict, horizons: Sequence[str]) -> dict[str, Any]:
    latest = resources["forecast_store"].store().history("served")
    today = latest.filter(pl.col("as_of") == day) if latest.height else latest
    row: dict[str, Any] = {"day": day}
    for h in horizons:
        match = today.filter(pl.col("horizon") == h) if today.height else today
        row[f"forecast_{h}"] = match["forecast"][-1] if match.height else None
        row["price"] = match["price"][-1] if match.height else row.get("price")
    return row


def timeline_plot(report: ReplayReport, target: pl.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = report.days
    prices = target.filter((pl.col("date") >= days[0]) & (pl.col("date") <= days[-1]))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.plot(
        prices["date"].to_list(),
        prices["value"].to_list(),
        color="black",
        lw=1.2,
        label="target close",
    )
    tl = report.timeline
    for column in [c for c in tl.columns if c.startswith("forecast_")][:2]:
        ax.plot(
            tl["day"].to_list(),
            tl[column].to_list(),
            lw=0.9,
            alpha=0.8,
            label=f"served {column.removeprefix('forecast_')} forecast (issued that day)",
        )
    lo, hi = ax.get_ylim()
    for r in report.alerts.iter_rows(named=True) if report.alerts.height else []:
        color = "tab:red" if r["event"] == "fired" else "tab:green"
        ax.axvline(r["as_of"], color=color, lw=0.8, alpha=0.6)
        ax.text(
            r["as_of"],
            hi,
            f" {r['event']} {r['key']}",
            rotation=90,
            va="top",
            fontsize=6,
            color=color,
        )
    for r in report.retrains:
        ax.axvline(r["day"], color="tab:blue", ls="--", lw=1)
        ax.text(
            r["day"],
            lo,
            f" retrain {r['horizon']}",
            rotation=90,
            va="bottom",
            fontsize=7,
            color="tab:blue",
        )
    ax.set_title(
        f"Replay {days[0]} .. {days[-1]}: alerts (red fired, green resolved), retrains (blue)"
    )
    ax.legend(loc="upper left", fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def alert_sequence_violations(alerts: pl.DataFrame) -> int:
    """Events that break fired -> resolved -> fired ... per key (a duplicate alert): must be 0."""
    violations = 0
    if alerts.height == 0:
        return 0
    for _, rows in alerts.sort("seq").group_by("key", maintain_order=True):
        expected = "fired"
        for event in rows["event"].to_list():
            if event != expected:
                violations += 1
            expected = "resolved" if event == "fired" else "fired"
    return violations


def format_report(report: ReplayReport) -> str:
    from cbi_platform.reporting import markdown_table

    lines = [
        f"Replay {report.days[0]} .. {report.days[-1]}: {len(report.days)} business days in "
        f"{report.seconds:.0f}s (median {np.median(report.seconds_per_day):.1f}s a day)",
        "",
        "Alerts (fired / resolved):",
    ]
    if report.alerts.height:
        lines.append(
            markdown_table(report.alerts.select("as_of", "event", "key", "title", "delivered"))
        )
    else:
        lines.append("none")
    lines += ["", "Retraining runs:"]
    lines += [
        f"- {r['day']} {r['horizon']} ({r['seconds']}s): {r['outcome']}" for r in report.retrains
    ] or ["none"]
    lines += ["", "Audit (promotions, rollbacks, retrain requests):"]
    if report.audit.height:
        cols = [
            c
            for c in ("at", "horizon", "action", "from_version", "to_version", "actor", "reason")
            if c in report.audit.columns
        ]
        lines.append(markdown_table(report.audit.select(cols)))
    else:
        lines.append("none")
    lines += [
        "",
        f"Duplicate run requests (repeated ticks, daemon restart): {report.duplicate_requests}",
        f"Alerts out of sequence (a second 'fired' before 'resolved'): "
        f"{alert_sequence_violations(report.alerts)}",
    ]
    if report.mails is not None:
        lines.append(f"Mails received by the SMTP server: {report.mails}")
    lines += ["", "Served accuracy on matured forecasts issued in the replay (vs random walk):"]
    if report.validation.height:
        lines.append(markdown_table(report.validation.with_columns(pl.col(pl.Float64).round(4))))
    else:
        lines.append("no forecast matured inside the replay")
    if report.plot:
        lines += ["", f"Timeline plot: {report.plot}"]
    return "\n".join(lines)
