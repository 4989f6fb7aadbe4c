"""`ClassificationEvaluator`: split at random, then accuracy, precision, recall, F-score, AUC."""
from __future__ import annotations

from typing import Any

from runtime.metrics import compute_metrics

from ._evaluation import _Evaluator, optional


class ClassificationEvaluator(_Evaluator):
    """AUC ranks `evaluation.probabilityColumn` (or `evaluation.scoreColumn`) when named, else the
    predicted labels; `evaluation.positiveLabel` names the positive class of a binary problem.
    With more than two classes precision, recall and F-score are macro averages."""

    default_metrics = "accuracy,precision,recall,F-score"

    def compute(self, names: Any, y_true: Any, y_pred: Any, config: Any, frame: Any,
                data: Any) -> list[dict[str, Any]]:
        score_column = (optional(config, "evaluation.probabilityColumn")
                        or optional(config, "evaluation.scoreColumn"))
        y_score = None
        if score_column is not None:
            y_score = self._aligned(frame, data, score_column, "evaluation.probabilityColumn")
        return compute_metrics(names, y_true, y_pred, y_score=y_score,
                               positive_label=optional(config, "evaluation.positiveLabel"))
