"""`ClassificationEvaluator`: accuracy, precision, recall, F-score, AUC (from Spark ML's
`probability` column when the model writes one, else from the predicted labels)."""
from __future__ import annotations

from typing import Any

from .evaluator import MLEvaluator, setting


class ClassificationEvaluator(MLEvaluator):
    default_metrics = ("accuracy", "precision", "recall", "F-score", "AUC")

    def extra_columns(self, config_properties: dict, predictions: Any) -> dict[str, str]:
        column = str(setting(config_properties, "evaluation.probabilityColumn", "probability"))
        return {"score": column} if column in predictions.columns else {}

    def extra_arguments(self, config_properties: dict, frame: Any) -> dict:
        if "score" not in frame:
            return {}
        import numpy as np

        scores = np.array([np.asarray(v.toArray() if hasattr(v, "toArray") else v, dtype=float)
                           for v in frame["score"]])
        if scores.ndim == 2 and scores.shape[1] == 2:  # binary: the positive class's probability
            scores = scores[:, 1]
        return {"y_score": scores}


# The name some templates import
BinaryClassificationEvaluator = ClassificationEvaluator
MulticlassClassificationEvaluator = ClassificationEvaluator
