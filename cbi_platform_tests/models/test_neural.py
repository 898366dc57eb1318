"""The Keras sequence networks: parameters, windows, validation split, learning, no look-ahead,
determinism, Kernel SHAP contributions and persistence. Tiny data and networks throughout."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
try:  # one thread, before any op runs (another test module may have run ops already)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

from cbi_platform.models.base import FitData, ModelSpec, model_input  # noqa: E402
from cbi_platform.models.neural import (  # noqa: E402
    FAMILIES,
    MIN_VALIDATION_ROWS,
    NeuralModel,
    make_windows,
    split_train_val,
    window_index,
)
from cbi_platform.models.registry import NEURAL_FAMILIES  # noqa: E402

P = 4
NAMES = [f"f{i}" for i in range(P)]
TINY = {"lookback": 4, "units": 4, "epochs": 2, "batch_size": 16}
FAMILY_PARAMS = {
    "dense": {},
    "lstm": {"layers": 2},
    "gru": {},
    "gru_attention": {},
    "tcn": {"filters": 4, "kernel_size": 2, "dilations": [1, 2]},
    "cnn_lstm": {"filters": 4, "kernel_size": 2},
    "attention": {"heads": 2},
}


def _spec(family: str, name: str | None = None, **params) -> ModelSpec:
    return ModelSpec(name or f"nn_{family}", family, "neural", params)


def _series(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with feature 3 constant; y = 0.5 * mean of feature 0 over the last 4 rows."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, P))
    X[:, 3] = 2.0
    x0 = X[:, 0]
    y = np.array([0.5 * x0[max(0, t - 3) : t + 1].mean() for t in range(n)])
    return X, y


def _data(X: np.ndarray, y: np.ndarray, **extra) -> FitData:
    return FitData(X=X, y=y, prices=np.ones(5), horizon_days=1, feature_names=list(NAMES), **extra)


_FITTED: dict[str, NeuralModel] = {}


def _fitted(family: str) -> NeuralModel:
    """One tiny fitted model per family, shared by the tests that only read it."""
    if family not in _FITTED:
        X, y = _series(120)
        spec = _spec(family, **TINY, **FAMILY_PARAMS[family])
        _FITTED[family] = NeuralModel(spec).fit(_data(X, y))
    return _FITTED[family]


_LEARNED: list[NeuralModel] = []


def _learned() -> NeuralModel:
    if not _LEARNED:
        X, y = _series(400)
        spec = _spec("gru", lookback=4, units=8, epochs=3, batch_size=16, learning_rate=0.01)
        _LEARNED.append(NeuralModel(spec).fit(_data(X, y)))
    return _LEARNED[0]


# ---- construction ---------------------------------------------------------------------------


def test_families_match_the_registry():
    assert set(FAMILIES) == set(NEURAL_FAMILIES)


def test_importing_and_building_does_not_import_keras():
    code = (
        "import sys\n"
        "from cbi_platform.models.base import ModelSpec\n"
        "from cbi_platform.models.neural import NeuralModel\n"
        "m = NeuralModel(ModelSpec('x', 'gru', 'neural', {'lookback': 8}))\n"
        "assert m.lookback == 8\n"
        "print('keras' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("family", "params", "message"),
    [
        ("gru", {"colour": 1}, "unknown gru params"),
        ("dense", {"heads": 2}, "unknown dense params"),  # heads is attention-only
        ("lstm", {"batch_size": 64}, "cap of 32"),
        ("tcn", {"batch_size": 33}, "cap of 32"),
        ("attention", {"batch_size": 32}, "cap of 16"),
        ("dense", {"batch_size": 512}, "cap of 256"),
        ("attention", {"heads": 5}, "heads=5"),
        ("gru", {"lookback": 257}, "lookback=257"),
        ("gru", {"layers": 3}, "layers=3"),
        ("gru", {"epochs": 51}, "epochs=51"),
        ("tcn", {"dilations": [1, 0]}, "dilations"),
    ],
)
def test_invalid_params_name_the_spec(family, params, message):
    with pytest.raises(ValueError, match=message) as info:
        NeuralModel(_spec(family, name="bad_spec_name", **params))
    assert "bad_spec_name" in str(info.value)


def test_defaults_and_caps_accepted():
    model = NeuralModel(_spec("attention", batch_size=16, heads=4, lookback=256))
    assert (model.lookback, model.batch_size, model.heads, model.epochs) == (256, 16, 4, 10)
    assert NeuralModel(_spec("dense", batch_size=256)).batch_size == 256
    assert NeuralModel(_spec("gru")).lookback == 20


# ---- pure helpers ---------------------------------------------------------------------------


def test_windows_pad_the_start_by_repeating_the_first_row():
    history = np.arange(6, dtype=float).reshape(6, 1)
    assert window_index(np.array([0, 1, 4]), 3).tolist() == [[0, 0, 0], [0, 0, 1], [2, 3, 4]]
    w = make_windows(history, np.array([0, 4]), 3)
    assert w.shape == (2, 3, 1)
    assert w[:, :, 0].tolist() == [[0, 0, 0], [2, 3, 4]]


def test_windows_from_history_match_consecutive_rows_and_follow_skipped_rows():
    X, y = _series(40)
    model = NeuralModel(_spec("gru", lookback=4))
    plain = model.training_windows(_data(X, y))
    contiguous = model.training_windows(_data(X, y, history=X, train_rows=np.arange(40)))
    np.testing.assert_array_equal(plain, contiguous)
    # Non-contiguous rows (a regime specialist): each window is the true preceding history.
    rows = np.array([0, 1, 2, 5, 6, 9, 20])
    skipped = model.training_windows(_data(X[rows], y[rows], history=X, train_rows=rows))
    np.testing.assert_array_equal(skipped[3], X[[2, 3, 4, 5]])
    np.testing.assert_array_equal(skipped[5], X[[6, 7, 8, 9]])
    np.testing.assert_array_equal(skipped[1], X[[0, 0, 0, 1]])
    consecutive = model.training_windows(_data(X[rows], y[rows]))
    assert not np.array_equal(skipped[3], consecutive[3])  # X[rows] alone would read rows 1, 2


def test_split_train_val_is_the_time_ordered_tail():
    train, val = split_train_val(100, 0.2)
    assert val.tolist() == list(range(80, 100))
    assert train.tolist() == list(range(80))
    train, val = split_train_val(100, 0.15, gap=5)
    assert val.tolist() == list(range(85, 100)) and train.tolist() == list(range(80))
    train, val = split_train_val(MIN_VALIDATION_ROWS - 1, 0.2)
    assert val.size == 0 and train.size == MIN_VALIDATION_ROWS - 1
    train, val = split_train_val(50, 0.0)
    assert val.size == 0 and train.size == 50
    with pytest.raises(ValueError):
        split_train_val(50, 1.0)


# ---- fit and predict ------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILY_PARAMS))
def test_every_family_fits_and_predicts(family):
    model = _fitted(family)
    X, _ = _series(30, seed=5)
    pred = model.predict(X, np.ones(3))
    assert pred.shape == (30,) and np.all(np.isfinite(pred))
    assert model.lookback == 4 and model_input(model, X, 10).shape == (4, P)
    assert model.n_params > 0 and 1 <= model.epochs_run <= 2 and model.fit_seconds > 0
    assert model.device == "cpu" and model.precision == "float32"
    assert model.peak_memory is not None and model.peak_memory["rss_bytes"] > 0
    assert len(model.history) == model.epochs_run
    # The validation slice is the tail of the training rows, after a purge of horizon rows.
    assert model.val_index.tolist() == list(range(120 - 18, 120))
    assert model.train_index.max() < model.val_index.min() - 1


@pytest.mark.parametrize("family", ["gru", "tcn", "attention"])
def test_no_look_ahead_in_predict(family):
    model = _fitted(family)
    X, _ = _series(40, seed=7)
    full = model.predict(X)
    for k in (0, 2, 10, 39):
        truncated = model.predict(X[: k + 1])
        np.testing.assert_allclose(truncated[-1], full[k], rtol=1e-5, atol=1e-7)
    # What the walk-forward engine passes (the lookback rows ending at the origin) agrees too.
    np.testing.assert_allclose(model.predict(model_input(model, X, 20))[-1], full[20], rtol=1e-5)
    # ...and a change after row k cannot move forecast k.
    changed = X.copy()
    changed[21:] += 5.0
    np.testing.assert_allclose(model.predict(changed)[:21], full[:21], rtol=1e-5, atol=1e-7)


def test_gru_learns_a_function_of_the_window():
    model = _learned()
    X, y = _series(400)
    pred = model.predict(X)
    val = model.val_index
    mse = float(np.mean((pred[val] - y[val]) ** 2))
    assert mse < 0.3 * float(np.var(y[val])), (mse, np.var(y[val]))
    # A model blind to the inputs (the training mean) does not get there.
    assert float(np.mean((y[val] - y[model.train_index].mean()) ** 2)) > 0.8 * np.var(y[val])


def test_same_seed_same_model_and_history_path_matches_plain_x():
    # The shared GRU was fitted on plain X with seed 0; refitting the same spec on the same rows
    # through history/train_rows must give the very same network (same windows, same seed).
    reference = _fitted("gru")
    X, y = _series(120)
    again = NeuralModel(reference.spec).fit(_data(X, y, history=X, train_rows=np.arange(120)))
    Xp, _ = _series(30, seed=9)
    expected = reference.predict(Xp)
    np.testing.assert_array_equal(again.predict(Xp), expected)
    assert again.history == reference.history
    assert np.ptp(expected) > 0  # not a degenerate constant network


def test_few_rows_train_without_validation():
    X, y = _series(20)
    model = NeuralModel(_spec("dense", lookback=3, units=4, epochs=2)).fit(_data(X, y))
    assert model.val_index.size == 0 and model.train_index.size == 20 and model.epochs_run == 2
    assert np.all(np.isfinite(model.predict(X)))
    with pytest.raises(ValueError, match="no training rows"):
        NeuralModel(_spec("dense")).fit(_data(X[:0], y[:0]))


def test_weighted_spec_needs_weights():
    X, y = _series(40)
    spec = ModelSpec("w", "dense", "neural", {"lookback": 2}, weighted=True)
    with pytest.raises(ValueError, match="sample_weight is None"):
        NeuralModel(spec).fit(_data(X, y))


# ---- contributions --------------------------------------------------------------------------


def test_contributions_are_additive_and_ignore_a_constant_feature():
    model = _learned()
    X, _ = _series(30, seed=11)
    vector = model.contributions(X, list(NAMES))
    assert vector.shape == (P + 1,)
    phi, base = vector[:-1], vector[-1]
    prediction = model.predict(X)[-1]
    scale = abs(base) + np.abs(phi).sum()
    assert abs(base + phi.sum() - prediction) <= 1e-6 * scale
    assert abs(phi[3]) <= 1e-6 * scale  # constant in training and here: the net cannot see it
    assert np.argmax(np.abs(phi)) == 0  # y depends on feature 0 only
    # The base is the mean forecast over the stored background windows.
    assert base == pytest.approx(float(model._forward(model.background).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="feature names"):
        model.contributions(X, ["a", "b", "c", "d"])


# ---- persistence ----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    model = _fitted("attention")  # has the custom position-embedding layer
    X, _ = _series(25, seed=3)
    written = model.save(tmp_path / "m")
    assert {p.name for p in written} == {"model.keras", "saved_model", "scaler.json"}
    assert (tmp_path / "m" / "saved_model" / "saved_model.pb").exists()
    restored = NeuralModel.load(tmp_path / "m", model.spec)
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    assert restored.feature_names == NAMES and restored.lookback == model.lookback
    sig = model.signature()
    assert sig["inputs"]["shape"] == [None, 4, P] and sig["outputs"]["shape"] == [None]


@pytest.mark.parametrize("family", ["gru_attention", "attention"])
def test_pickle_round_trip(family):
    model = _fitted(family)
    X, _ = _series(25, seed=4)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    assert restored.n_params == model.n_params and restored.history == model.history
    unfitted = pickle.loads(pickle.dumps(NeuralModel(_spec("gru"))))
    with pytest.raises(RuntimeError, match="not fitted"):
        unfitted.predict(X)


def test_max_train_rows_trains_on_the_most_recent_rows_only():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3))
    y = rng.normal(size=300) * 0.01
    data = FitData(X, y, np.linspace(40, 41, 300), 5, ["a", "b", "c"])
    spec = ModelSpec(
        "nn_recent",
        "gru",
        "neural",
        {"lookback": 3, "units": 4, "epochs": 1, "max_train_rows": 120},
    )
    model = NeuralModel(spec)
    recent = model._recent(data)
    np.testing.assert_array_equal(recent.X, X[-120:])
    np.testing.assert_array_equal(recent.y, y[-120:])
    model.fit(data)
    assert model.train_index.size + model.val_index.size <= 120
    # The standardisation comes from those rows, not the whole history.
    np.testing.assert_allclose(model.feature_mean, X[-120:].mean(axis=0))
    with pytest.raises(ValueError, match="nn_recent"):
        NeuralModel(ModelSpec("nn_recent", "gru", "neural", {"max_train_rows": 10}))


@pytest.mark.parametrize("family", ["gru", "attention"])
def test_inference_graph_is_traced_once_and_matches_keras_predict(family):
    """Any batch size goes through one traced graph per network (predict_on_batch traced one
    per new shape: seconds over a cold daily refresh), with keras' own numbers."""
    model = _fitted(family)
    rng = np.random.default_rng(5)
    lookback, p = model.lookback, len(model.feature_names)
    for n in (1, 16, 3, 1030):
        windows = rng.normal(size=(n, lookback, p)).astype(np.float32)
        expected = np.asarray(model.network.predict(windows, verbose=0), dtype=np.float64)
        got = model._forward(windows)
        np.testing.assert_array_equal(
            got, model.target_mean + model.target_scale * expected.reshape(-1)
        )
    assert model._graph().experimental_get_tracing_count() == 1
    restored = pickle.loads(pickle.dumps(model))  # the graph is not pickled, it is rebuilt
    assert "_graph_fn" not in restored.__dict__
    np.testing.assert_array_equal(restored._forward(windows), model._forward(windows))
