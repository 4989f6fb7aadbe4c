"""Running an experiment run, one path for every face: `prepare` (layers -> a typed Prepared),
`attempt` (queue, submit, wait, retry, maxRuntime), `record` (state, Models, Insights, once),
`background` (the server's runs) and `reconcile` (runs a dead process left behind), composed by
`executor.RunExecutor`: `run train|score|fp` calls it in the foreground, the server in the
background for `POST /experiments/{id}/runs`.
"""
from .executor import RunExecutor
from .prepare import Prepared, default_experiment, engine_reference, model_choice_text

__all__ = ["Prepared", "RunExecutor", "default_experiment", "engine_reference", "model_choice_text"]
