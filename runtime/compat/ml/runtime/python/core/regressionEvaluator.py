"""`RegressionEvaluator`: split at random, then MAPE, MAE, RMSE, MASE, MSE or R-squared."""
from __future__ import annotations

from typing import Any

from runtime.metrics import compute_metrics

from ._evaluation import _Evaluator, optional


class RegressionEvaluator(_Evaluator):
    """Recipes override `split(self, config={}, dataframe=None)`; MASE divides by the MAE of
    `evaluation.scalingColumn` (a naive forecast) when named, else by the one-step differences
    of the actual values."""

    default_metrics = "MAPE,MAE,RMSE"

    def compute(self, names: Any, y_true: Any, y_pred: Any, config: Any, frame: Any,
                data: Any) -> list[dict[str, Any]]:
        scaling_column = optional(config, "evaluation.scalingColumn")
        scaling = None
        if scaling_column is not None:
            scaling = self._aligned(frame, data, scaling_column, "evaluation.scalingColumn")
        return compute_metrics(names, y_true, y_pred, scaling=scaling)
