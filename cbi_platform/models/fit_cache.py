"""Fitted networks, kept by what they were fitted on, so one fit serves every step that needs it.

A network fitted in the walk-forward at origin t is needed again by the registered version (the
live origin's fit) and by the daily decision series (each `fitted_at`). Those steps rebuild
exactly the same training inputs; refitting would cost the same minutes again. The cache is
content-addressed: the key hashes the spec (name, family, kind, params, weighting, regime) and
every input the fit reads (X, y, sample weights, closes, horizon, feature names, the feature
history and training-row positions of sequence models). Identical inputs give the identical
fitted model; any difference is a different key, so a stale entry can never be served.

Only the families in `CACHED_FAMILIES` (the networks, whose fits cost seconds to minutes) are
cached; everything else fits as before. Entries are written atomically (temp file + rename),
so concurrent steps never read half a file. Folder: `<home>/fit_cache` (ProtocolResource
`fit_cache`); delete it at will.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np

from cbi_platform.models.base import FitData, Model, ModelSpec

# The Keras families (registry.NEURAL_FAMILIES; repeated here to keep this module light).
CACHED_FAMILIES = frozenset(
    {"dense", "lstm", "gru", "gru_attention", "tcn", "cnn_lstm", "attention"}
)


def _update(digest, value) -> None:
    if value is None:
        digest.update(b"<none>")
        return
    array = np.ascontiguousarray(np.asarray(value))
    digest.update(str(array.dtype).encode() + str(array.shape).encode())
    digest.update(array.tobytes())


def fit_key(spec: ModelSpec, data: FitData) -> str:
    """sha256 of the spec and every input of the fit."""
    digest = hashlib.sha256()
    described = {
        "name": spec.name,
        "family": spec.family,
        "kind": spec.kind,
        "params": spec.params,
        "weighted": spec.weighted,
        "regime": spec.regime,
        "horizon_days": int(data.horizon_days),
        "features": list(data.feature_names),
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for value in (data.X, data.y, data.sample_weight, data.prices, data.history, data.train_rows):
        _update(digest, value)
    return digest.hexdigest()


class FitCache:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.joblib"

    def fit(self, spec: ModelSpec, data: FitData, build: Callable[[ModelSpec], Model]) -> Model:
        """The fitted model for (spec, data): from the cache when present, else fitted and kept."""
        if spec.family not in CACHED_FAMILIES:
            return build(spec).fit(data)
        path = self._path(fit_key(spec, data))
        if path.is_file():
            self.hits += 1
            return joblib.load(path)
        self.misses += 1
        model = build(spec).fit(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        try:
            joblib.dump(model, temp)
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return model


def fit_member(
    spec: ModelSpec,
    data: FitData,
    build: Callable[[ModelSpec], Model],
    cache: str | Path | None = None,
) -> Model:
    """Fit one member, through the cache folder when one is given."""
    if cache is None:
        return build(spec).fit(data)
    return FitCache(cache).fit(spec, data, build)
