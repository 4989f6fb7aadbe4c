"""Forecast accuracy as the sample recipe reports it: MAPE (a fraction), MAE, RMSE and MASE."""
from __future__ import annotations

import numpy as np

from runtime.engine import Metric

from .schema import METRIC_NAMES


def forecast_metrics(actual: np.ndarray, predicted: np.ndarray, naive_scale: float,
                     names: list[str] | tuple[str, ...] = METRIC_NAMES) -> list[Metric]:
    """Metrics of `predicted` against `actual`; MASE divides MAE by `naive_scale`, the in-sample
    MAE of the naive one-step forecast (next week = this week) on the training rows."""
    actual = np.asarray(actual, dtype="float64")
    error = np.asarray(predicted, dtype="float64") - actual
    values = {
        "MAPE": float(np.mean(np.abs(error) / np.abs(actual))),
        "MAE": float(np.mean(np.abs(error))),
        "RMSE": float(np.sqrt(np.mean(error ** 2))),
    }
    values["MASE"] = values["MAE"] / naive_scale if naive_scale > 0 else float("nan")
    return [Metric(name=name, value=values[name], valueType="double") for name in names]
