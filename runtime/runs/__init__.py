"""Running an experiment run: prepare it (layers -> a typed plan), attempt it on its backend
(queue, submit, wait, retry, maxRuntime), record what it produced (Models, Insights), in the
foreground for `run train|score|fp` or in the background for `POST /experiments/{id}/runs`, and
reconcile runs a stopped server left behind.
"""
from .executor import Prepared, RunExecutor, default_experiment, engine_reference, model_choice_text

__all__ = ["Prepared", "RunExecutor", "default_experiment", "engine_reference", "model_choice_text"]
