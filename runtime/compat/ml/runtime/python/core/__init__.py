"""`ml.runtime.python.core`: the evaluators a recipe's `Evaluation` entry point extends."""
