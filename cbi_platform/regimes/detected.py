"""The detected regime: crisis / bull / bear / normal, from information available at the date.

Labels are a rule on trailing returns and volatility of the target (no look-ahead); a LightGBM
classifier then forecasts the label, scored out of sample on the current regime and on the
regime one month (21 trading days) ahead. The label at an origin is what metrics, zones and
specialists are conditioned on; the classifier's next-month probabilities are the outlook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
import polars as pl

REGIMES = ("crisis", "bull", "bear", "normal")
NEXT_MONTH = 21


@dataclass(frozen=True)
class RegimeRule:
    vol_window: int = 21
    return_window: int = 63
    bull_return: float = 0.08  # trailing 63-day log return above this: bull
    bear_return: float = -0.08
    crisis_quantile: float = 0.90  # trailing vol above this quantile of its own past: crisis
    min_history: int = 252


def regime_inputs(dates: pl.Series, prices: np.ndarray) -> pd.DataFrame:
    """Trailing-only inputs of the rule and the classifier, indexed like the price series."""
    logp = np.log(prices)
    s = pd.Series(logp)
    r1 = s.diff()
    out = pd.DataFrame({"date": dates.to_list()})
    for w in (5, 21, 63, 126):
        out[f"ret_{w}"] = s - s.shift(w)
    for w in (10, 21, 63):
        out[f"vol_{w}"] = r1.rolling(w).std() * np.sqrt(252)
    out["vol_ratio"] = out["vol_10"] / out["vol_63"]
    out["drawdown_252"] = s - s.rolling(252, min_periods=21).max()
    out["rally_252"] = s - s.rolling(252, min_periods=21).min()
    return out


# The two parts of the rule that could read the future, as parameters so a truncation gate
# (regimes/truncation.py) can be shown to catch a planted look-ahead in either.
InputsFn = Callable[[pl.Series, np.ndarray], pd.DataFrame]
ThresholdFn = Callable[[pd.Series, RegimeRule], pd.Series]


def crisis_threshold(vol: pd.Series, rule: RegimeRule) -> pd.Series:
    """Crisis threshold at t: the rule's quantile of the vols strictly before t (expanding), so
    the label never peeks at its own day's rank."""
    return vol.shift(1).expanding(min_periods=rule.min_history).quantile(rule.crisis_quantile)


def label_regimes(
    dates: pl.Series,
    prices: np.ndarray,
    rule: RegimeRule = RegimeRule(),
    *,
    inputs_fn: InputsFn = regime_inputs,
    threshold_fn: ThresholdFn = crisis_threshold,
) -> pl.DataFrame:
    """One label per date using only data up to that date (expanding quantile of past vol)."""
    inputs = inputs_fn(dates, prices)
    vol = inputs[f"vol_{rule.vol_window}"]
    threshold = threshold_fn(vol, rule)
    ret = inputs[f"ret_{rule.return_window}"]
    label = np.where(
        (vol > threshold) & (ret < 0),
        "crisis",
        np.where(
            ret > rule.bull_return, "bull", np.where(ret < rule.bear_return, "bear", "normal")
        ),
    )
    label = np.where(threshold.isna() | ret.isna(), None, label)
    return pl.DataFrame(
        {
            "date": dates,
            "regime": pl.Series(label.tolist(), dtype=pl.Utf8),
            "trailing_vol": vol.to_numpy(),
            "trailing_return": ret.to_numpy(),
            "crisis_threshold": threshold.to_numpy(),
        }
    )


CLASSIFIER_PARAMS = dict(
    objective="multiclass",
    num_class=len(REGIMES),
    n_estimators=150,
    learning_rate=0.05,
    num_leaves=15,
    min_child_samples=50,
    subsample=0.8,
    subsample_freq=1,
    colsample_bytree=0.8,
    n_jobs=1,
    verbose=-1,
)


def _classifier():
    return lgb.LGBMClassifier(**CLASSIFIER_PARAMS)


@dataclass(frozen=True)
class ClassifierScore:
    target: str  # "current" or "next_month"
    accuracy: float
    balanced_accuracy: float
    baseline: str
    baseline_accuracy: float
    n_test: int


def _balanced(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def classifier_matrix(
    dates: pl.Series, prices: np.ndarray, inputs_fn: InputsFn = regime_inputs
) -> tuple[np.ndarray, list[str]]:
    """The classifier's features: every trailing input column, as floats (NaN for missing)."""
    inputs = inputs_fn(dates, prices)
    cols = [c for c in inputs.columns if c != "date"]
    return inputs[cols].to_numpy(dtype=float), cols


def walk_forward_regime_scores(
    dates: pl.Series, prices: np.ndarray, labels: pl.Series, n_folds: int = 6, fold_size: int = 126
) -> tuple[list[ClassifierScore], pl.DataFrame]:
    """Score the classifier out of sample on the current and the next month's regime.

    Test blocks tile the last n_folds*fold_size dates. For a block starting at row s the model
    trains on rows t with label row t+k <= s - 1 (k = 0 current, 21 next month): an embargo.
    Baselines: for the current regime the majority class of the training rows; for next month,
    persistence (today's label), which is hard to beat.
    """
    X, _ = classifier_matrix(dates, prices)
    y = np.array([REGIMES.index(v) if v is not None else -1 for v in labels.to_list()])
    n = len(y)
    scores, preds = [], []
    for target, k in (("current", 0), ("next_month", NEXT_MONTH)):
        y_target = np.full(n, -1)
        y_target[: n - k] = y[k:]
        p_all, t_all, base_all = [], [], []
        for f in range(n_folds):
            s = n - k - (n_folds - f) * fold_size
            e = min(s + fold_size, n - k)
            train = np.arange(0, max(s - k, 0))
            train = train[(y_target[train] >= 0) & (y[train] >= 0)]
            test = np.arange(s, e)
            test = test[(y_target[test] >= 0) & (y[test] >= 0)]
            if len(train) < 500 or len(test) == 0:
                continue
            model = _classifier().fit(X[train], y_target[train])
            classes = model.classes_
            pred = classes[np.argmax(model.predict_proba(X[test]), axis=1)]
            if k == 0:
                base = np.full(len(test), np.bincount(y_target[train]).argmax())
            else:
                base = y[test]
            p_all.append(pred), t_all.append(y_target[test]), base_all.append(base)
            preds.append(
                pl.DataFrame(
                    {
                        "date": dates.gather(test),
                        "target": target,
                        "actual": [REGIMES[i] for i in y_target[test]],
                        "predicted": [REGIMES[i] for i in pred],
                    }
                )
            )
        if not p_all:
            continue
        p, t, b = np.concatenate(p_all), np.concatenate(t_all), np.concatenate(base_all)
        scores.append(
            ClassifierScore(
                target=target,
                accuracy=float(np.mean(p == t)),
                balanced_accuracy=_balanced(t, p),
                baseline="majority" if k == 0 else "persistence",
                baseline_accuracy=float(np.mean(b == t)),
                n_test=len(t),
            )
        )
    frame = pl.concat(preds) if preds else pl.DataFrame()
    return scores, frame


def regime_outlook(dates: pl.Series, prices: np.ndarray, labels: pl.Series) -> dict[str, float]:
    """Probabilities of each regime one month after the last date, from a model trained on all
    rows whose next-month label is known."""
    X, _ = classifier_matrix(dates, prices)
    y = np.array([REGIMES.index(v) if v is not None else -1 for v in labels.to_list()])
    n = len(y)
    y_next = np.full(n, -1)
    y_next[: n - NEXT_MONTH] = y[NEXT_MONTH:]
    train = np.flatnonzero((y_next >= 0) & (y >= 0))
    model = _classifier().fit(X[train], y_next[train])
    proba = model.predict_proba(X[-1:])[0]
    return {REGIMES[c]: float(p) for c, p in zip(model.classes_, proba, strict=True)}
