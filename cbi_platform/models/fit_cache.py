"""Fitted networks, kept by what they were fitted on, so one fit serves every step that needs it.

A network fitted in the walk-forward at origin t is needed again by the registered version (the
live origin's fit) and by the daily decision series (each `fitted_at`). Those steps rebuild
exactly the same training inputs; refitting would cost the same minutes again. The cache is
content-addressed: the key hashes the spec (name, family, kind, params, weighting, regime) and
every input the fit reads (X, y, sample weights, closes, horizon, feature names, the feature
history and training-row positions of sequence models), the code that fits (`fit_code_version`:
the fitting modules' source files, their constants such as the fewest rows for a validation
slice, and the library versions) and the runtime it fits under (`fit_runtime`: the
Keras backend, the device kind and the precision policy). Identical inputs give the identical
fitted model; a difference in any of them is a different key, so an entry fitted by other code,
other libraries or another precision is not served.
A function replaced at run time without a file edit does not count (the tests' spies wrap
`fit` and must still hit); a constant changed at run time does.

Only the families in `CACHED_FAMILIES` (the networks, whose fits cost seconds to minutes) are
cached; everything else fits as before. Entries are written atomically (temp file + rename),
so concurrent steps never read half a file. Folder: `<home>/fit_cache` (ProtocolResource
`fit_cache`); delete it at will.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import platform
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np

from cbi_platform.models.base import FitData, Model, ModelSpec

# The Keras families (registry.NEURAL_FAMILIES; repeated here to keep this module light).
CACHED_FAMILIES = frozenset(
    {"dense", "lstm", "gru", "gru_attention", "tcn", "cnn_lstm", "attention"}
)


# The modules whose code decides what a cached fit holds: the networks (builder, fit, defaults,
# validation split), the fit data and sample weights, and the device and precision set-up.
FIT_MODULES = (
    "cbi_platform.models.neural",
    "cbi_platform.models.base",
    "cbi_platform.models.baselines",
    "cbi_platform.models.device",
)
# The libraries whose versions change a fit (numerics, the network code, its backends).
FIT_LIBRARIES = ("numpy", "keras", "tensorflow", "jax", "torch")


def _plain(value: object) -> object:
    """A JSON stand-in that is the same in every process (sets sorted, no memory addresses)."""
    if isinstance(value, set | frozenset):
        return sorted(map(str, value))
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
    return str(value)


def _constants(module: object) -> str:
    """The module's constants (UPPER_CASE names) as they are in memory, so a default changed at
    run time (or by a test) counts as well as one changed in the file."""
    values = {
        name: value
        for name, value in vars(module).items()
        if name.lstrip("_").isupper() and not name.startswith("__")
    }
    return json.dumps(values, sort_keys=True, default=_plain)


def _library_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def fit_code_version() -> str:
    """sha256 of the code that fits a cached model and of the libraries it runs on: the source
    files of `FIT_MODULES` (the builder, the fit and every default written in them), their
    constants as they are in memory, and the versions of `FIT_LIBRARIES` and Python. A Dagster
    code version can reuse it."""
    digest = hashlib.sha256()
    for module_name in FIT_MODULES:
        module = importlib.import_module(module_name)
        digest.update(module_name.encode())
        digest.update(Path(inspect.getfile(module)).read_bytes())
        digest.update(_constants(module).encode())
    libraries = {name: _library_version(name) for name in FIT_LIBRARIES}
    libraries["python"] = platform.python_version()
    digest.update(json.dumps(libraries, sort_keys=True).encode())
    return digest.hexdigest()


def fit_runtime() -> dict[str, str]:
    """The Keras backend, device kind and precision policy a fit here would run under (the
    choice `device.configure_keras` makes: CBI_NEURAL_PRECISION, else the device's policy)."""
    from cbi_platform.models.device import detect_device

    info = detect_device()
    wanted = os.environ.get("CBI_NEURAL_PRECISION", "auto")
    precision = info.precision if wanted == "auto" else wanted
    return {"backend": info.backend, "device": info.kind, "precision": precision}


def _update(digest, value) -> None:
    if value is None:
        digest.update(b"<none>")
        return
    array = np.ascontiguousarray(np.asarray(value))
    digest.update(str(array.dtype).encode() + str(array.shape).encode())
    digest.update(array.tobytes())


def fit_key(spec: ModelSpec, data: FitData) -> str:
    """sha256 of the spec, every input of the fit, the code that fits and its runtime."""
    digest = hashlib.sha256()
    described = {
        "code": fit_code_version(),
        "runtime": fit_runtime(),
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
