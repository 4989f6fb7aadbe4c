"""`RegressionEvaluator`: MAPE, MAE, RMSE by default; MASE scaled by `evaluation.scalingColumn`."""
from __future__ import annotations

from typing import Any

from .evaluator import MLEvaluator, scaling_column


class RegressionEvaluator(MLEvaluator):
    default_metrics = ("MAPE", "MAE", "RMSE")

    def extra_columns(self, config_properties: dict, predictions: Any) -> dict[str, str]:
        scaling = scaling_column(config_properties)
        return {"scaling": scaling} if scaling else {}

    def extra_arguments(self, config_properties: dict, frame: Any) -> dict:
        return {"scaling": frame["scaling"].to_numpy(dtype=float)} if "scaling" in frame else {}
