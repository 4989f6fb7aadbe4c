"""Typed read views of stored documents (a run's status, an Engine's image) and the service-layer
reads the faces use instead of the store, and the rules of what a run command names."""
import json

import pytest

from runtime.errors import Conflict, ConfigError, NotFound
from runtime.run_targets import resolve_run_target, sweep_experiment
from runtime.schemas import (ENGINE, EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE, MODEL,
                             RunStatus, RunStatusDocument, engine_image)

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL


def _run(registry, caller):
    engine = registry.create(ENGINE, caller, {"name": "E", "type": "Python"})
    instance = registry.create(MLINSTANCE, caller, {"name": "I", "engineId": engine["id"]})
    experiment = registry.create(EXPERIMENT, caller, {"name": "X", "mlInstanceId": instance["id"]})
    return registry.create_run(caller, experiment["id"], {"mode": "train"})


def test_status_document_reads_what_the_api_returns_unchanged(registry, caller):
    run = _run(registry, caller)
    raw = registry.run_status(caller, run["experimentId"], run["id"])
    typed = registry.status_document(caller.scope, run["id"])
    assert typed.state is RunStatus.PENDING and typed.message == "Waiting for a worker"
    assert registry.run_state(caller.scope, run["id"]) is RunStatus.PENDING
    registry.transition_run(caller.scope, run["id"], RunStatus.RUNNING)
    registry.transition_run(caller.scope, run["id"], RunStatus.DONE, message="ok",
                            tasklogs=[{"name": "worker.log", "url": "/x/worker.log"}])
    after = registry.run_status(caller, run["experimentId"], run["id"])
    task = registry.require_status(caller, run["id"]).task
    assert task.state is RunStatus.DONE and task.started and task.ended
    assert task.duration_s() >= 0 and registry.status_document(caller.scope, run["id"]).log_names \
        == {"worker.log"}
    # The wire keeps the stored JSON: the typed view is a reader, never a second format.
    assert list(raw) == ["id", "experimentRunId", "name", "deleted", "status"]
    assert json.dumps(RunStatusDocument.model_validate(after).model_dump(
        mode="json", exclude_none=True)) == json.dumps(after)
    assert registry.status_document(caller.scope, "nope") is None
    with pytest.raises(NotFound):
        registry.require_status(caller, "nope")


def test_abort_unowned_run_is_a_conflict_once_ended(registry, caller):
    run = _run(registry, caller)
    registry.abort_unowned_run(caller, run["id"], "cancelled by tester")
    status = registry.require_status(caller, run["id"])
    assert status.state is RunStatus.ABORTED and status.message == "cancelled by tester"
    with pytest.raises(Conflict, match="already ended ABORTED"):
        registry.abort_unowned_run(caller, run["id"], "again")


def test_engine_image_reads_the_server_owned_keys():
    doc = {"artifacts": {"default": {"image": {"location": "/r", "artifactVersion": 2,
                                               "sha256": "ab", "requirements": "a, b ,"}}}}
    image = engine_image(doc)
    assert (image.location, image.artifactVersion, image.sha256) == ("/r", 2, "ab")
    assert image.extra_requirements == ["a", "b"]
    assert engine_image({}).location is None and engine_image({"artifacts": None}).sha256 is None


def test_find_sees_deleted_documents_only_when_asked(registry, caller):
    run = _run(registry, caller)
    assert registry.find(EXPERIMENT_RUN, caller.scope, run["id"])["id"] == run["id"]
    registry.delete(EXPERIMENT_RUN, caller, run["id"])
    assert registry.find(EXPERIMENT_RUN, caller.scope, run["id"]) is None
    assert registry.find(EXPERIMENT_RUN, caller.scope, run["id"], deleted=True)["deleted"] is True
    assert registry.find(MODEL, caller.scope, "") is None


def test_set_tags_keeps_updated(registry, caller):
    run = _run(registry, caller)
    model = registry.create(MODEL, caller, {"experimentRunId": run["id"], "tags": {"a": "1"}})
    registry.set_tags(MODEL, caller.scope, model["id"], {"sweepId": "s"})
    again = registry.get(MODEL, caller, model["id"])
    assert again["tags"] == {"sweepId": "s"} and again["updated"] == model["updated"]


def test_a_run_target_file_registers_once_and_reuses_its_default_experiment(registry, caller,
                                                                         tmp_path):
    target = tmp_path / "instance.json"
    target.write_text(json.dumps({"name": "noop run", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "sleep_ms", "value": "1"}]}]}))
    first = resolve_run_target(registry, caller, str(target))
    again = resolve_run_target(registry, caller, str(target))
    assert first.instance["id"] == again.instance["id"]
    assert first.experiment["id"] == again.experiment["id"]
    engine = registry.get(ENGINE, caller, first.instance["engineId"])
    assert engine_image(engine).location == "noop"
    sweep = sweep_experiment(registry, caller, first.instance, None)
    assert sweep["id"] != first.experiment["id"]
    # A sweep's Experiment is never the default one of a plain run.
    assert resolve_run_target(registry, caller, str(target)).experiment["id"] == \
        first.experiment["id"]
    other = registry.create(MLINSTANCE, caller, {"name": "other", "engineId": engine["id"]})
    with pytest.raises(ConfigError, match="belongs to MLInstance"):
        resolve_run_target(registry, caller, other["id"], experiment_id=first.experiment["id"])
    with pytest.raises(NotFound, match="neither an MLInstance id"):
        resolve_run_target(registry, caller, "no-such-instance")
