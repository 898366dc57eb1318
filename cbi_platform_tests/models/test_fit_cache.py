"""The fit cache: a network the walk-forward fitted is reused, not refitted, by the registered
version and the daily decision series; any change to its inputs is a different entry."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from cbi_platform.evaluation import horizon_run
from cbi_platform.models.base import FitData, ModelSpec
from cbi_platform.models.fit_cache import FitCache, fit_key
from cbi_platform.models.neural import NeuralModel
from cbi_platform.models.registry import build_model
from cbi_platform.procurement.decision_series import members_fitted_at
from cbi_platform_tests.models.test_neural_tuning import _cfg, _frame

GRU = ModelSpec("nn_gru_c", "gru", "neural", {"lookback": 4, "units": 4, "epochs": 1})
RIDGE = ModelSpec("ridge", "ridge", "sanity")


def _data(seed: int = 0) -> FitData:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, 3))
    return FitData(X, rng.normal(size=120) * 0.01, np.linspace(40, 41, 130), 5, ["a", "b", "c"])


def test_the_key_changes_with_any_input_and_only_networks_are_kept(tmp_path):
    data = _data()
    assert fit_key(GRU, data) == fit_key(GRU, _data())
    changed = _data()
    changed.y[7] += 1e-9
    assert fit_key(GRU, changed) != fit_key(GRU, data)
    other = dataclasses.replace(GRU, params={**GRU.params, "units": 5})
    assert fit_key(other, data) != fit_key(GRU, data)
    assert fit_key(GRU, dataclasses.replace(data, train_rows=np.arange(120))) != fit_key(GRU, data)

    cache = FitCache(tmp_path)
    first = cache.fit(GRU, data, build_model)
    again = cache.fit(GRU, data, build_model)
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first.predict(data.X[-4:]), again.predict(data.X[-4:]))
    cache.fit(RIDGE, data, build_model)
    assert len(list(tmp_path.rglob("*.joblib"))) == 1  # the ridge fit is not kept


def test_later_steps_reuse_the_walk_forward_fits(tmp_path, monkeypatch):
    frame, cfg = _frame(), dataclasses.replace(_cfg(), fit_cache=str(tmp_path))
    spec = dataclasses.replace(GRU, refit_every=6)
    regimes = frame.select("date", regime=pl.lit("normal"))
    run = horizon_run.member_walk_forward(frame, regimes, "1w", cfg, specs=[spec])
    oof = run.oof.drop_nulls("fitted_at")
    stored = len(list(tmp_path.rglob("*.joblib")))
    assert stored == oof["fitted_at"].n_unique() >= 2

    fits = []
    original = NeuralModel.fit
    monkeypatch.setattr(
        NeuralModel, "fit", lambda self, data: fits.append(1) or original(self, data)
    )
    closes = frame["price"].to_numpy()
    for fitted_at in oof["fitted_at"].unique().to_list():
        model = members_fitted_at(frame, regimes, "1w", fitted_at, [spec], cfg.fit_cache)[spec.name]
        row = oof.filter(pl.col("origin") == fitted_at)  # the fit's own origin
        upto = frame.filter(pl.col("date") <= fitted_at)
        X = upto.select("f_0", "f_1", "f_2").to_numpy()
        forecast = model.predict(X[-4:], closes[: upto.height])[-1]
        assert forecast == row["forecast_logret"][0]  # the very model, not a look-alike
    live = horizon_run.fit_final_models(frame, regimes, "1w", [spec], fit_cache=cfg.fit_cache)
    assert live[spec.name] is not None
    assert fits == []  # nothing was refitted
    # Without the cache the same call fits again.
    horizon_run.fit_final_models(frame, regimes, "1w", [spec])
    assert fits == [1]


def test_a_change_to_the_code_that_fits_or_its_runtime_is_a_miss(tmp_path, monkeypatch):
    """The key covers the code that fits, not only its inputs: after a builder default, the
    fitting code's source, a library version or the precision policy changes, the old entry is
    not served."""
    from cbi_platform.models import fit_cache, neural

    data = _data()
    cache = FitCache(tmp_path)
    cache.fit(GRU, data, build_model)
    cache.fit(GRU, data, build_model)
    assert (cache.misses, cache.hits) == (1, 1)  # unchanged code: a hit
    code, key = fit_cache.fit_code_version(), fit_key(GRU, data)

    # A builder default (the fewest training rows that get a validation slice): a miss.
    monkeypatch.setattr(neural, "MIN_VALIDATION_ROWS", neural.MIN_VALIDATION_ROWS + 1)
    assert fit_cache.fit_code_version() != code
    cache.fit(GRU, data, build_model)
    assert (cache.misses, cache.hits) == (2, 1)
    monkeypatch.undo()
    assert fit_key(GRU, data) == key

    # A default written in a fitting module's file (say patience=3 in the builder): an edit of
    # the file is another code version.
    module = tmp_path / "fitting_module_for_test.py"
    module.write_text("def build(spec):\n    return {'patience': 3}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(fit_cache, "FIT_MODULES", (*fit_cache.FIT_MODULES, module.stem))
    before = fit_cache.fit_code_version()
    module.write_text("def build(spec):\n    return {'patience': 4}\n")
    assert fit_cache.fit_code_version() != before
    monkeypatch.undo()
    # The library versions and the precision policy: other keys.
    monkeypatch.setattr(fit_cache, "_library_version", lambda name: "0.0.0")
    assert fit_key(GRU, data) != key
    monkeypatch.undo()
    monkeypatch.setenv("CBI_NEURAL_PRECISION", "mixed_float16")
    assert fit_key(GRU, data) != key
    monkeypatch.undo()
    assert fit_key(GRU, data) == key


def test_the_code_version_does_not_change_when_the_first_network_is_built():
    """A process's first network fit and its later ones share one key: building the custom
    layer registry on first use is not a change to the code that fits."""
    import subprocess
    import sys

    script = (
        "from cbi_platform.models import fit_cache, neural\n"
        "before = fit_cache.fit_code_version()\n"
        "neural._custom_objects()\n"
        "print(before == fit_cache.fit_code_version())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "True"
