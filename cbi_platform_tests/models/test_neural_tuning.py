"""Tuning without peeking: the search sees only rows known by the last development origin; its
choice is recorded as data and applied, fixed, to the zoo's networks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_platform.evaluation import horizon_run
from cbi_platform.evaluation.origins import DEVELOPMENT, SCORED
from cbi_platform.evaluation.tuning_data import development_data
from cbi_platform.models import neural_tuned, neural_tuning
from cbi_platform.models.base import ModelSpec
from cbi_platform.models.registry import load_specs
from cbi_platform.settings import load_protocol
from cbi_platform_tests.conftest import _business_days


def _frame(n: int = 700, horizon_days: int = 5, p: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    days = _business_days(dt.date(2018, 1, 1), n)
    price = 40 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    X = rng.normal(size=(n, p))
    target_price = np.full(n, np.nan)
    target_price[:-horizon_days] = price[horizon_days:]
    target_date = [days[i + horizon_days] if i + horizon_days < n else None for i in range(n)]
    return pl.DataFrame(
        {
            "date": days,
            "horizon": "1w",
            "horizon_days": horizon_days,
            "price": price,
            "target_date": target_date,
            "target_price": target_price,
            "target_logret": np.log(target_price / price),
            **{f"f_{j}": X[:, j] for j in range(p)},
        }
    ).with_columns(pl.col("target_price").fill_nan(None), pl.col("target_logret").fill_nan(None))


def _cfg():
    protocol = load_protocol(
        None,
        anchor="2020-06-01",
        span=120,
        n_scored=6,
        end_offset=5,
        n_development=8,
        n_calibration=4,
        min_first_origin_row=200,
    )
    return horizon_run.ProtocolConfig(protocol, n_workers=1)


def test_the_search_sees_nothing_after_the_last_development_origin():
    frame, cfg = _frame(), _cfg()
    data, last = development_data(frame, "1w", cfg)
    plan = horizon_run.origin_plan(frame["date"], "1w", cfg)
    roles = dict(zip(plan.dates, plan.role, strict=True))
    assert roles[last] == DEVELOPMENT
    first_scored = min(d for d, r in roles.items() if r == SCORED)
    assert last < first_scored
    rows = frame.filter(pl.col("date") <= last)
    assert data.history.shape[0] == rows.height  # no feature row after the origin
    used = rows[data.train_rows.tolist()]
    assert used["target_date"].max() <= last  # no target after it either
    # Every row whose target is known by then is used; the h rows before it are not.
    assert data.X.shape[0] == rows.filter(pl.col("target_date") <= last).height
    np.testing.assert_allclose(data.y, used["target_logret"].to_numpy())


def test_random_search_records_a_choice_from_its_space_and_the_registry_applies_it(
    tmp_path, monkeypatch
):
    frame, cfg = _frame(), _cfg()
    data, last = development_data(frame, "1w", cfg)
    spec = ModelSpec("nn_gru_t", "gru", "neural", {"lookback": 4, "batch_size": 32})
    result = neural_tuning.tune(spec, data, "1w", last, max_trials=2, epochs=1)
    assert len(result.trials) == 2
    for key, value in result.best.items():
        assert value in neural_tuning.SEARCH_SPACE[key]
    assert result.best_val_loss == min(t["val_loss"] for t in result.trials)
    assert result.last_train_date == last.isoformat()

    path = tmp_path / "neural_tuned.yaml"
    neural_tuning.write_tuned([result], {"data": "synthetic"}, path=path)
    monkeypatch.setattr(neural_tuned, "TUNED_PATH", path)
    neural_tuned.tuned_table.cache_clear()
    try:
        assert neural_tuned.tuned_params("gru", "1w", str(path)) == result.best
        gru_1w = {s.name: s for s in load_specs(horizon="1w")}["nn_gru"]
        assert {k: gru_1w.params[k] for k in result.best} == result.best
        # Another horizon, or a family not tuned, keeps the spec's own values.
        gru_3m = {s.name: s for s in load_specs(horizon="3m")}["nn_gru"]
        assert gru_3m.params == {s.name: s for s in load_specs()}["nn_gru"].params
        # A record that differs from every spec default shows the registry applies it.
        path.write_text("tuned:\n  gru:\n    1w: {units: 32, dropout: 0.2}\n")
        neural_tuned.tuned_table.cache_clear()
        by_name = {s.name: s for s in load_specs(horizon="1w")}
        assert by_name["nn_gru"].params["units"] == 32
        assert by_name["nn_gru"].params["dropout"] == 0.2
        assert by_name["nn_lstm"].params["units"] == 16  # another family: untouched
        # A specs file of one's own (tests, experiments) is taken as written.
        own = tmp_path / "specs.yaml"
        own.write_text("models:\n  - {name: g, family: gru, kind: neural}\n")
        assert load_specs(own, horizon="1w")[0].params == {}
    finally:
        neural_tuned.tuned_table.cache_clear()


def test_too_little_development_data_is_a_clear_error():
    frame = _frame(n=150)
    with pytest.raises(ValueError, match="too few for the protocol"):
        development_data(frame, "1w", _cfg())
