"""The daily refresh: today's data through the registered versions, with no retraining.

Which version serves, and whether it still reproduces its registered forecast on reload, is the
release room's (`release.reproduction.checked_serving`); a version that does not reproduce
raises a `reload_mismatch` condition and does not serve.

For each horizon: the served version (the champion; with no champion, the newest version,
flagged provisional with the gates it failed) is loaded from the registry and forecasts from the
last row of today's features through `ServedModel.predict` (issue 4's load-and-predict path),
with today's regime and its volatility model's forecast as context. The challenger (the newest
version above the champion, see `release.versions`) forecasts beside it through the same path;
its row is logged with role "shadow" and never served. Rows are built by
`serving.publish.forecast_record`, exactly as the pipeline's publication builds them.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from cbi_platform.conditions import RELOAD_MISMATCH, Condition
from cbi_platform.evaluation.volatility_eval import live_volatility
from cbi_platform.features.contract import DATE, HORIZONS
from cbi_platform.release.reproduction import ReloadCheck, checked_serving
from cbi_platform.release.versions import Serving
from cbi_platform.serving.publish import forecast_record, random_walk_record
from cbi_platform.serving.registry import ServedModel, load_version
from cbi_platform.serving.store import SERVED, SHADOW
from cbi_platform.tracking import Tracker, registered_model_name

# A replay may plant a degradation: a function (horizon, version, as_of, logret) -> logret.
Perturbation = Callable[[str, str, dt.date, float], float]


@dataclass
class HorizonRefresh:
    horizon: str
    rows: list[dict[str, Any]]  # the served row first, then the shadow row (if any)
    seconds: float
    serving: Serving
    reload: ReloadCheck | None = None  # the release room's choice, loaded and checked


@dataclass
class RefreshResult:
    as_of: dt.date
    horizons: list[HorizonRefresh] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for h in self.horizons for r in h.rows]

    @property
    def conditions(self) -> list[Condition]:
        """One reload condition per horizon: firing while its chosen version does not
        reproduce on reload (and something else serves)."""
        found = []
        for h in self.horizons:
            check = h.reload
            if check is None or not check.checked:
                continue
            found.append(
                Condition(
                    key=f"reload/{h.horizon}",
                    kind=RELOAD_MISMATCH,
                    firing=not check.ok,
                    title=check.reason(h.horizon)
                    + ("" if check.ok else f"; serving {h.serving.served}"),
                    as_of=self.as_of,
                    horizon=h.horizon,
                    evidence={
                        "version": check.version,
                        "gap_logret": check.gap,
                        "tolerance": check.tolerance,
                        "served": h.serving.served,
                    },
                )
            )
        return found


def _forecast_with(
    model: ServedModel,
    *,
    features: pl.DataFrame,
    closes: pl.Series,
    regimes: pl.DataFrame,
    regime_outlook: Mapping[str, float],
    data_reference_date: dt.date,
    role: str,
    serving: Serving,
    perturb: Perturbation | None,
) -> dict[str, Any]:
    as_of = features[DATE][-1]
    regime = regimes.filter(pl.col("date") == as_of)["regime"]
    context = {
        "regime": regime[0] if regime.len() else None,
        "vol_forecast": live_volatility(
            closes.to_numpy(), model.calibration.vol_model, HORIZONS[model.horizon]
        ),
    }
    forecast = model.predict(features, closes, context)
    if perturb is not None:
        shifted = perturb(
            model.horizon, str(model.version), as_of, forecast.zone["forecast_logret"]
        )
        if shifted != forecast.zone["forecast_logret"]:
            forecast.zone.update(
                {
                    "forecast_logret": shifted,
                    "forecast": forecast.zone["price"] * math.exp(shifted),
                    **model.calibration.zone_row(forecast.zone["price"], shifted),
                }
            )
    record = forecast_record(
        model,
        forecast,
        leaderboard=model.leaderboard(),
        regimes=regimes,
        context_now=context,
        regime_outlook=regime_outlook,
        data_reference_date=data_reference_date,
        served_version=str(model.version),
        registered_version=None,
        provisional=serving.provisional if role == SERVED else False,
        failed_gates=serving.failed_gates if role == SERVED else (),
    )
    return {**record, "role": role}


def refresh_horizon(
    tracker: Tracker,
    horizon: str,
    features: pl.DataFrame,
    target: pl.DataFrame,
    regimes: pl.DataFrame,
    *,
    regime_outlook: Mapping[str, float],
    data_reference_date: dt.date,
    cache: Path,
    perturb: Perturbation | None = None,
) -> HorizonRefresh:
    """Today's served forecast (and the challenger's shadow forecast) for one horizon.

    `features`: the horizon's feature frame (its last row is today); `target`: the target's
    closes (date, value); `regimes`: detected regime per date.
    """
    started = time.perf_counter()
    features = features.sort(DATE)
    as_of = features[DATE][-1]
    closes = target.filter(pl.col("date") <= as_of).sort("date")["value"]
    chosen = checked_serving(tracker, horizon, cache)
    serving = chosen.serving
    name = registered_model_name(horizon)
    if chosen.model is None:  # nothing can serve: the random walk, provisional, with why
        row = random_walk_record(
            horizon,
            target.filter(pl.col("date") <= as_of),
            regimes=regimes,
            regime_outlook=regime_outlook,
            data_reference_date=data_reference_date,
            reasons=serving.failed_gates,
        )
        rows = [{**row, "role": SERVED}]
        return HorizonRefresh(horizon, rows, time.perf_counter() - started, serving, chosen.check)
    common = {
        "features": features,
        "closes": closes,
        "regimes": regimes,
        "regime_outlook": regime_outlook,
        "data_reference_date": data_reference_date,
        "serving": serving,
        "perturb": perturb,
    }
    rows = [_forecast_with(chosen.model, role=SERVED, **common)]
    if serving.challenger is not None:
        challenger = load_version(tracker, name, serving.challenger, cache)
        rows.append(_forecast_with(challenger, role=SHADOW, **common))
    return HorizonRefresh(horizon, rows, time.perf_counter() - started, serving, chosen.check)


def planted_bias(spec: str, state_dir: str | Path) -> Perturbation:
    """A planted degradation for replays: "HORIZON:LOGRET:FROM[:TO]" adds LOGRET to the
    forecasts of the version that is champion when the first affected day is refreshed (a
    retrained challenger does not inherit it), from FROM to TO (inclusive; open-ended without
    TO), so the monitors must catch it and, after TO, see it clear. "pm" before LOGRET (e.g.
    "1w:pm0.06:...") alternates its sign day by day: a constant bias can happen to point the
    way the market went and look like skill; an alternating one degrades in any market. The
    version it binds to is kept in `state_dir` (the operations store's folder), whatever MLflow's
    tracking store is (a path next to a SQLite URI broke on PostgreSQL or a tracking server)."""
    try:
        horizon, shift, start, *end = spec.split(":")
        alternate = shift.startswith("pm")
        shift_value, first = float(shift.removeprefix("pm")), dt.date.fromisoformat(start)
        last = dt.date.fromisoformat(end[0]) if end else dt.date.max
        if len(end) > 1:
            raise ValueError(spec)
    except ValueError as exc:
        raise ValueError(
            f"planted bias {spec!r}: expected HORIZON:LOGRET:FROM[:TO], dates YYYY-MM-DD"
        ) from exc
    marker = Path(state_dir) / f"planted-bias-{horizon}.version"

    def perturb(h: str, version: str, as_of: dt.date, logret: float) -> float:
        if h != horizon or not first <= as_of <= last:
            return logret
        if not marker.exists():
            marker.write_text(version)  # the version that degrades, fixed once
        if marker.read_text() != version:
            return logret
        sign = -1.0 if alternate and as_of.toordinal() % 2 else 1.0
        return logret + sign * shift_value

    return perturb
