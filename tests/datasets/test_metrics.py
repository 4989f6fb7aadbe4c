"""runtime.metrics against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from runtime.errors import ConfigError
from runtime.metrics import compute_metrics, parse_metric_names


def values(names, y_true, y_pred, **kw):
    return {m["name"]: m["value"] for m in compute_metrics(names, y_true, y_pred, **kw)}


def test_regression_by_hand():
    # errors (pred - true): +1, 0, -1 on actuals 1, 2, 4
    got = values("MAPE,MAE,RMSE,MSE,MASE,R-squared", [1, 2, 4], [2, 2, 3])
    assert got["MAPE"] == pytest.approx((1 / 1 + 0 / 2 + 1 / 4) / 3)       # 0.41667
    assert got["MAE"] == pytest.approx(2 / 3)
    assert got["MSE"] == pytest.approx(2 / 3)
    assert got["RMSE"] == pytest.approx(math.sqrt(2 / 3))
    assert got["MASE"] == pytest.approx((2 / 3) / ((1 + 2) / 2))            # naive steps 1, 2
    assert got["R-squared"] == pytest.approx(1 - 2 / (42 / 9))              # SS_tot = 42/9
    assert list(got) == ["MAPE", "MAE", "RMSE", "MSE", "MASE", "R-squared"]


def test_mase_with_a_scaling_column_and_mape_skips_zero_actuals():
    got = values("MASE", [10, 20, 30], [12, 18, 30], scaling=[11, 22, 27])
    assert got["MASE"] == pytest.approx((4 / 3) / ((1 + 2 + 3) / 3))
    assert values("MAPE", [0, 2, 4], [1, 3, 4])["MAPE"] == pytest.approx((1 / 2 + 0) / 2)
    assert math.isnan(values("MAPE", [0, 0], [1, 2])["MAPE"])
    assert math.isnan(values("MASE", [5, 5, 5], [4, 5, 6])["MASE"])          # zero naive error


def test_pandas_series_inputs_and_one_result_shape():
    metrics = compute_metrics(["mae", "RMSE"], pd.Series([1.0, 3.0]), pd.Series([2.0, 1.0]))
    assert metrics == [{"name": "MAE", "value": 1.5, "valueType": "double"},
                       {"name": "RMSE", "value": pytest.approx(math.sqrt(2.5)),
                        "valueType": "double"}]


def test_binary_classification_by_hand():
    # TP=2 (rows 0, 3), FP=1 (row 4), FN=1 (row 2), TN=1 (row 1)
    y_true = [1, 0, 1, 1, 0]
    y_pred = [1, 0, 0, 1, 1]
    got = values("accuracy,precision,recall,F-score", y_true, y_pred)
    assert got == pytest.approx({"accuracy": 3 / 5, "precision": 2 / 3, "recall": 2 / 3,
                                 "F-score": 2 / 3})
    # AUC from scores: positives 0.8, 0.35; negatives 0.1, 0.4 -> 3 of 4 pairs ordered
    assert values("AUC", [0, 0, 1, 1], [0, 0, 1, 1], y_score=[0.1, 0.4, 0.35, 0.8])["AUC"] == 0.75
    # ties count one half: scores all equal
    assert values("AUC", [0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])["AUC"] == 0.5
    # (n, 2) probabilities: the last column is the positive class
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert values("AUC", [0, 0, 1, 1], [0, 0, 0, 1], y_score=proba)["AUC"] == 0.75
    assert math.isnan(values("AUC", [1, 1], [0.2, 0.3])["AUC"])              # one class only


def test_string_labels_and_the_positive_class():
    y_true = ["yes", "no", "yes", "no"]
    y_pred = ["yes", "yes", "no", "no"]
    got = values("precision,recall", y_true, y_pred)
    assert got == {"precision": 0.5, "recall": 0.5}
    got = values("precision,recall", ["b", "a", "b"], ["b", "b", "b"], positive_label="a")
    assert got == {"precision": 0.0, "recall": 0.0}
    assert values("accuracy", [True, False], [1, 0])["accuracy"] == 1.0      # 1 == True


def test_multiclass_is_macro_averaged():
    y_true = ["a", "b", "c", "a"]
    y_pred = ["a", "b", "a", "c"]
    got = values("accuracy,precision,recall,F-score", y_true, y_pred)
    # per class (P, R): a (1/2, 1/2), b (1, 1), c (0, 0)
    assert got == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 0.5,
                                 "F-score": (0.5 + 1 + 0) / 3})
    scores = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.5, 0.2, 0.3], [0.4, 0.2, 0.4]])
    auc = values("AUC", y_true, y_pred, y_score=scores)["AUC"]
    # one class against the rest: a: positives 0.8, 0.4 vs 0.1, 0.5 -> 3/4; b: 0.8 vs 0.1, 0.2,
    # 0.2 -> 1; c: 0.3 vs 0.1, 0.1, 0.4 -> 2/3
    assert auc == pytest.approx((3 / 4 + 1 + 2 / 3) / 3)
    with pytest.raises(ConfigError, match="one score column per class"):
        values("AUC", y_true, y_pred)


def test_names_and_bad_input():
    assert parse_metric_names("mape, R2 ,f1,roc_auc,MAPE") == ["MAPE", "R-squared", "F-score", "AUC"]
    with pytest.raises(ConfigError, match="Unknown metric 'BLEU'.*known metrics are MAPE"):
        compute_metrics("MAE,BLEU", [1], [1])
    with pytest.raises(ConfigError, match="names no metric"):
        compute_metrics(" , ", [1], [1])
    with pytest.raises(ConfigError, match="counts differ"):
        compute_metrics("MAE", [1, 2], [1])
    with pytest.raises(ConfigError, match="empty"):
        compute_metrics("MAE", [], [])
    with pytest.raises(ConfigError, match="1 missing or infinite"):
        compute_metrics("MAE", [1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ConfigError, match="need numbers"):
        compute_metrics("MAE", ["a"], [1.0])
