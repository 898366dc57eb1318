"""The model registry: specs.yaml as validated ModelSpecs, and the family -> class factory.

The list of models is data anyone can read; this module only checks it and builds models.
A spec's name is unique in the file and names one model at each of its horizons.

Two zoos: `core` (what `make run` trains within its time budget) runs each spec at its
`horizons`; `extended` (the neural benchmarks, or CBI_ZOO=extended) adds its
`extended_horizons`, members that were cut from the budget but stay trained and measured.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from cbi_platform.features.contract import HORIZONS
from cbi_platform.models.base import Model, ModelSpec
from cbi_platform.models.baselines import RandomWalk, RandomWalkDrift
from cbi_platform.models.linear import RidgeModel
from cbi_platform.models.neural import NeuralModel
from cbi_platform.models.neural_tuned import tuned_params
from cbi_platform.models.statistical import ArimaModel, EtsModel, ThetaForecaster
from cbi_platform.models.trees import LightGBMModel, XGBoostModel
from cbi_platform.models.volatility import GarchModel, GjrGarchModel
from cbi_platform.models.volatility_nn import LstmVolatilityModel

DEFAULT_SPECS_PATH = Path(__file__).with_name("specs.yaml")


def _neural(spec: ModelSpec) -> Model:
    return NeuralModel(spec)  # Keras is imported only inside fit


def _neural_vol(spec: ModelSpec) -> Model:
    return LstmVolatilityModel(spec)


# Keras families (cbi_platform/models/neural.py): one class, the architecture by family name.
NEURAL_FAMILIES = ("dense", "lstm", "gru", "gru_attention", "tcn", "cnn_lstm", "attention")

FAMILIES: dict[str, Callable[[ModelSpec], Model]] = {
    "random_walk": RandomWalk,
    "random_walk_drift": RandomWalkDrift,
    "arima": ArimaModel,
    "ets": EtsModel,
    "theta": ThetaForecaster,
    "lightgbm": LightGBMModel,
    "xgboost": XGBoostModel,
    "ridge": RidgeModel,
    "garch": GarchModel,
    "gjr_garch": GjrGarchModel,
    "lstm_vol": _neural_vol,
    **{family: _neural for family in NEURAL_FAMILIES},
}
# Families that read X (features).
FEATURE_FAMILIES = frozenset({"lightgbm", "xgboost", "ridge", *NEURAL_FAMILIES})
KINDS = (
    "benchmark",
    "statistical",
    "tree",
    "sanity",
    "specialist",
    "neural",
    "neural_specialist",
    "volatility",
)
# Kinds whose predict() is an h-day log return; volatility models predict an h-day vol.
RETURN_KINDS = tuple(kind for kind in KINDS if kind != "volatility")
SPECIALIST_KINDS = ("specialist", "neural_specialist")  # trained on one detected regime's rows
# Model groups: each is its own Dagster step (asset) per horizon. A group is a set of kinds;
# every group that trains a network takes the single-slot `gpu` pool.
GROUPS: dict[str, tuple[str, ...]] = {
    "benchmarks": ("benchmark",),
    "statistical": ("statistical",),
    "trees": ("tree", "sanity"),
    "specialists": ("specialist",),
    "neural": ("neural", "neural_specialist"),
}
GPU_GROUPS = ("neural",)
DETECTED_REGIMES = ("crisis", "bull", "bear", "normal")

_REQUIRED = ("name", "family", "kind")
_OPTIONAL = ("params", "weighted", "refit_every", "horizons", "extended_horizons", "regime")
ZOOS = ("core", "extended")


class SpecError(ValueError):
    """specs.yaml (or a ModelSpec) is invalid; the message names the entry."""


def _read_entries(path: str | Path | None) -> list[dict[str, Any]]:
    path = Path(path) if path is not None else DEFAULT_SPECS_PATH
    with path.open() as handle:
        document = yaml.safe_load(handle)
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise SpecError(f"{path}: expected a mapping with a 'models' list")
    entries = document["models"]
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        _validate_entry(index, entry)
        name = entry["name"]
        if name in seen:
            raise SpecError(
                f"entry {index} ({name!r}): duplicate name, first at entry {seen[name]}"
            )
        seen[name] = index
    return entries


def _validate_entry(index: int, entry: Any) -> None:
    label = f"entry {index}"
    if not isinstance(entry, dict):
        raise SpecError(f"{label}: expected a mapping, got {type(entry).__name__}")
    label = f"entry {index} ({entry.get('name')!r})"
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise SpecError(f"{label}: missing {missing}")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise SpecError(f"{label}: unknown keys {unknown}; allowed {[*_REQUIRED, *_OPTIONAL]}")
    if not isinstance(entry["name"], str) or not entry["name"]:
        raise SpecError(f"{label}: name must be a non-empty string")
    if entry["family"] not in FAMILIES:
        raise SpecError(f"{label}: unknown family {entry['family']!r}; known {sorted(FAMILIES)}")
    if entry["kind"] not in KINDS:
        raise SpecError(f"{label}: unknown kind {entry['kind']!r}; known {list(KINDS)}")
    if not isinstance(entry.get("params", {}), dict):
        raise SpecError(f"{label}: params must be a mapping")
    if not isinstance(entry.get("weighted", False), bool):
        raise SpecError(f"{label}: weighted must be true or false")
    refit_every = entry.get("refit_every", 1)
    if isinstance(refit_every, bool) or not isinstance(refit_every, int) or refit_every < 1:
        raise SpecError(f"{label}: refit_every must be an integer >= 1, got {refit_every!r}")
    horizons = entry.get("horizons", list(HORIZONS))
    if (
        not isinstance(horizons, list)
        or not horizons
        or any(h not in HORIZONS for h in horizons)
        or len(set(horizons)) != len(horizons)
    ):
        raise SpecError(
            f"{label}: horizons must be a non-empty list of distinct {list(HORIZONS)}, "
            f"got {horizons!r}"
        )
    extended = entry.get("extended_horizons", [])
    if (
        not isinstance(extended, list)
        or any(h not in HORIZONS for h in extended)
        or len(set(extended)) != len(extended)
        or set(extended) & set(horizons)
    ):
        raise SpecError(
            f"{label}: extended_horizons must be a list of distinct {list(HORIZONS)} not in "
            f"horizons {horizons!r}, got {extended!r}"
        )
    regime = entry.get("regime")
    if entry["kind"] in SPECIALIST_KINDS:
        if regime not in DETECTED_REGIMES:
            raise SpecError(f"{label}: a specialist needs regime in {DETECTED_REGIMES}")
        if entry["family"] not in FEATURE_FAMILIES:
            raise SpecError(f"{label}: a specialist must be a feature model {FEATURE_FAMILIES}")
        neural = entry["family"] in NEURAL_FAMILIES
        if neural != (entry["kind"] == "neural_specialist"):
            raise SpecError(f"{label}: a network specialist is kind 'neural_specialist'")
    elif regime is not None:
        raise SpecError(f"{label}: regime is only for specialist kinds {SPECIALIST_KINDS}")
    if entry["kind"] == "neural" and entry["family"] not in NEURAL_FAMILIES:
        raise SpecError(f"{label}: kind 'neural' needs a family in {NEURAL_FAMILIES}")


def _to_spec(entry: dict[str, Any]) -> ModelSpec:
    return ModelSpec(
        name=entry["name"],
        family=entry["family"],
        kind=entry["kind"],
        params=dict(entry.get("params") or {}),
        weighted=bool(entry.get("weighted", False)),
        refit_every=int(entry.get("refit_every", 1)),
        regime=entry.get("regime"),
    )


def _horizons(entry: dict[str, Any], zoo: str = "core") -> list[str]:
    horizons = list(entry.get("horizons", list(HORIZONS)))
    if zoo == "extended":
        horizons += [h for h in entry.get("extended_horizons", []) if h not in horizons]
    return horizons


def check_zoo(zoo: str) -> str:
    if zoo not in ZOOS:
        raise SpecError(f"unknown zoo {zoo!r}; known {list(ZOOS)} (CBI_ZOO)")
    return zoo


def spec_entries(
    kinds: Iterable[str] | None = None, path: str | Path | None = None
) -> list[dict[str, Any]]:
    """The specs file's entries of `kinds` (all if None) as written, in file order: what a
    model group's code version hashes, so editing one model changes only its group's."""
    wanted = None if kinds is None else set(kinds)
    return [e for e in _read_entries(path) if wanted is None or e["kind"] in wanted]


def load_specs(
    path: str | Path | None = None,
    horizon: str | None = None,
    kinds: Iterable[str] | None = None,
    zoo: str = "core",
) -> list[ModelSpec]:
    """The validated specs, in file order; only those run at `horizon` (in `zoo`) and of
    `kinds` if given.

    Every spec is also built once, so a bad parameter fails here and not mid walk-forward.
    With a horizon and the zoo's own file, network specs carry the hyperparameters recorded
    by Keras Tuner for their family at that horizon (models/neural_tuned.yaml).
    Note: kinds=None includes 'volatility', whose models predict a vol; the return ensemble
    should pass `kinds=RETURN_KINDS`.
    """
    if horizon is not None and horizon not in HORIZONS:
        raise SpecError(f"unknown horizon {horizon!r}; known {list(HORIZONS)}")
    check_zoo(zoo)
    wanted = None if kinds is None else ([kinds] if isinstance(kinds, str) else list(kinds))
    if wanted is not None:
        bad = sorted(set(wanted) - set(KINDS))
        if bad:
            raise SpecError(f"unknown kinds {bad}; known {list(KINDS)}")
    specs = []
    for index, entry in enumerate(_read_entries(path)):
        spec = _to_spec(entry)
        if horizon is not None and path is None and spec.family in NEURAL_FAMILIES:
            spec = _with_tuned(spec, horizon)
        try:
            build_model(spec)
        except Exception as exc:
            raise SpecError(f"entry {index} ({spec.name!r}): {exc}") from exc
        if horizon is not None and horizon not in _horizons(entry, zoo):
            continue
        if wanted is not None and spec.kind not in wanted:
            continue
        specs.append(spec)
    return specs


def _with_tuned(spec: ModelSpec, horizon: str) -> ModelSpec:
    """A network spec of the zoo with the hyperparameters Keras Tuner chose for its family at
    this horizon on the development window (models/neural_tuned.yaml), when recorded."""
    tuned = tuned_params(spec.family, horizon)
    return replace(spec, params={**spec.params, **tuned}) if tuned else spec


def build_model(spec: ModelSpec) -> Model:
    """A fresh, unfitted model for the spec (specialists build like their base family)."""
    if spec.family not in FAMILIES:
        raise SpecError(f"{spec.name!r}: unknown family {spec.family!r}; known {sorted(FAMILIES)}")
    if spec.kind not in KINDS:
        raise SpecError(f"{spec.name!r}: unknown kind {spec.kind!r}; known {list(KINDS)}")
    return FAMILIES[spec.family](spec)


def spec_table(path: str | Path | None = None) -> pl.DataFrame:
    """One row per spec: name, family, kind, weighted, refit_every, horizons, regime, params."""
    rows = [
        {
            "name": entry["name"],
            "family": entry["family"],
            "kind": entry["kind"],
            "weighted": bool(entry.get("weighted", False)),
            "refit_every": int(entry.get("refit_every", 1)),
            "horizons": _horizons(entry),
            "extended_horizons": list(entry.get("extended_horizons", [])),
            "regime": entry.get("regime"),
            "params": yaml.safe_dump(entry.get("params") or {}, default_flow_style=True).strip(),
        }
        for entry in _read_entries(path)
    ]
    return pl.DataFrame(
        rows,
        schema={
            "name": pl.Utf8,
            "family": pl.Utf8,
            "kind": pl.Utf8,
            "weighted": pl.Boolean,
            "refit_every": pl.Int64,
            "horizons": pl.List(pl.Utf8),
            "extended_horizons": pl.List(pl.Utf8),
            "regime": pl.Utf8,
            "params": pl.Utf8,
        },
    )


def spec_horizons(path: str | Path | None = None, zoo: str = "core") -> dict[str, list[str]]:
    """name -> the horizons it runs at in `zoo` (ModelSpec itself carries no horizons)."""
    check_zoo(zoo)
    return {entry["name"]: _horizons(entry, zoo) for entry in _read_entries(path)}


def count_by_kind(path: str | Path | None = None, zoo: str = "core") -> dict[str, int]:
    """Models per kind counted across horizons (one spec at 5 horizons is 5 models)."""
    check_zoo(zoo)
    counts: Counter[str] = Counter()
    for entry in _read_entries(path):
        counts[entry["kind"]] += len(_horizons(entry, zoo))
    return {kind: counts.get(kind, 0) for kind in KINDS}
