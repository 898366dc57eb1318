"""What each endpoint says, built from the published snapshots (plain dicts, checked against
`schemas`). Built once per snapshot version and kept in memory by `cache.CachedFile`."""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from cbi_platform.api import schemas
from cbi_platform.serving.notices import is_random_walk as _is_random_walk
from cbi_platform.serving.record import Column
from cbi_platform.serving.store import COLUMNS, JSON_COLUMNS, SERVED
from cbi_platform.settings import HORIZONS

NO_FORECASTS = "no forecasts yet: run `make run`"
# The history's columns with their types: a history written before a migration lacks some.
HISTORY_COLUMNS: dict[str, pl.DataType] = {c.name: c.polars_type for c in COLUMNS}


class NotPublished(LookupError):
    """Nothing was published yet for what the request asks; the message says what to run."""


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, dates ISO text, containers recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def _json(text: Any, default: Any) -> Any:
    if text is None:
        return default
    if not isinstance(text, str):
        return text
    try:
        decoded = json.loads(text)
    except ValueError:
        return default
    return decoded if decoded is not None else default


def _float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _api_value(column: Column, row: Mapping[str, Any]) -> Any:
    """One record field as the API sends it: floats finite or null, flags and lists never null."""
    value = row.get(column.name)
    if column.polars_type == pl.Float64():
        return _float(value)
    if column.polars_type == pl.Boolean():
        return bool(value)
    if column.json:
        return [str(v) for v in value or []]
    return value


def _dump(model: type[schemas.BaseModel], payload: dict[str, Any]) -> bytes:
    """The payload checked against its schema, as JSON bytes (served as is)."""
    return model.model_validate(clean(payload)).model_dump_json().encode()


class ForecastView:
    """The forecast history snapshot and every payload derived from it."""

    def __init__(self, history: pl.DataFrame):
        absent = [c for c in HISTORY_COLUMNS if c not in history.columns]
        history = history.with_columns(
            pl.lit(None, dtype=HISTORY_COLUMNS[c]).alias(c) for c in absent
        )
        self.history = history.with_columns(pl.col("role").fill_null(SERVED))
        self.served = self.history.filter(pl.col("role") == SERVED).sort("as_of", "created_at")
        latest = self.served.group_by("horizon", maintain_order=True).last()
        rows = {r["horizon"]: r for r in latest.iter_rows(named=True) if r["horizon"] in HORIZONS}
        for row in rows.values():
            for name in JSON_COLUMNS:
                row[name] = _json(row.get(name), [])
        self.latest: dict[str, dict[str, Any]] = {h: rows[h] for h in HORIZONS if h in rows}
        self.forecast_json = {
            h: _dump(schemas.ForecastOut, self._forecast(r)) for h, r in self.latest.items()
        }
        self.explain_json = {
            h: _dump(schemas.ExplainOut, self._explain(r)) for h, r in self.latest.items()
        }

    @classmethod
    def from_parquet(cls, data: bytes) -> ForecastView:
        return cls(pl.read_parquet(io.BytesIO(data)))

    @property
    def empty(self) -> bool:
        return not self.latest

    @property
    def as_of(self) -> dt.date:
        return max(r["as_of"] for r in self.latest.values())

    def require(self, horizon: str | None = None) -> dict[str, Any] | None:
        if self.empty:
            raise NotPublished(NO_FORECASTS)
        if horizon is None:
            return None
        if horizon not in self.latest:
            raise NotPublished(f"no {horizon} forecast yet: run `make run`")
        return self.latest[horizon]

    # ---- forecasts ----------------------------------------------------------------------

    def _forecast(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The forecast response: the record's API fields (nested where the schema nests them),
        the horizon's length and whether the random walk is served."""
        payload: dict[str, Any] = {}
        for column in schemas.FORECAST_COLUMNS:
            group, _, name = column.api.rpartition(".")
            (payload.setdefault(group, {}) if group else payload)[name] = _api_value(column, row)
        payload["horizon_days"] = HORIZONS[row["horizon"]]
        payload["served_is_random_walk"] = _is_random_walk(row)
        return payload

    @functools.cached_property
    def predictions_json(self) -> bytes:
        forecasts = [self._forecast(r) for r in self.latest.values()]
        payload = {"as_of": self.as_of if self.latest else None, "forecasts": forecasts}
        return _dump(schemas.PredictionsOut, payload)

    # ---- drivers ------------------------------------------------------------------------

    def _explain(self, row: Mapping[str, Any]) -> dict[str, Any]:
        horizon = row["horizon"]
        note = row.get("driver_note")
        words = [w for w in row.get("drivers") or [] if isinstance(w, str) and w != note]
        detail = [d for d in row.get("drivers_detail") or [] if isinstance(d, Mapping)]
        paired = len(words) == len(detail)
        drivers = []
        for i, d in enumerate(detail):
            pct = _float(d.get("contribution_pct"))
            feature = str(d.get("feature") or "unknown")
            drivers.append(
                {
                    "feature": feature,
                    "description": words[i] if paired else feature,
                    "value": _float(d.get("value")),
                    "contribution_pct": pct,
                    "direction": "none" if not pct else ("up" if pct > 0 else "down"),
                    "model": d.get("model"),
                    "used": bool(d.get("used", True)),
                }
            )
        drivers.sort(key=lambda d: -abs(d["contribution_pct"] or 0.0))
        random_walk = _is_random_walk(row)
        price, forecast = _float(row.get("price")), _float(row.get("forecast"))
        if random_walk:
            unused = sorted({d["model"] for d in drivers if not d["used"] and d["model"]})
            summary = (
                f"The served {horizon} forecast is the random walk: no change from the last "
                f"close ({price:.2f} c/lb). No model beat the random walk on past origins, so "
                "no driver moves this forecast."
                if price is not None
                else f"The served {horizon} forecast is the random walk: no driver moves it."
            )
            if unused:
                summary += (
                    f" The drivers listed are those of a model that is not used "
                    f"({', '.join(unused)}), shown for context only."
                )
        elif drivers and price and forecast is not None:
            top = drivers[0]
            summary = (
                f"The {horizon} forecast is {forecast:.2f} c/lb, {forecast / price - 1:+.1%} "
                f"from the last close {price:.2f}; the largest driver: {top['description']}."
            )
        else:
            summary = f"No driver detail was recorded for the {horizon} forecast."
        return {
            "horizon": horizon,
            "as_of": row["as_of"],
            "model_version": row.get("model_version"),
            "served_is_random_walk": random_walk,
            "summary": summary,
            "note": note,
            "drivers": drivers,
        }

    # ---- regime -------------------------------------------------------------------------

    @functools.cached_property
    def regime_json(self) -> bytes:
        newest = max(self.latest.values(), key=lambda r: (r["as_of"], HORIZONS[r["horizon"]]))
        outlook = newest.get("regime_outlook")
        probabilities = {
            name: float(pct) / 100.0
            for name, pct in re.findall(r"([A-Za-z_]+)\s+(\d+(?:\.\d+)?)%", outlook or "")
        }
        regime = newest.get("regime")
        text = (
            f"Detected regime on {newest['as_of']}: {regime} (from trailing data only)."
            if regime
            else f"No regime was detected on {newest['as_of']}."
        )
        if outlook:
            text += f" One month ahead: {outlook}."
        return _dump(
            schemas.RegimeOut,
            {
                "as_of": newest["as_of"],
                "regime": regime,
                "outlook": outlook,
                "probabilities": probabilities,
                "text": text,
            },
        )

    # ---- history and accuracy -----------------------------------------------------------

    @functools.cached_property
    def closes(self) -> pl.DataFrame:
        """The close at each served as_of (the `price` the forecasts started from)."""
        return (
            self.served.filter(pl.col("price").is_not_null() & (pl.col("price") > 0))
            .select(pl.col("as_of").cast(pl.Date).alias("date"), pl.col("price"))
            .unique("date", keep="last")
            .sort("date")
        )

    def history_json(self, limit: int) -> bytes:
        closes = self.closes.tail(limit)
        return _dump(
            schemas.HistoryOut,
            {
                "source": "the served forecast history: the close at each as-of date",
                "closes": closes.to_dicts(),
            },
        )

    @functools.cached_property
    def performance_json(self) -> bytes:
        from cbi_platform.operations.validation import score_matured, summary

        closes = self.closes.rename({"price": "value"})
        scored = score_matured(self.served, closes) if closes.height else pl.DataFrame()
        by_h: dict[str, dict[str, Any]] = {}
        if scored.height:
            table = summary(scored)
            extra = scored.group_by("horizon").agg(
                (pl.col("rw_abs_error") / pl.col("actual").abs() * 100.0).mean().alias("rw_mape"),
                pl.col("target_date").min().alias("first_target_date"),
                pl.col("target_date").max().alias("last_target_date"),
            )
            by_h = {r["horizon"]: r for r in table.join(extra, on="horizon").iter_rows(named=True)}
        rows = []
        for h in HORIZONS:
            r = by_h.get(h, {})
            rel = _float(r.get("rel_mae"))
            n = int(r.get("n") or 0)
            if n == 0:
                verdict = "no served forecast has matured yet"
            elif rel is None:
                verdict = "the random walk made no error on these forecasts"
            elif abs(rel - 1.0) < 1e-9:
                verdict = f"the same error as the random walk over {n} matured forecasts"
            else:
                better = "less" if rel < 1 else "more"
                verdict = (
                    f"{abs(1 - rel):.0%} {better} error than the random walk over {n} "
                    "matured forecasts"
                )
            rows.append(
                {
                    "horizon": h,
                    "n": n,
                    "verdict": verdict,
                    "n_zones": int(r.get("n_zones") or 0),
                    **{
                        k: _float(r.get(k))
                        for k in (
                            "mape",
                            "rw_mape",
                            "mae",
                            "rw_mae",
                            "rel_mae",
                            "mase",
                            "coverage80",
                            "coverage90",
                        )
                    },
                    "first_target_date": r.get("first_target_date"),
                    "last_target_date": r.get("last_target_date"),
                }
            )
        return _dump(
            schemas.PerformanceOut,
            {
                "as_of": self.as_of,
                "closes_through": self.closes["date"].max() if self.closes.height else None,
                "source": "every matured served forecast in the forecast history snapshot, "
                "scored against the close on its target date (or the last close before it) "
                "from the same history, next to the random walk on the same forecasts "
                "(cbi_platform.operations.validation.score_matured)",
                "horizons": rows,
            },
        )

    # ---- freshness ----------------------------------------------------------------------

    def freshness(self) -> dict[str, Any]:
        newest = max(self.latest.values(), key=lambda r: (r["as_of"], HORIZONS[r["horizon"]]))
        behind = [
            r["data_business_days_behind"]
            for r in self.latest.values()
            if r.get("data_business_days_behind") is not None
        ]
        created = self.served["created_at"].drop_nulls()
        return {
            "as_of": newest["as_of"],
            "data_last_date": newest.get("data_last_date"),
            "data_reference_date": newest.get("data_reference_date"),
            "business_days_behind": max(behind) if behind else None,
            "last_forecast_at": created.max() if created.len() else None,
        }


def recommendation_json(log: pl.DataFrame | None) -> bytes:
    if log is None or log.height == 0:
        raise NotPublished("no recommendation yet: run `make run` (the daily refresh logs one)")
    row = log.sort("as_of", "logged_at").row(-1, named=True)
    return _dump(
        schemas.RecommendationOut,
        {
            **{k: row.get(k) for k in schemas.RecommendationOut.model_fields},
            "record": _json(row.get("record"), None),
            "forecast_versions": _json(row.get("forecast_versions"), {}),
        },
    )


def backtest_json(
    records: list[dict[str, Any]] | None, recommended_policy: str | None, folder: Path
) -> bytes:
    if records is None:
        raise NotPublished("no procurement backtest yet: run `make run`")
    policies = [r for r in records if isinstance(r, Mapping)]
    chosen = next((r for r in policies if r.get("policy") == recommended_policy), None)
    report, plot = folder / "backtest.md", folder / "cumulative_savings.png"
    return _dump(
        schemas.BacktestOut,
        {
            "recommended_policy": recommended_policy,
            "recommended": chosen,
            "policies": policies,
            "report_path": str(report),
            "report_exists": report.exists(),
            "plot_path": str(plot),
            "plot_exists": plot.exists(),
        },
    )


def last_refresh(conditions: pl.DataFrame | None) -> tuple[dt.datetime | None, bool]:
    """When the daily refresh last judged data freshness, and whether it found the data stale
    (the newest `stale_data` condition of the condition log)."""
    if conditions is None or conditions.height == 0 or "kind" not in conditions.columns:
        return None, False
    stale = conditions.filter(pl.col("kind") == "stale_data")
    if stale.height == 0:
        return None, False
    newest = stale.sort("as_of", "seq").row(-1, named=True)
    return newest.get("logged_at"), bool(newest.get("firing"))


def health_json(
    view: ForecastView | None,
    conditions: pl.DataFrame | None,
    max_behind: int,
) -> bytes:
    return _dump(schemas.HealthOut, health_payload(view, conditions, max_behind))


def health_payload(
    view: ForecastView | None,
    conditions: pl.DataFrame | None,
    max_behind: int,
) -> dict[str, Any]:
    """The data's freshness (/health's answer) as a dict: the notices read it too."""
    refreshed_at, stale_condition = last_refresh(conditions)
    if view is None or view.empty:
        payload = {
            "status": "no_data",
            "message": NO_FORECASTS,
            "as_of": None,
            "data_last_date": None,
            "data_reference_date": None,
            "business_days_behind": None,
            "max_business_days_behind": max_behind,
            "last_forecast_at": None,
            "last_refresh_at": refreshed_at,
        }
        return payload
    fresh = view.freshness()
    behind = fresh["business_days_behind"]
    stale = stale_condition or (behind is not None and behind > max_behind)
    if stale:
        message = (
            f"stale: data through {fresh['data_last_date']}, {behind} business day(s) behind "
            f"{fresh['data_reference_date']} (more than {max_behind} allowed)"
            if behind is not None and behind > max_behind
            else "stale: the daily refresh's freshness check is firing"
        )
    else:
        message = (
            f"ok: data through {fresh['data_last_date']}, {behind or 0} business day(s) behind "
            f"{fresh['data_reference_date']}"
        )
    payload = {
        "status": "stale" if stale else "ok",
        "message": message,
        **fresh,
        "max_business_days_behind": max_behind,
        "last_refresh_at": refreshed_at,
    }
    return payload
