"""Evaluation metrics named in `evaluation.metrics`, computed with numpy alone.

Regression: MAPE (a fraction, rows whose actual value is 0 left out), MAE, RMSE, MSE, MASE,
R-squared. Classification: accuracy, precision, recall, F-score, AUC. Binary labels use the
positive class (1/True, or the larger of the two labels, or `positive_label`); with more than two
classes precision, recall and F-score are macro averages over the classes (one against the rest)
and AUC needs one score column per class (`y_score` of shape (n, k), classes in sorted order) and
is their macro average. A metric that is undefined for the data (MASE with a zero scale, AUC with
one class present, MAPE with only zero actuals) is NaN. Works with numpy 1.x and 2.x: recipe
environments import it.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from .errors import ConfigError

__all__ = ["REGRESSION_METRICS", "CLASSIFICATION_METRICS", "METRIC_NAMES", "canonical_metric",
           "compute_metrics", "parse_metric_names"]

REGRESSION_METRICS = ("MAPE", "MAE", "RMSE", "MASE", "MSE", "R-squared")
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "F-score", "AUC")
METRIC_NAMES = REGRESSION_METRICS + CLASSIFICATION_METRICS

_ALIASES = {
    "mape": "MAPE", "mae": "MAE", "rmse": "RMSE", "mase": "MASE", "mse": "MSE",
    "r-squared": "R-squared", "rsquared": "R-squared", "r_squared": "R-squared", "r2": "R-squared",
    "r^2": "R-squared", "r2_score": "R-squared",
    "accuracy": "accuracy", "acc": "accuracy",
    "precision": "precision", "recall": "recall",
    "f-score": "F-score", "fscore": "F-score", "f_score": "F-score", "f1": "F-score",
    "f1-score": "F-score", "f1_score": "F-score", "f-measure": "F-score", "fmeasure": "F-score",
    "auc": "AUC", "roc_auc": "AUC", "auroc": "AUC", "roc-auc": "AUC", "areaunderroc": "AUC",
}


def canonical_metric(name: str) -> str:
    """The canonical spelling of a metric name (`r2` -> `R-squared`); unknown names raise."""
    key = str(name).strip().lower().replace(" ", "")
    if key in _ALIASES:
        return _ALIASES[key]
    raise ConfigError(f"Unknown metric {str(name).strip()!r} in evaluation.metrics: known metrics "
                      f"are {', '.join(METRIC_NAMES)}")


def parse_metric_names(names: Union[str, Iterable[str]]) -> list[str]:
    """`"MAPE,MAE"` or `["MAPE", "mae"]` as canonical names, in order, without repeats."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in items:
        if str(item).strip() == "":
            continue
        name = canonical_metric(item)
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("evaluation.metrics names no metric: give a comma-separated list, e.g. "
                          "MAPE,MAE,RMSE")
    return out


def compute_metrics(names: Union[str, Iterable[str]], y_true: Any, y_pred: Any, *,
                    scaling: Any = None, y_score: Any = None,
                    positive_label: Any = None) -> list[dict[str, Any]]:
    """`[{name, value, valueType: "double"}]` for each metric in `names`, comparing `y_true` with
    `y_pred` (predicted values or labels). MASE divides MAE by the MAE of `scaling` (a naive
    forecast, one value per row) when given, else by the mean absolute one-step difference of
    `y_true` in its order. AUC ranks `y_score` when given, else `y_pred`."""
    wanted = parse_metric_names(names)
    truth = _array(y_true, "y_true")
    pred = _array(y_pred, "y_pred")
    if truth.shape[0] != pred.shape[0]:
        raise ConfigError(f"Cannot compare {truth.shape[0]} actual values with "
                          f"{pred.shape[0]} predictions: the counts differ")
    if truth.shape[0] == 0:
        raise ConfigError("Cannot compute metrics on no rows: the evaluation set is empty")
    regression = [n for n in wanted if n in REGRESSION_METRICS]
    classification = [n for n in wanted if n in CLASSIFICATION_METRICS]
    values: dict[str, float] = {}
    if regression:
        values.update(_regression(regression, truth, pred, scaling))
    if classification:
        values.update(_classification(classification, truth, pred, y_score, positive_label))
    return [{"name": n, "value": float(values[n]), "valueType": "double"} for n in wanted]


def _array(values: Any, what: str) -> np.ndarray:
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    array = np.asarray(values)
    if array.ndim == 0:
        raise ConfigError(f"{what} must be a sequence of values, got a single value")
    return array


def _numeric(values: np.ndarray, what: str) -> np.ndarray:
    try:
        out = values.astype("float64")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Regression metrics need numbers in {what}: {exc}") from exc
    bad = int(np.count_nonzero(~np.isfinite(out)))
    if bad:
        raise ConfigError(f"{what} holds {bad} missing or infinite value(s): regression metrics "
                          "need a number in every row")
    return out


def _regression(names: Sequence[str], truth: np.ndarray, pred: np.ndarray,
                scaling: Any) -> dict[str, float]:
    actual = _numeric(truth.reshape(-1), "y_true (the label column)")
    predicted = _numeric(pred.reshape(-1), "y_pred (the prediction column)")
    error = predicted - actual
    mse = float(np.mean(error ** 2))
    mae = float(np.mean(np.abs(error)))
    out: dict[str, float] = {"MAE": mae, "MSE": mse, "RMSE": math.sqrt(mse)}
    if "MAPE" in names:
        nonzero = actual != 0
        out["MAPE"] = (float(np.mean(np.abs(error[nonzero]) / np.abs(actual[nonzero])))
                       if nonzero.any() else float("nan"))
    if "R-squared" in names:
        total = float(np.sum((actual - actual.mean()) ** 2))
        residual = float(np.sum(error ** 2))
        out["R-squared"] = (1.0 - residual / total) if total > 0 else (
            1.0 if residual == 0 else float("nan"))
    if "MASE" in names:
        if scaling is not None:
            naive = _numeric(_array(scaling, "scaling").reshape(-1), "the scaling column")
            if naive.shape[0] != actual.shape[0]:
                raise ConfigError(f"The scaling column has {naive.shape[0]} values for "
                                  f"{actual.shape[0]} rows")
            scale = float(np.mean(np.abs(actual - naive)))
        else:
            scale = float(np.mean(np.abs(np.diff(actual)))) if actual.shape[0] > 1 else 0.0
        out["MASE"] = mae / scale if scale > 0 else float("nan")
    return out


def _same_kind(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels made comparable: numbers as numbers (so 1 == 1.0 == True), else as strings."""
    def as_number(a: np.ndarray) -> Optional[np.ndarray]:
        if a.dtype.kind in "biuf":
            return a.astype("float64")
        try:
            return a.astype("float64")
        except (TypeError, ValueError):
            return None

    t, p = as_number(truth), as_number(pred)
    if t is not None and p is not None:
        return t, p
    return truth.astype(str), pred.astype(str)


def _classification(names: Sequence[str], truth: np.ndarray, pred: np.ndarray, y_score: Any,
                    positive_label: Any) -> dict[str, float]:
    if truth.ndim != 1:
        raise ConfigError("Classification metrics need one label per row in y_true")
    out: dict[str, float] = {}
    labels_pred = pred if pred.ndim == 1 else None
    if labels_pred is None and any(n != "AUC" for n in names):
        raise ConfigError("accuracy, precision, recall and F-score need one predicted label per "
                          "row; give per-class scores as y_score")
    t, p = _same_kind(truth, labels_pred if labels_pred is not None else truth)
    classes = np.unique(t)
    if labels_pred is not None:
        out["accuracy"] = float(np.mean(t == p))
    binary = classes.shape[0] <= 2
    if binary:
        positive = _positive(classes, positive_label, t)
        if labels_pred is not None:
            out.update(_prf(t == positive, p == positive))
    elif labels_pred is not None:
        per_class = [_prf(t == c, p == c) for c in classes]
        for key in ("precision", "recall", "F-score"):
            out[key] = float(np.mean([m[key] for m in per_class]))
    if "AUC" in names:
        score = _array(y_score, "y_score") if y_score is not None else pred
        if score.shape[0] != t.shape[0]:
            raise ConfigError(f"y_score has {score.shape[0]} rows for {t.shape[0]} labels")
        if binary:
            if score.ndim == 2:
                score = score[:, -1]   # (n, 2) probabilities: the positive (last sorted) class
            if score.dtype.kind not in "biuf":   # predicted labels, not scores
                score = _same_kind(t, score)[1] == positive
            out["AUC"] = _auc(t == positive, _numeric(score.astype("float64"), "y_score"))
        else:
            if score.ndim != 2 or score.shape[1] != classes.shape[0]:
                raise ConfigError(
                    f"AUC with {classes.shape[0]} classes needs one score column per class "
                    "(y_score of shape (rows, classes), classes in sorted order)")
            scores = _numeric(score, "y_score")
            out["AUC"] = float(np.mean([_auc(t == c, scores[:, i])
                                        for i, c in enumerate(classes)]))
    return out


def _positive(classes: np.ndarray, positive_label: Any, truth: np.ndarray) -> Any:
    if positive_label is not None:
        return float(positive_label) if truth.dtype.kind == "f" else str(positive_label)
    if classes.dtype.kind == "f":
        return 1.0 if (classes == 1.0).any() or classes.shape[0] < 2 else classes.max()
    lowered = [str(c).lower() for c in classes]
    for name in ("1", "true", "yes", "positive"):
        if name in lowered:
            return classes[lowered.index(name)]
    return classes[-1]


def _prf(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    tp = float(np.count_nonzero(actual & predicted))
    fp = float(np.count_nonzero(~actual & predicted))
    fn = float(np.count_nonzero(actual & ~predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f_score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "F-score": f_score}


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    first = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], values.shape[0]]
    group = np.cumsum(first) - 1
    ranks = np.empty(values.shape[0], dtype="float64")
    ranks[order] = ((starts + ends + 1) / 2.0)[group]
    return ranks


def _auc(actual: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count one half)."""
    positives = int(np.count_nonzero(actual))
    negatives = actual.shape[0] - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _ranks(score.reshape(-1))
    return float((ranks[actual].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))
