"""Operating characteristics of every monitor: false alarms per 100 business days on fault-free
days, detection rate and delay for planted faults of stated size; the thresholds chosen on the
development period by a rule written before the run, then reported on the scored period.

Usage: .venv/bin/python benchmarks/monitors.py [--seeds 20] [--trials 3] [--workers 2]
           [--real] [--label NAME]

What runs (see `cbi_platform/operations/characteristics.py` for the definitions):
1. Per simulator seed (and the real ZL with --real): the daily decision series of 1w and 1m
   (`procurement.decision_series`, the walk-forward state at the latest origin, its zones laid
   around each day's forecast) from a small zoo: random walk, random walk with drift, ridge
   (the full zoo takes ~20 CPU minutes a horizon: 20 seeds would take a day). The monitors
   judge what the served series did, so a smaller zoo changes the size of the errors they see,
   not how they judge them. Cached in .cbi_cache/monitors/ by seed and code.
2. Fault-free: every monitor over every business day of the development and scored periods;
   false alarms = episodes opening on days outside every fault window (the simulator's regime
   windows and correlation breaks, each with a tail of 63 business days; for the real ZL the
   documented shocks in REAL_FAULT_WINDOWS).
3. Planted: each fault of `FAULTS` at `--trials` random start days per seed and period (not
   inside a fault window), lasting to the end of the trial; drift segments start at a served
   version trained 20 business days before the fault (the daily run compares with the training
   window). Market faults: the simulator's correlation breaks and regime switches.
   Drift states (features, predictions) carry the daily run's minimum episode
   (`drift.hold_episodes`: open at least `min_episode_days` judgement days). The real ZL's
   fault days come from a fixed seed, so a re-run plants the same faults.
4. Thresholds: for accuracy and coverage, the candidate levels in CANDIDATES are replayed
   (`hysteresis.states` on the same statistic series). The selection rule, written first:
   at most 0.8 false alerts per 100 business days per monitor (one per 125) on the development
   period's fault-free days, pooled over seeds; among those, the highest detection rate within
   10 business days of the faults the monitor is expected to catch, then the shorter median
   delay, then the higher (more conservative) level. The scored period is reported, not used.
Results: benchmarks/results/monitors_<label>.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import sys
import time
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402

from cbi_platform.features.contract import feature_columns  # noqa: E402
from cbi_platform.operations import characteristics as oc  # noqa: E402
from cbi_platform.operations import drift  # noqa: E402
from cbi_platform.operations.correlation import (  # noqa: E402
    CorrelationSettings,
    monitor_correlations,
)
from cbi_platform.operations.daily import stale_condition  # noqa: E402
from cbi_platform.operations.hysteresis import Hysteresis  # noqa: E402
from cbi_platform.operations.validation import ValidationSettings  # noqa: E402
from cbi_platform.reporting import markdown_table  # noqa: E402

HORIZONS = {"1w": 5, "1m": 21}
ZOO = ("random_walk", "random_walk_drift", "ridge")
CACHE = ROOT / ".cbi_cache" / "monitors"
DEFAULT_SEED = 20240601
TAIL = 63  # business days after a window's end still counted inside it
WITHIN = 10  # the detection target, business days
HORIZON_DAYS = 60  # a trial's length after the observable day
BUDGET_PER_100 = 0.8  # false alerts per 100 business days per monitor (1 per 125)
FACTORS = (99.0, 3.0, 2.5, 2.0, 1.75, 1.5, 1.35, 1.25)  # single-feature KS / threshold; 99: off
DRIFT_EVERY = 2  # feature drift judged every 2nd business day (CPU: ~0.15 s a judgement)
DRIFT_TRAINED_BEFORE = 20
# A fault starts at least this many served days into the series: the prediction-drift reference
# (the served predictions before training) and the outcome monitors' windows need a history.
# Feature drift reads features from before the series (they start in 2000 on the simulator).
BEFORE = 300  # business days between the served version's training end and a fault
# Real ZL: days that are NOT fault-free, written before the run. Each is a documented shock in
# the soybean-oil market (the monitors should speak there; an alert there is neither a false
# alarm nor a planted detection): the 2008 commodity crash and its recovery; the COVID crash
# and the 2020 recovery; the 2021-22 vegetable-oil bull with the Indonesian palm export ban and
# the war in Ukraine; the June 2023 RFS final rule and its repricing.
REAL_FAULT_WINDOWS = (
    ("gfc_crash", dt.date(2008, 7, 1), dt.date(2009, 6, 30)),
    ("covid_crash", dt.date(2020, 2, 20), dt.date(2020, 12, 31)),
    ("veg_oil_bull_war", dt.date(2021, 1, 1), dt.date(2022, 12, 31)),
    ("rfs_final_rule", dt.date(2023, 6, 1), dt.date(2023, 9, 30)),
)
# Candidate levels (fire, clear), min episode: the same clear distance for every candidate.
CANDIDATES = {
    "accuracy": [(f, round(f - 0.10, 2), 5) for f in (1.10, 1.15, 1.20, 1.30, 1.40, 1.50)],
    "coverage": [(m, round(m - 0.05, 2), 5) for m in (0.10, 0.15, 0.20, 0.25, 0.30)],
}


# ---- the worlds ------------------------------------------------------------------------------


def _code_key() -> str:
    files = [
        ROOT / "cbi_platform" / p
        for p in (
            "procurement/decision_series.py",
            "evaluation/horizon_run.py",
            "ensemble/zone_methods.py",
            "ensemble/combiners.py",
            "features/build.py",
            "protocol.yaml",
        )
    ]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def _band_90(series: pl.DataFrame) -> pl.DataFrame:
    """lo90 / hi90 read from each day's served CDF knots (daily_coverage.py's reading)."""
    from daily_coverage import band_90_from_cdf

    return band_90_from_cdf(series).drop("p10_check", "p90_check", "cdf_logret", "cdf_prob")


def load_prices(source: str):
    """(prices, target symbol, fault windows) of a source: "seed:<n>" or "real"."""
    if source == "real":
        from cbi_platform.market.files import load_files_source
        from cbi_platform.market.manifest import load_manifest

        manifest = ROOT / "manifests" / "shared_data.yaml"
        prices = load_files_source(manifest).prices
        windows = [(n, "market", s, e) for n, s, e in REAL_FAULT_WINDOWS]
        return prices, load_manifest(manifest).target, windows
    from cbi_platform.market.simulator import DEFAULT_CONFIG, simulate_market

    config = dataclasses.replace(DEFAULT_CONFIG, seed=int(source.split(":")[1]))
    bundle = simulate_market(config)
    windows = [(w.name, "regime_switch", w.start, w.end) for w in config.regimes]
    seen = set()
    for o in config.loading_overrides:
        if o.name.endswith("_break") and o.name not in seen:
            seen.add(o.name)
            windows.append((o.name, "correlation_break", o.start, o.end))
    return bundle.prices, bundle.target, windows


def build_world(source: str) -> dict:
    """The cached decision series (1w, 1m), closes, 1w features and the correlation frames."""
    from cbi_platform.evaluation import horizon_run
    from cbi_platform.evaluation.origins import DEVELOPMENT
    from cbi_platform.evaluation.volatility_eval import (
        best_volatility_model,
        score_volatility,
        volatility_walk_forward,
    )
    from cbi_platform.features.build import build_features
    from cbi_platform.procurement.decision_series import build_decision_series
    from cbi_platform.regimes.detected import label_regimes
    from cbi_platform.settings import load_protocol

    warnings.filterwarnings("ignore")
    folder = CACHE / f"{source.replace(':', '_')}_{_code_key()}"
    prices, symbol, windows = load_prices(source)
    target = prices.filter(pl.col("symbol") == symbol).sort("date")
    closes = target.select(pl.col("date").cast(pl.Date), pl.col("value").cast(pl.Float64))
    t0 = time.perf_counter()
    if not (folder / "features_1w.parquet").exists():
        folder.mkdir(parents=True, exist_ok=True)
        protocol = load_protocol()
        history = closes.rename({"value": "price"})
        regimes = label_regimes(target["date"], target["value"].to_numpy())
        cfg = horizon_run.ProtocolConfig(protocol, n_workers=1)
        plan = horizon_run.origin_plan(target["date"], "1w", cfg)
        vol = volatility_walk_forward(target["value"].to_numpy(), plan, HORIZONS)
        for h in HORIZONS:
            frame = build_features(prices, h, target=symbol).frame
            specs = [s for s in horizon_run.zoo_specs(h) if s.name in ZOO]
            oof, _, _ = horizon_run.member_predictions(frame, regimes, h, cfg, specs=specs)
            vol_model = best_volatility_model(score_volatility(vol, role=DEVELOPMENT), h)
            ctx = horizon_run.context_frame(regimes, vol, h, vol_model)
            ens = horizon_run.ensemble_step(oof, ctx, cfg)
            zones = horizon_run.zones_step(
                oof, ens.forecasts, ctx, protocol.zone_method, history=history, features=frame
            )
            series, _ = build_decision_series(
                frame,
                oof,
                ens.forecasts,
                ens.member_weights,
                zones,
                regimes,
                ctx,
                h,
                cfg,
                start_window=DEVELOPMENT,
                specs=specs,
            )
            _band_90(series).write_parquet(folder / f"series_{h}.parquet")
            if h == "1w":
                frame.write_parquet(folder / "features_1w.parquet")
    series = {h: pl.read_parquet(folder / f"series_{h}.parquet") for h in HORIZONS}
    features = pl.read_parquet(folder / "features_1w.parquet")
    corr = monitor_correlations(prices, target=symbol, settings=CorrelationSettings())
    return {
        "source": source,
        "series": series,
        "closes": closes,
        "features": features,
        "correlation": {k: v for k, v in corr.items() if not v.skipped},
        "windows": windows,
        "build_seconds": time.perf_counter() - t0,
    }


# ---- evaluation ------------------------------------------------------------------------------


def _periods(series: pl.DataFrame) -> dict[str, tuple[dt.date, dt.date]]:
    out = {}
    for period in ("development", "scored"):
        part = series.filter(pl.col("window") == period)
        if part.height:
            out[period] = (part["date"].min(), part["date"].max())
    return out


def _achieved(series: pl.DataFrame, closes: pl.DataFrame, h_days: int, dev_end: dt.date) -> float:
    """The served zones' 90% coverage on development days: "achieved in validation"."""
    cal = closes["date"].to_list()
    hist = oc.history_from_series(series.filter(pl.col("date") <= dev_end), cal, h_days)
    joined = hist.join(
        closes.rename({"date": "target_date", "value": "actual"}), on="target_date", how="inner"
    ).filter(pl.col("lo90").is_not_null())
    hit = (pl.col("lo90") <= pl.col("actual")) & (pl.col("actual") <= pl.col("hi90"))
    return float(joined.select(hit.mean()).item())


def _rules(candidate: dict[str, tuple], achieved: float) -> dict[str, Hysteresis]:
    fire, clear, days = candidate["accuracy"]
    margin, clear_margin, cdays = candidate["coverage"]
    cov = Hysteresis(achieved - margin - 1e-9, achieved - clear_margin, cdays, "below")
    return {
        "accuracy": Hysteresis(fire + 1e-9, clear, days, "above"),
        "coverage": cov,
        "regime_coverage": cov,
    }


def _candidates() -> list[dict[str, tuple]]:
    """Every accuracy level with the default coverage level and vice versa (the two monitors
    are chosen separately: neither one's states depend on the other's levels)."""
    default = {"accuracy": (1.15, 1.05, 5), "coverage": (0.10, 0.05, 5)}
    out = [default]
    for level in CANDIDATES["accuracy"]:
        out.append({**default, "accuracy": level})
    for level in CANDIDATES["coverage"]:
        out.append({**default, "coverage": level})
    unique = []
    for c in out:
        if c not in unique:
            unique.append(c)
    return unique


def _candidate_key(c: dict) -> str:
    return json.dumps(c, sort_keys=True)


def _starts(days: np.ndarray, period: tuple, excluded: np.ndarray, n: int, rng, before: int):
    """`n` random fault-start indices inside `period`, at least `before` days into the series,
    with HORIZON_DAYS + 42 days after them inside the period and outside every fault window."""
    lo = max(oc.business_day_index(days, period[0]), before)
    hi = oc.business_day_index(days, period[1]) - HORIZON_DAYS - 21 - 21
    ok = [i for i in range(lo, max(lo, hi)) if not excluded[i : i + HORIZON_DAYS + 22].any()]
    if not ok:
        return []
    return [int(i) for i in rng.choice(ok, size=min(n, len(ok)), replace=False)]


def _drift_states(
    frame: pl.DataFrame,
    names: list[str],
    trained: int,
    days: np.ndarray,
    first: int,
    last: int,
    settings: drift.DriftSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature drift on days first..last for a version trained through day `trained`: the
    daily run's rule (reference = rows up to training, current = rows after it, judged from
    `min_rows` rows): (the share rule's state, the largest KS / threshold of one feature)."""
    dates = frame["date"].to_numpy().astype("datetime64[D]")
    t_end = np.searchsorted(dates, days[trained], side="right")
    start = max(0, t_end - settings.reference_rows)
    reference = frame.slice(start, t_end - start)
    share = np.zeros(last - first + 1, dtype=bool)
    ratio = np.zeros(last - first + 1)
    calibration: dict = {}
    for k, i in enumerate(range(first, last + 1)):
        if k % DRIFT_EVERY and k < last - first:  # judged every DRIFT_EVERY days (and the last)
            share[k], ratio[k] = share[k - 1], ratio[k - 1]
            continue
        d_end = np.searchsorted(dates, days[i], side="right")
        current = frame.slice(t_end, d_end - t_end).tail(settings.current_rows)
        if current.height < settings.min_rows:
            continue
        table = drift.feature_drift(reference, current, names, settings, calibration)
        (condition,) = drift.drift_conditions("1w", days[i].item(), table, None, None, settings)
        share[k] = "features" in condition.evidence["fired"]
        ratio[k] = condition.evidence["features"]["max_ratio"] or 0.0
    return share, ratio


def _held(state: np.ndarray, settings: drift.DriftSettings) -> np.ndarray:
    """A drift monitor's daily state with the daily run's minimum episode
    (`drift.hold_episodes`, `min_episode_days` judgement days)."""
    return oc.hold_min_episode(state, settings.min_episode_days)


def _prediction_states(
    logrets: np.ndarray, trained: int, first: int, last: int, settings: drift.DriftSettings
) -> np.ndarray:
    """Prediction-drift state on days first..last for a version trained through `trained`
    (the served predicted log returns before it are the reference)."""
    reference = logrets[max(0, trained + 1 - settings.reference_rows) : trained + 1]
    out = np.zeros(last - first + 1, dtype=bool)
    for k, i in enumerate(range(first, last + 1)):
        current = logrets[trained + 1 : i + 1][-settings.current_rows :]
        if current.size < settings.min_rows:
            continue
        out[k] = bool(drift.prediction_drift(reference, current, settings).get("drifted"))
    return out


def evaluate(source: str, trials: int, real_trials: int = 15) -> dict:
    """Every record of one world: false-alarm counts and detections per candidate."""
    t0 = time.perf_counter()
    world = build_world(source)
    built = time.perf_counter() - t0
    # zlib.crc32, not hash(): str hashes change from process to process, and the real ZL's
    # fault days must be the same in every run.
    rng = np.random.default_rng(
        zlib.crc32(source.encode()) if source == "real" else int(source.split(":")[1]) + 7
    )
    closes, series = world["closes"], world["series"]
    calendar = closes["date"].to_list()
    days = series["1w"]["date"].to_numpy().astype("datetime64[D]")
    periods = _periods(series["1w"])
    windows = world["windows"]
    excluded = oc.window_mask(
        days,
        [(s, e + dt.timedelta(days=int(TAIL * 7 / 5))) for _, _, s, e in windows],
    )
    regime_by_day = dict(
        zip(series["1w"]["date"].to_list(), series["1w"]["regime"].to_list(), strict=True)
    )
    achieved = {
        h: _achieved(series[h], closes, d, periods["development"][1]) for h, d in HORIZONS.items()
    }
    candidates = _candidates()
    settings = ValidationSettings()
    records: list[dict] = []
    if source == "real":  # one real history: more trials on it than on each simulated seed
        trials = real_trials

    def period_of(i: int) -> str | None:
        for name, (a, b) in periods.items():
            if np.datetime64(a, "D") <= days[i] <= np.datetime64(b, "D"):
                return name
        return None

    def fa_record(period, monitor, candidate, alarms, n_days):
        records.append(
            {
                "kind": "fa",
                "period": period,
                "monitor": monitor,
                "candidate": candidate,
                "alarms": alarms,
                "days": n_days,
            }
        )

    def add_fa(monitor, state, candidate="*"):
        for name, (a, b) in periods.items():
            inside = (days >= np.datetime64(a, "D")) & (days <= np.datetime64(b, "D"))
            free = inside & ~excluded
            opened = [i for i in oc.opened(state) if free[i]]
            fa_record(name, monitor, candidate, len(opened), int(free.sum()))

    trial = {"id": None}  # the trial the next detection records belong to

    def add_detection(fault, monitor, state, start, observable, candidate="*", period=None):
        found, delay, from_start = False, None, None
        for i in oc.opened(state):
            if i < start:
                continue
            if i - observable > HORIZON_DAYS:
                break
            found, delay, from_start = True, max(0, int(i - observable)), int(i - start)
            break
        records.append(
            {
                "kind": "det",
                "period": period or period_of(start),
                "fault": fault,
                "monitor": monitor,
                "candidate": candidate,
                "detected": found,
                "delay": delay,
                "from_start": from_start,
                "trial": trial["id"],
            }
        )

    # 1. Outcome monitors, fault-free, every candidate.
    clean_frames = {
        h: oc.outcome_frames(series[h], closes, calendar, d, achieved[h], settings)
        for h, d in HORIZONS.items()
    }
    for candidate in candidates:
        key = _candidate_key(candidate)
        for h in HORIZONS:
            st = oc.outcome_states(
                clean_frames[h], regime_by_day, days, _rules(candidate, achieved[h])
            )
            for m, state in st.items():
                add_fa(f"{m}/{h}", state, key)

    # 2. Input monitors, fault-free: correlation (whole history), stale data (every weekday).
    for res in world["correlation"].values():
        frame = res.frame.select("date", "breaking")
        state = oc._state_by_day(days, frame["date"], frame["breaking"])
        add_fa("correlation_break", state)
    weekdays = np.arange(days[0], days[-1] + 1, dtype="datetime64[D]")
    weekdays = weekdays[np.is_busday(weekdays)]
    close_days = closes["date"].to_numpy().astype("datetime64[D]")
    last_close = close_days[np.searchsorted(close_days, weekdays, side="right") - 1]
    behind = np.busday_count(last_close, weekdays)
    stale_state_weekdays = behind > 2
    # count on weekdays (a stale episode can open on a day with no close)
    for name, (a, b) in periods.items():
        inside = (weekdays >= np.datetime64(a, "D")) & (weekdays <= np.datetime64(b, "D"))
        wx = oc.window_mask(weekdays, [(s, e) for _, _, s, e in windows])
        free = inside & ~wx
        opened = [i for i in oc.opened(stale_state_weekdays) if free[i]]
        fa_record(name, "stale_data", "*", len(opened), int(free.sum()))

    # 3. Drift, fault-free segments: a version trained at a random day, judged 60 days.
    dsettings = drift.DriftSettings()
    features = world["features"].sort("date")
    names = feature_columns(features)
    logrets = {
        h: np.log(series[h]["forecast"].to_numpy() / series[h]["price"].to_numpy())
        for h in HORIZONS
    }
    for name, period in periods.items():
        for s in _starts(days, period, excluded, trials, rng, before=BEFORE):
            trained = s - DRIFT_TRAINED_BEFORE
            last = min(days.size - 1, s + HORIZON_DAYS)
            share, ratio = _drift_states(features, names, trained, days, s, last, dsettings)
            pd_ = _held(_prediction_states(logrets["1w"], trained, s, last, dsettings), dsettings)
            judged = [("prediction_drift", pd_, "*")] + [
                ("feature_drift", _held(share | (ratio > factor), dsettings), f"factor:{factor}")
                for factor in FACTORS
            ]
            for monitor, state, candidate in judged:
                opened = list(oc.opened(np.concatenate([[False], state])))
                fa_record(name, monitor, candidate, len(opened), int(state.size))

    # 4. Planted faults.
    actuals = {}
    for h, d in HORIZONS.items():
        hist = oc.history_from_series(series[h], calendar, d)
        actuals[h] = hist.join(
            closes.rename({"date": "target_date", "value": "actual"}), on="target_date", how="left"
        ).select(pl.col("as_of").alias("date"), "actual")
    for fault in oc.FAULTS:
        for name, period in periods.items():
            for s in _starts(days, period, excluded, trials, rng, before=BEFORE):
                trial["id"] = f"{source}|{fault.name}|{name}|{s}"
                start_day = days[s].item()
                last = min(days.size - 1, s + HORIZON_DAYS + 21 + 1)
                window_days = days[s - 1 : last + 1]
                if fault.kind in ("bias", "error_scale", "zone_width"):
                    planted = {
                        h: oc.plant_forecasts(series[h], fault, start_day, actuals[h])
                        for h in HORIZONS
                    }
                    for h, d in HORIZONS.items():
                        frames = oc.outcome_frames(
                            planted[h], closes, calendar, d, achieved[h], settings
                        )
                        for candidate in candidates:
                            st = oc.outcome_states(
                                frames, regime_by_day, window_days, _rules(candidate, achieved[h])
                            )
                            for m, state in st.items():
                                add_detection(
                                    fault.name,
                                    f"{m}/{h}",
                                    state,
                                    1,
                                    1 + d,
                                    _candidate_key(candidate),
                                    name,
                                )
                    plog = np.log(
                        planted["1w"]["forecast"].to_numpy() / planted["1w"]["price"].to_numpy()
                    )
                    pd_ = _held(
                        _prediction_states(plog, s - DRIFT_TRAINED_BEFORE, s, last, dsettings),
                        dsettings,
                    )
                    add_detection(
                        fault.name,
                        "prediction_drift",
                        np.concatenate([[False], pd_]),
                        1,
                        1,
                        period=name,
                    )
                elif fault.kind == "feature_shift":
                    trained = s - DRIFT_TRAINED_BEFORE
                    dates = features["date"].to_numpy().astype("datetime64[D]")
                    t_end = np.searchsorted(dates, days[trained], side="right")
                    ref = features.slice(
                        max(0, t_end - dsettings.reference_rows),
                        min(t_end, dsettings.reference_rows),
                    )
                    usable = [
                        n
                        for n in names
                        if ref[n].drop_nulls().len() >= dsettings.min_rows
                        and ref[n].std() not in (None, 0.0)
                    ]
                    feature = usable[int(rng.integers(len(usable)))]
                    shifted = oc.plant_feature(
                        features, feature, float(ref[feature].std()), fault.size, start_day
                    )
                    share, ratio = _drift_states(
                        shifted, names, trained, days, s, min(last, s + HORIZON_DAYS), dsettings
                    )
                    for factor in FACTORS:
                        held = _held(share | (ratio > factor), dsettings)
                        state = np.concatenate([[False], held])
                        add_detection(
                            fault.name, "feature_drift", state, 1, 1, f"factor:{factor}", name
                        )
                elif fault.kind == "stale_feed":
                    truncated = closes.filter(pl.col("date") < start_day)
                    state = np.zeros(window_days.size, dtype=bool)
                    for k, day in enumerate(window_days[1:], start=1):
                        state[k] = stale_condition(truncated, day.item(), 2).firing
                    add_detection(fault.name, "stale_data", state, 1, 1, period=name)

    # 5. Market faults (simulator): correlation breaks, regime switches.
    for wname, kind, start, _end in windows:
        if kind not in oc.MARKET_FAULTS:
            continue
        s = oc.business_day_index(days, start)
        trial["id"] = f"{source}|{kind}|{wname}"
        if s <= 0 or s >= days.size - 1:
            continue
        period = period_of(s)
        if period is None:
            continue
        last = min(days.size - 1, s + HORIZON_DAYS + 21 + 1)
        window_days = days[s - 1 : last + 1]
        if kind == "correlation_break":
            pair = "soy_crude" if "crude" in wname else "soy_palm"
            res = world["correlation"].get(pair)
            if res is None:
                continue
            frame = res.frame.select("date", "breaking")
            state = oc._state_by_day(window_days, frame["date"], frame["breaking"])
            # A break's monitor reads 42-day correlations: allow the full trial (no 10-day target).
            add_detection(kind, "correlation_break", state, 1, 1, period=period)
        else:
            for h, d in HORIZONS.items():
                for candidate in candidates:  # every candidate level, as the planted faults
                    rules = _rules(candidate, achieved[h])
                    st = oc.outcome_states(clean_frames[h], regime_by_day, window_days, rules)
                    for m, state in st.items():
                        add_detection(
                            kind, f"{m}/{h}", state, 1, 1 + d, _candidate_key(candidate), period
                        )
    return {
        "source": source,
        "records": records,
        "achieved": achieved,
        "seconds": time.perf_counter() - t0,
        "build_seconds": built,
    }


COVID = (dt.date(2020, 2, 18), dt.date(2020, 5, 11))  # the real-ZL replay's 60 business days
VERDICT_AFTER = 20  # business days


def covid_alerts(config) -> pl.DataFrame:
    """Every alert the frozen monitors (`config`, monitoring.yaml) open on the real ZL inside
    COVID, with its evidence and a verdict by the rule written before the run: an alert is TRUE
    when, VERDICT_AFTER business days after it opened, its statistic computed on the outcomes
    matured by then is still beyond its fire level (accuracy: rolling rel MAE above the alert
    level; coverage: rolling 90% coverage below achieved - margin; regime coverage: the
    regime's cumulative coverage below it; a correlation break: still outside its band;
    stale data: still behind); FALSE otherwise."""
    world = build_world("real")
    closes, series = world["closes"], world["series"]
    calendar = closes["date"].to_list()
    periods = _periods(series["1w"])
    days = series["1w"]["date"].to_numpy().astype("datetime64[D]")
    regime_by_day = dict(
        zip(series["1w"]["date"].to_list(), series["1w"]["regime"].to_list(), strict=True)
    )
    v = config.validation
    rows = []
    lo, hi = (np.datetime64(d, "D") for d in COVID)
    for h, d in HORIZONS.items():
        achieved = _achieved(series[h], closes, d, periods["development"][1])
        frames = oc.outcome_frames(series[h], closes, calendar, d, achieved, v)
        states = oc.outcome_states(frames, regime_by_day, days)
        stats = {
            "accuracy": (frames["accuracy"], "statistic", v.rel_mae_alert, "above"),
            "coverage": (frames["coverage"], "coverage90", achieved - v.coverage_margin, "below"),
        }
        for monitor, state in states.items():
            for i in oc.opened(state):
                if not lo <= days[i] <= hi:
                    continue
                later = min(days.size - 1, i + VERDICT_AFTER)
                if monitor in stats:
                    frame, column, level, side = stats[monitor]

                    def value_at(k, frame=frame, column=column):
                        part = frame.filter(
                            pl.col("judged") & (pl.col("target_date") <= days[k].item())
                        )
                        return float(part[column][-1]) if part.height else None

                    now, then = value_at(i), value_at(later)
                else:  # regime coverage: the regime current on the day it opened
                    regime = regime_by_day.get(days[i].item())
                    part = frames["regime_coverage"].filter(
                        (pl.col("regime") == regime) & pl.col("judged")
                    )
                    level, side = achieved - v.coverage_margin, "below"

                    def value_at(k, part=part):
                        rows_ = part.filter(pl.col("target_date") <= days[k].item())
                        return float(rows_["coverage90"][-1]) if rows_.height else None

                    now, then = value_at(i), value_at(later)
                holds = then is not None and (then > level if side == "above" else then < level)
                rows.append(
                    {
                        "monitor": f"{monitor}/{h}",
                        "opened": days[i].item(),
                        "statistic": now,
                        "level": round(level, 4),
                        f"statistic_{VERDICT_AFTER}d_later": then,
                        "verdict": "true" if holds else "false",
                    }
                )
    # Drift: the version trained through the day before COVID[0] (as the replay's champion).
    features = world["features"].sort("date")
    names = feature_columns(features)
    trained = oc.business_day_index(days, COVID[0]) - 1
    last = min(days.size - 1, oc.business_day_index(days, COVID[1]) + VERDICT_AFTER)
    share, ratio = _drift_states(features, names, trained, days, trained + 1, last, config.drift)
    factor = config.drift.single_feature_factor or float("inf")
    feature_state = _held(share | (ratio > factor), config.drift)
    logrets = np.log(series["1w"]["forecast"].to_numpy() / series["1w"]["price"].to_numpy())
    pred_state = _held(
        _prediction_states(logrets, trained, trained + 1, last, config.drift), config.drift
    )
    for monitor, state in (
        ("feature_drift/1w", feature_state),
        ("prediction_drift/1w", pred_state),
    ):
        for k in oc.opened(np.concatenate([[False], state])):
            i = trained + k
            if not lo <= days[i] <= hi:
                continue
            then = state[min(state.size - 1, k - 1 + VERDICT_AFTER)]
            rows.append(
                {
                    "monitor": monitor,
                    "opened": days[i].item(),
                    "statistic": float(ratio[k - 1]) if monitor.startswith("feature") else None,
                    "level": factor if monitor.startswith("feature") else None,
                    f"statistic_{VERDICT_AFTER}d_later": float(
                        ratio[min(ratio.size - 1, k - 1 + VERDICT_AFTER)]
                    )
                    if monitor.startswith("feature")
                    else None,
                    "verdict": "true" if bool(then) else "false",
                }
            )
    for pair, res in world["correlation"].items():
        frame = res.frame
        state = oc._state_by_day(days, frame["date"], frame["breaking"])
        for i in oc.opened(state):
            if not lo <= days[i] <= hi:
                continue
            later = days[min(days.size - 1, i + VERDICT_AFTER)].item()
            after = frame.filter(pl.col("date") <= later).tail(1)
            rows.append(
                {
                    "monitor": f"correlation_break/{pair}",
                    "opened": days[i].item(),
                    "statistic": float(frame.filter(pl.col("date") <= days[i].item())["corr"][-1]),
                    "level": None,
                    f"statistic_{VERDICT_AFTER}d_later": float(after["corr"][0]),
                    "verdict": "true" if bool(after["outside"][0]) else "false",
                }
            )
    return (
        pl.DataFrame(rows, infer_schema_length=None).sort("opened", "monitor")
        if rows
        else (pl.DataFrame())
    )


def _one(args):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return evaluate(*args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--real-trials", type=int, default=15)
    parser.add_argument("--label", default="simulated")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--from-records", help="re-write the tables from a saved records file (no evaluation)"
    )
    parser.add_argument(
        "--covid",
        action="store_true",
        help="only list the frozen monitors' alerts on the real ZL across COVID, with verdicts",
    )
    args = parser.parse_args()
    if args.covid:
        from cbi_platform.operations.config import load_monitoring

        table = covid_alerts(load_monitoring())
        text = "\n".join(
            [
                "# Real ZL across COVID: every alert of the frozen monitors, with its verdict",
                "",
                f"{machine_stamp()['date']}. `benchmarks/monitors.py --covid`: the daily decision "
                f"series of the real ZL (small zoo, as the monitors table), {COVID[0]} to "
                f"{COVID[1]}, thresholds as frozen in monitoring.yaml.",
                "",
                "Rule written before the run: an alert is **true** when, "
                f"{VERDICT_AFTER} business days after it opened, its statistic on the outcomes "
                "matured by then is still beyond its fire level (a correlation break: still "
                "outside its band); **false** otherwise.",
                "",
                markdown_table(table) if table.height else "No alert opened.",
                "",
            ]
        )
        path = Path(args.out) / "monitors_shared_data_covid.md"
        path.write_text(text)
        record_run(path)
        print(text)
        return 0
    if args.from_records:
        saved = json.loads(Path(args.from_records).read_text())
        write(args, saved["results"], saved["total"], saved.get("commit"))
        return 0
    started = time.perf_counter()
    sources = [f"seed:{DEFAULT_SEED}"] + [f"seed:{k}" for k in range(1, args.seeds)]
    if args.real:
        if not (ROOT / ".." / "shared" / "data").exists():
            print("skipped --real: ../shared/data is absent")
        else:
            sources.append("real")
    results = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for out in pool.map(_one, [(s, args.trials, args.real_trials) for s in sources]):
            print(
                f"{out['source']}: {out['seconds']:.0f} s (series {out['build_seconds']:.0f} s)",
                flush=True,
            )
            results.append(out)
    total = time.perf_counter() - started
    CACHE.mkdir(parents=True, exist_ok=True)
    saved = CACHE / f"records_{args.label}.json"
    from _machine import git_commit

    saved.write_text(
        json.dumps({"results": results, "total": total, "commit": git_commit()}, default=str)
    )
    print(f"records saved: {saved}", flush=True)
    write(args, results, total)
    return 0


def _records(results) -> pl.DataFrame:
    rows = [
        {**r, "source": out["source"], "data": "real" if out["source"] == "real" else "simulated"}
        for out in results
        for r in out["records"]
    ]
    return pl.DataFrame(rows, infer_schema_length=None)


def _fa_table(rec: pl.DataFrame) -> pl.DataFrame:
    fa = rec.filter(pl.col("kind") == "fa")
    return (
        fa.group_by("candidate", "data", "period", "monitor")
        .agg(pl.col("alarms").sum(), pl.col("days").sum())
        .with_columns(per_100=100.0 * pl.col("alarms") / pl.col("days"))
    )


def _det_table(rec: pl.DataFrame) -> pl.DataFrame:
    det = rec.filter(pl.col("kind") == "det")
    within = pl.col("detected") & (pl.col("delay") <= WITHIN)
    return det.group_by("candidate", "data", "period", "fault", "monitor").agg(
        trials=pl.len(),
        rate=pl.col("detected").mean(),
        rate10=within.mean(),
        median_delay=pl.col("delay").median(),
        p90_delay=pl.col("delay").quantile(0.9, "nearest"),
        median_from_start=pl.col("from_start").median(),
    )


def choose(rec: pl.DataFrame) -> dict:
    """The selection rule of the module docstring, on the development period only, every
    source pooled (the simulator's seeds and the real ZL alike)."""
    pooled = rec.with_columns(data=pl.lit("all"))
    fa, det = _fa_table(pooled), _det_table(pooled)
    chosen, evidence = {}, {}
    for family in ("accuracy", "coverage"):
        levels = [_candidate_key(c) for c in _candidates()]
        faults = [f.name for f in oc.FAULTS if family in f.expected]
        rows = []
        for key in levels:
            level = json.loads(key)[family]
            if any(
                json.loads(r)[family] == level and r != key for r in levels[: levels.index(key)]
            ):
                continue  # the same level of this family already judged
            f = fa.filter(
                (pl.col("candidate") == key)
                & (pl.col("period") == "development")
                & pl.col("monitor").str.starts_with(family)
            )
            worst = float(f["per_100"].max())
            d = det.filter(
                (pl.col("candidate") == key)
                & (pl.col("period") == "development")
                & pl.col("monitor").str.starts_with(family)
                & pl.col("fault").is_in(faults)
            )
            rows.append(
                {
                    "level": level,
                    "worst_fa_per_100": worst,
                    "rate10": float(d["rate10"].mean()),
                    "median_delay": float(d["median_delay"].median()),
                }
            )
        within = [r for r in rows if r["worst_fa_per_100"] <= BUDGET_PER_100]
        pool = within or sorted(rows, key=lambda r: r["worst_fa_per_100"])[:1]
        sign = 1 if family == "accuracy" else 1  # higher level = more conservative for both
        best = sorted(pool, key=lambda r: (-r["rate10"], r["median_delay"], -sign * r["level"][0]))[
            0
        ]
        chosen[family] = tuple(best["level"])
        evidence[family] = {"candidates": rows, "within_budget": bool(within)}
    rows = []
    for factor in FACTORS:
        key = f"factor:{factor}"
        f = fa.filter(
            (pl.col("candidate") == key)
            & (pl.col("period") == "development")
            & (pl.col("monitor") == "feature_drift")
        )
        d = det.filter(
            (pl.col("candidate") == key)
            & (pl.col("period") == "development")
            & (pl.col("monitor") == "feature_drift")
        )
        rows.append(
            {
                "level": [factor],
                "worst_fa_per_100": float(f["per_100"].max()),
                "rate10": float(d["rate10"].mean()),
                "median_delay": float(d["median_delay"].median() or 99),
            }
        )
    within = [r for r in rows if r["worst_fa_per_100"] <= BUDGET_PER_100]
    pool = within or sorted(rows, key=lambda r: r["worst_fa_per_100"])[:1]
    best = sorted(pool, key=lambda r: (-r["rate10"], r["median_delay"], -r["level"][0]))[0]
    chosen["feature_drift"] = tuple(best["level"])
    evidence["feature_drift"] = {"candidates": rows, "within_budget": bool(within)}
    return {"chosen": chosen, "evidence": evidence}


def write(args, results, total, evaluated_on: str | None = None) -> None:
    """The tables. `evaluated_on`: the commit of the evaluation when the tables are re-written
    from saved records (`--from-records`); None when they come from this process's run."""
    rec = _records(results)
    choice = choose(rec)
    # Reports under the chosen levels (their records exist: each level was replayed with the
    # other family's default, and neither family's states depend on the other's levels).
    acc_key = _candidate_key(
        {"accuracy": list(choice["chosen"]["accuracy"]), "coverage": [0.10, 0.05, 5]}
    )
    cov_key = _candidate_key(
        {"accuracy": [1.15, 1.05, 5], "coverage": list(choice["chosen"]["coverage"])}
    )
    default_key = _candidate_key(_candidates()[0])

    def pick(frame: pl.DataFrame, key_for_family) -> pl.DataFrame:
        keep = pl.col("candidate") == "*"
        for family, key in key_for_family.items():
            keep = keep | (pl.col("monitor").str.starts_with(family) & (pl.col("candidate") == key))
        return frame.filter(keep)

    factor_key = f"factor:{choice['chosen']['feature_drift'][0]}"
    chosen_keys = {
        "accuracy": acc_key,
        "coverage": cov_key,
        "regime_coverage": cov_key,
        "feature_drift": factor_key,
    }
    default_keys = {
        "accuracy": default_key,
        "coverage": default_key,
        "regime_coverage": default_key,
        "feature_drift": "factor:99.0",
    }
    fa = _fa_table(rec)
    det = _det_table(rec)
    fa_chosen = pick(fa, chosen_keys)
    fa_default = pick(fa, default_keys)

    def by_period(frame: pl.DataFrame, suffix: str = "") -> pl.DataFrame:
        frame = frame.with_columns(
            column=pl.concat_str("data", pl.lit(" "), "period", pl.lit(suffix))
        )
        return frame.pivot(on="column", index="monitor", values="per_100", sort_columns=True)

    fa_show = (
        by_period(fa_chosen)
        .join(by_period(fa_default, " (before)"), on="monitor", how="left")
        .sort("monitor")
    )
    fa_days = fa_chosen.group_by("data", "period").agg(pl.col("days").max()).sort("data", "period")
    det_show = pick(det, chosen_keys).drop("candidate").sort("data", "period", "fault", "monitor")
    expected = {
        f: oc.expected_monitors(f, list(HORIZONS))
        for f in [x.name for x in oc.FAULTS] + list(oc.MARKET_FAULTS)
    }
    det_show = det_show.with_columns(
        expected=pl.struct("fault", "monitor").map_elements(
            lambda r: r["monitor"] in expected.get(r["fault"], []), return_dtype=pl.Boolean
        )
    )
    # Per fault: the first alert of ANY expected monitor, trial by trial.
    raw = pick(rec.filter(pl.col("kind") == "det"), chosen_keys).with_columns(
        expected=pl.struct("fault", "monitor").map_elements(
            lambda r: r["monitor"] in expected.get(r["fault"], []), return_dtype=pl.Boolean
        )
    )
    per_trial = (
        raw.filter(pl.col("expected"))
        .group_by("data", "period", "fault", "trial")
        .agg(
            detected=pl.col("detected").any(),
            within10=(pl.col("detected") & (pl.col("delay") <= WITHIN)).any(),
            first_from_start=pl.col("from_start").min(),
        )
    )
    by_fault = (
        per_trial.group_by("data", "period", "fault")
        .agg(
            trials=pl.len(),
            rate=pl.col("detected").mean(),
            rate10=pl.col("within10").mean(),
            median_days_from_start=pl.col("first_from_start").median(),
            p90_days_from_start=pl.col("first_from_start").quantile(0.9, "nearest"),
        )
        .sort("data", "period", "fault")
    )
    stamp = machine_stamp()
    label = args.label
    out = Path(args.out)
    payload = {
        "label": label,
        "machine": stamp,
        "seconds_total": round(total, 1),
        "sources": [r["source"] for r in results],
        "seconds_per_source": {r["source"]: round(r["seconds"], 1) for r in results},
        "achieved_coverage90": {r["source"]: r["achieved"] for r in results},
        "trials_per_fault_period_source": args.trials,
        "choice": choice,
        "false_alarms_per_100_days": fa_show.to_dicts(),
        "detection": det_show.to_dicts(),
        "detection_by_fault": by_fault.to_dicts(),
        "faults": [dataclasses.asdict(f) for f in oc.FAULTS],
        "budget_per_100": BUDGET_PER_100,
        "within_target_days": WITHIN,
    }
    (out / f"monitors_{label}.json").write_text(json.dumps(payload, indent=1, default=str))
    lines = [
        f"# Monitors' operating characteristics ({label})",
        "",
        f"{stamp['date']} on {stamp['machine']} ({stamp['cpus']} CPUs, commit {stamp['commit']})."
        f" `benchmarks/monitors.py --seeds {args.seeds} --trials {args.trials}"
        + (" --real" if args.real else "")
        + f"`: {len(results)} sources in {total:.0f} s wall"
        + (
            f" (the evaluation ran on commit {evaluated_on}; these tables were re-written from "
            "its saved records with `--from-records`, so the run line above times the "
            "re-write, not the evaluation)."
            if evaluated_on
            else "."
        ),
        "",
        "## Thresholds chosen on the development period",
        "",
        f"Rule (written before the run): at most {BUDGET_PER_100} false alerts per 100 business "
        "days per monitor on the development period's fault-free days, pooled over sources; "
        f"then the highest share of expected faults detected within {WITHIN} business days of "
        "the first day the monitor could see them; then the shorter median delay; then the "
        "higher level.",
        "",
    ]
    for family, ev in choice["evidence"].items():
        lines.append(
            f"**{family}** chosen {choice['chosen'][family]} "
            f"({'within' if ev['within_budget'] else 'NO candidate within'} budget):"
        )
        lines.append("")
        lines.append(
            markdown_table(
                pl.DataFrame(ev["candidates"]).with_columns(
                    pl.col("level").cast(pl.List(pl.Utf8)).list.join(", ")
                )
            )
        )
        lines.append("")
    lines += [
        "## False alarms per 100 business days (fault-free days)",
        "",
        "Chosen levels; `(before)`: the levels frozen before this benchmark (accuracy "
        "1.15/1.05, coverage margin 0.10/0.05, no single-feature drift rule). Fault-free days "
        "judged (outcome monitors, the most of any monitor; drift monitors judge 61-day "
        "segments):",
        "",
        markdown_table(fa_days),
        "",
        markdown_table(fa_show),
        "",
        "## Detection per fault: the first alert of any expected monitor (chosen levels)",
        "",
        f"rate: a trial in which an expected monitor opened an episode within {HORIZON_DAYS} "
        f"business days of the day it could first see the fault; rate10: within {WITHIN} "
        "(the target); days from the fault's first day to the first such alert (outcome "
        "monitors cannot see a forecast fault before its forecasts mature: h trading days).",
        "",
        markdown_table(by_fault),
        "",
        "## Detection per fault and monitor (chosen levels)",
        "",
        f"rate: detected within {HORIZON_DAYS} business days of the observable day; rate10: "
        f"within {WITHIN}. Delays in business days from the observable day (outcome monitors: "
        "start + h); `median_from_start` from the fault's first day. `expected`: the fault x "
        "monitor matrix written before the run.",
        "",
        markdown_table(det_show),
        "",
    ]
    (out / f"monitors_{label}.md").write_text("\n".join(lines))
    record_run(out / f"monitors_{label}.md")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
