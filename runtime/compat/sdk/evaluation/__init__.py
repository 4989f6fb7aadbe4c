"""Evaluators of PySpark recipes: `regression.RegressionEvaluator`, `classification.
ClassificationEvaluator`, both `evaluator.MLEvaluator`s."""
from .evaluator import MLEvaluator

__all__ = ["MLEvaluator"]
