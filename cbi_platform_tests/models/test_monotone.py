import datetime as dt

import numpy as np
import polars as pl

from cbi_platform.models.base import ModelSpec
from cbi_platform.models.monotone import verify_monotone_specs
from cbi_platform.models.registry import load_specs

PARAMS = {"boosting": "gbdt", "n_estimators": 60, "num_leaves": 7, "min_data_in_leaf": 20}


def _frame(n=600, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    other = rng.normal(size=n)
    y = 0.02 * np.sin(2.5 * z) + 0.002 * rng.normal(size=n)  # not monotone in z
    dates = [dt.date(2010, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    return pl.DataFrame(
        {
            "date": dates,
            "horizon": "1m",
            "horizon_days": 21,
            "price": 40.0,
            "target_date": dates,
            "target_price": 40.0,
            "target_logret": y,
            "f_zl_z252": z,
            "f_other": other,
        }
    )


def test_constrained_model_is_monotone_where_the_unconstrained_one_is_not():
    constrained = ModelSpec("c", "lightgbm", "tree", {**PARAMS, "monotone": {"f_zl_z252": -1}})
    results = verify_monotone_specs(_frame(), [constrained])
    assert [(r.model, r.feature, r.sign, r.monotone) for r in results] == [
        ("c", "f_zl_z252", -1, True)
    ]
    # The same relation without the constraint would fail the check the Dagster asset runs.
    from cbi_platform.models.base import FitData
    from cbi_platform.models.registry import build_model
    from cbi_platform.models.trees import check_monotone

    frame = _frame()
    X = frame.select("f_zl_z252", "f_other").to_numpy()
    free = build_model(ModelSpec("u", "lightgbm", "tree", PARAMS)).fit(
        FitData(
            X, frame["target_logret"].to_numpy(), np.full(600, 40.0), 21, ["f_zl_z252", "f_other"]
        )
    )
    assert not check_monotone(free, X, "f_zl_z252", -1)


def test_the_zoo_lists_a_constrained_model():
    assert any(s.params.get("monotone") for s in load_specs(horizon="1m"))
