"""Running an experiment run, one path for every face: a face builds a `RunRequest` (request) and
hands it to `executor.RunExecutor` in one call: `run` in the foreground (`run train|score|fp`,
`run submit`, a sweep's trials), `start` in the background (`POST /experiments/{id}/runs`, a
schedule's fire). The path validates once, then `prepare` (layers -> a typed Prepared), creates,
`attempt` (queue, submit, wait, retry, maxRuntime) and `record` (state, Models, Insights, once);
`background` runs the server's runs and `reconcile` settles runs a dead process left behind.
"""
from .executor import RecordOnly, RunExecutor
from .prepare import Prepared, default_experiment, engine_reference, model_choice_text
from .request import Claim, RunRequest

__all__ = ["Claim", "Prepared", "RecordOnly", "RunExecutor", "RunRequest", "default_experiment",
           "engine_reference", "model_choice_text"]
