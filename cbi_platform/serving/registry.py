"""Load a registered version and forecast today's data with it, without retraining.

A registered version of `cbi-zl-<h>` holds, under its run's `ensemble/` artifacts, everything a
forecast needs: the fitted members (`members.joblib`, from `fit_final_models`) and
`served_state.json` (the ensemble state at its live origin, its calibration state, the feature
names). `load_version` reads them back; `ServedModel.predict` runs the members on the last row
of today's features, combines them with the version's ensemble state and lays the version's
calibration around the result. The pipeline, the CLI and the daily refresh share this path.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import polars as pl

from cbi_platform.ensemble.combiners import EnsembleState
from cbi_platform.features.contract import DATE, PRICE
from cbi_platform.models.base import MAX_LOOKBACK, lookback
from cbi_platform.serving.calibration import CalibrationState
from cbi_platform.tracking import Tracker

ARTIFACT_PATH = "ensemble"
NETWORKS_DIR = "networks"
MEMBERS_FILE = "members.joblib"
STATE_FILE = "served_state.json"
CARD_FILE = "ensemble.json"  # the model card: combiner, members, leaderboard


@dataclass
class ServedForecast:
    """One forecast of a served version: the zone row (as `assemble_forecast` reads it) and
    how it was made (member forecasts, effective weights)."""

    zone: dict[str, Any]
    member_logrets: dict[str, float]
    weights: dict[str, float]
    weight_kind: str
    x_row: np.ndarray  # the features of the forecast row (1, p)
    # What each member read when it is more than that row: a sequence model's `lookback`
    # rows ending at the forecast row (oldest first). Members not here read x_row.
    member_rows: dict[str, np.ndarray] = field(default_factory=dict)

    def rows_for(self, name: str) -> np.ndarray:
        return self.member_rows.get(name, self.x_row)


@dataclass
class ServedModel:
    horizon: str
    horizon_days: int
    members: dict[str, Any]
    feature_names: list[str]
    ensemble: EnsembleState
    calibration: CalibrationState
    trained_through: dt.date
    protocol_hash: str | None = None
    version: str | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- persistence

    def state_dict(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "horizon_days": self.horizon_days,
            "feature_names": list(self.feature_names),
            "trained_through": self.trained_through.isoformat(),
            "protocol_hash": self.protocol_hash,
            "ensemble": self.ensemble.to_dict(),
            "calibration": self.calibration.to_dict(),
        }

    def save(self, folder: Path) -> list[Path]:
        """Write the two artifact files into `folder`; returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        missing = [m for m in self.ensemble.members if m not in self.members]
        if missing:
            raise ValueError(f"{self.horizon}: the ensemble needs member(s) {missing} not fitted")
        members = folder / MEMBERS_FILE
        joblib.dump(self.members, members)
        state = folder / STATE_FILE
        state.write_text(json.dumps(self.state_dict(), indent=1))
        return [members, state, *self._save_networks(folder / NETWORKS_DIR)]

    def _save_networks(self, folder: Path) -> list[Path]:
        """Each network member of the ensemble in the Keras format and as a TensorFlow
        SavedModel for serving, with its input/output signature (networks/<name>/): what a
        serving stack other than this package loads. The pickled members stay the source the
        platform itself serves from."""
        names = [
            m
            for m in self.ensemble.members
            if callable(getattr(self.members.get(m), "signature", None))
            and callable(getattr(self.members.get(m), "save", None))
        ]
        if not names:
            return []
        for name in names:
            model = self.members[name]
            model.save(folder / name)
            (folder / name / "signature.json").write_text(
                json.dumps(model.signature(), indent=1, default=str)
            )
        return [folder]

    @classmethod
    def from_folder(
        cls, folder: Path, *, name: str | None = None, version: str | None = None
    ) -> ServedModel:
        members_path, state_path = folder / MEMBERS_FILE, folder / STATE_FILE
        for path in (members_path, state_path):
            if not path.exists():
                raise FileNotFoundError(
                    f"{name or folder} v{version}: {path.name} is missing from the version's "
                    "artifacts (registered before load-and-predict existed?): it cannot serve"
                )
        state = json.loads(state_path.read_text())
        card_path = folder / CARD_FILE
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        return cls(
            horizon=state["horizon"],
            horizon_days=int(state["horizon_days"]),
            members=joblib.load(members_path),
            feature_names=list(state["feature_names"]),
            ensemble=EnsembleState.from_dict(state["ensemble"]),
            calibration=CalibrationState.from_dict(state["calibration"]),
            trained_through=dt.date.fromisoformat(state["trained_through"]),
            protocol_hash=state.get("protocol_hash"),
            version=version,
            name=name,
            extra={"card": card},
        )

    def leaderboard(self) -> pl.DataFrame:
        """The walk-forward leaderboard the version was registered with (its model card)."""
        rows = self.extra.get("card", {}).get("leaderboard") or []
        schema = {"model": pl.Utf8, "mase": pl.Float64, "rel_mae": pl.Float64}
        schema["dm_pvalue"] = pl.Float64
        return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)

    # ---- forecasting

    def _last_row(self, features: pl.DataFrame) -> tuple[dict[str, Any], np.ndarray]:
        if features.height == 0:
            raise ValueError(f"{self.horizon}: no feature rows to forecast from")
        missing = [c for c in (DATE, *self.feature_names) if c not in features.columns]
        if missing:
            raise ValueError(
                f"{self.horizon} v{self.version}: today's features lack column(s) {missing[:10]} "
                f"that the version was trained on ({len(missing)} missing)"
            )
        last = features.sort(DATE).tail(1)
        x = last.select(self.feature_names).cast(pl.Float64).to_numpy().astype(np.float64)
        return last.row(0, named=True), x

    def predict(
        self,
        features: pl.DataFrame,
        prices: np.ndarray | pl.Series | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        made: Mapping[str, float] | None = None,
    ) -> ServedForecast:
        """Forecast from the last row of `features` (one horizon's frame, at least that row).

        `prices`: the target's closes up to and including that date (statistical members read
        them); default: the frame's own price column. `context`: regime and vol_forecast at the
        date (the meta-learner reads them). `made`: member forecasts for this row already made
        by `predict_days` (those members are not run again).
        """
        row, x = self._last_row(features)
        if prices is None:
            if PRICE not in features.columns:
                raise ValueError(f"{self.horizon}: give `prices` or a `{PRICE}` column")
            prices = features.sort(DATE)[PRICE]
        closes = np.asarray(prices.to_numpy() if isinstance(prices, pl.Series) else prices, float)
        if closes.size == 0 or not np.isfinite(closes[-1]) or closes[-1] <= 0:
            raise ValueError(f"{self.horizon}: the last close must be a positive number")
        if (
            PRICE in row
            and row[PRICE] is not None
            and not math.isclose(float(row[PRICE]), float(closes[-1]), rel_tol=1e-12)
        ):
            raise ValueError(
                f"{self.horizon}: the last close {closes[-1]} is not the price {row[PRICE]} of "
                f"the last feature row ({row[DATE]}): prices must end at that date"
            )
        member_logrets, member_rows = {}, {}
        for name in self.ensemble.members:
            model = self.members[name]
            rows = x
            if lookback(model) > 1:  # a sequence model reads the rows ending at today's
                rows = (
                    features.sort(DATE)
                    .tail(lookback(model))
                    .select(self.feature_names)
                    .cast(pl.Float64)
                    .to_numpy()
                    .astype(np.float64)
                )
                member_rows[name] = rows
            if made is not None and name in made:
                member_logrets[name] = float(made[name])
                continue
            try:
                value = np.asarray(model.predict(rows.copy(), closes.copy()), float).reshape(-1)
            except Exception as exc:
                raise RuntimeError(f"{self.horizon} v{self.version}: {name} failed") from exc
            if value.size != rows.shape[0]:
                raise ValueError(f"{name}: predict returned {value.size} values for one row")
            member_logrets[name] = float(value[-1])
        logret = self.ensemble.combine(member_logrets, context)
        weights, kind = self.ensemble.effective_weights(member_logrets, context)
        price = float(closes[-1])
        cal = self.calibration
        zone = {
            "origin": row[DATE],
            "target_date": None,
            "price": price,
            "forecast_logret": logret,
            "forecast": price * math.exp(logret),
            **cal.zone_row(price, logret),
            "combiner": self.ensemble.combiner,
            "shrink_weight": self.ensemble.shrink_weight,
            "calibration": cal.method,
            "n_calibration": cal.n_calibration,
            "n_calibration_independent": cal.n_calibration_independent,
            "vol_forecast": None if context is None else context.get("vol_forecast"),
        }
        return ServedForecast(zone, member_logrets, weights, kind, x, member_rows)

    def predict_days(
        self,
        frame: pl.DataFrame,
        closes: np.ndarray,
        first: int,
        last: int,
        contexts: list[Mapping[str, Any] | None],
    ) -> list[ServedForecast]:
        """The forecasts of rows `first..last` of `frame` (one horizon's frame sorted by date),
        each what `predict(frame[:i + 1], closes[:i + 1], contexts[i - first])` gives.

        A sequence member's forecast of a row depends only on the rows up to it (its `predict`
        returns one forecast per row, each from the window ending there), so each runs once over
        the block, from `lookback - 1` rows before `first`, instead of once per day; the other
        members run day by day. Nothing after row i enters row i's forecast."""
        if not 0 <= first <= last < frame.height:
            raise ValueError(f"{self.horizon}: rows {first}..{last} outside 0..{frame.height - 1}")
        if len(contexts) != last - first + 1:
            raise ValueError(
                f"{self.horizon}: {len(contexts)} contexts for {last - first + 1} days"
            )
        closes = np.asarray(closes, dtype=float)
        n = last - first + 1
        made: dict[str, np.ndarray] = {}
        for name in self.ensemble.members:
            model = self.members[name]
            steps = lookback(model)
            if steps <= 1:
                continue
            lo = max(0, first - steps + 1)
            block = (
                frame[lo : last + 1]
                .select(self.feature_names)
                .cast(pl.Float64)
                .to_numpy()
                .astype(np.float64)
            )
            try:
                values = np.asarray(model.predict(block, closes[: last + 1].copy()), float)
            except Exception as exc:
                raise RuntimeError(f"{self.horizon} v{self.version}: {name} failed") from exc
            values = values.reshape(-1)
            if values.size != block.shape[0]:
                raise ValueError(
                    f"{name}: predict returned {values.size} values for {block.shape[0]} rows"
                )
            made[name] = values[-n:]
        out = []
        for k, i in enumerate(range(first, last + 1)):
            window = frame[max(0, i - MAX_LOOKBACK + 1) : i + 1]
            out.append(
                self.predict(
                    window,
                    closes[: i + 1],
                    contexts[k],
                    made={name: values[k] for name, values in made.items()},
                )
            )
        return out


# Versions loaded in this process, newest use last: (folder, name, version, file stamps) ->
# model. A registered version never changes, so a process that refreshes day after day (the
# replay, a long-lived worker, `make run`'s last stage after registration) loads each version,
# and builds its networks' prediction graphs, once. The key holds the size and mtime of the
# version's files, so a folder rewritten on disk is loaded again.
_LOADED: OrderedDict[tuple, ServedModel] = OrderedDict()
LOADED_VERSIONS_KEPT = 12  # five horizons' served and shadow versions, with room to spare


def _stamp(folder: Path) -> tuple:
    return tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in (folder / MEMBERS_FILE, folder / STATE_FILE, folder / CARD_FILE)
        if p.exists()
    )


def _from_kept(folder: Path, name: str, version: str) -> ServedModel:
    key = (str(folder.resolve()), name, str(version), _stamp(folder))
    model = _LOADED.get(key)
    if model is None:
        model = ServedModel.from_folder(folder, name=name, version=version)
        _LOADED[key] = model
        while len(_LOADED) > LOADED_VERSIONS_KEPT:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return model


def clear_loaded_versions() -> None:
    """Forget the versions this process has loaded (the next load reads them from disk)."""
    _LOADED.clear()


RUN_ID_FILE = "run_id"  # beside the downloaded artifacts: the MLflow run they came from


def download_version(tracker: Tracker, name: str, version: str, cache: Path) -> Path:
    """A registered version's artifact folder under `cache`, downloaded once, not loaded. A
    folder downloaded from another run (a registry rebuilt or restored under the same cache)
    is replaced, never served."""
    run_id = tracker.version_run_id(name, version)
    folder = cache / f"{name}-v{version}"
    kept, marker = folder / ARTIFACT_PATH, folder / RUN_ID_FILE
    complete = (kept / MEMBERS_FILE).exists() and (kept / STATE_FILE).exists()
    if complete and marker.exists() and marker.read_text().strip() == run_id:
        return kept
    if folder.exists():
        shutil.rmtree(folder)
    local = Path(tracker.download_artifacts(run_id, ARTIFACT_PATH, folder))
    marker.write_text(run_id + "\n")
    return local


def load_version(
    tracker: Tracker, name: str, version: str, cache: Path | None = None, *, keep: bool = True
) -> ServedModel:
    """A registered version, ready to forecast (its artifacts downloaded under `cache`; a
    version already downloaded there is read from it, and one this process already loaded
    from there is reused: versions never change). `keep=False` (a temporary `cache`) neither
    reuses nor keeps the loaded version in this process."""
    if cache is not None:
        folder = download_version(tracker, name, version, cache)
        if not keep:
            return ServedModel.from_folder(folder, name=name, version=version)
        return _from_kept(folder, name, version)
    run_id = tracker.version_run_id(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = tracker.download_artifacts(run_id, ARTIFACT_PATH, Path(tmp) / f"{name}-v{version}")
        return ServedModel.from_folder(local, name=name, version=version)
