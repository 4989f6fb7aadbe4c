"""Scheduled runs executed for real (noop worker processes, the server's executor path): a
training run publishes its Model only when the policy says so, its timeframe limits what it
reads, and a score run uses the published Model and says which one."""
from __future__ import annotations

import pandas as pd
import pytest

from runtime.runs import RunExecutor, default_experiment
from runtime.mlservices import ServiceDesk
from runtime.scheduler import Scheduler
from runtime.schemas import ENGINE, EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE, MLSERVICE
from runtime.sweep import SWEEP_EXPERIMENT_DESCRIPTION

from test_scheduler import Clock

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL


@pytest.fixture
def setup(registry, caller, tmp_path):
    stamps = pd.date_range("2024-03-01", periods=10, freq="h").astype(str)
    pd.DataFrame({"timestamp": stamps, "x": range(10)}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"timestamp": stamps, "x": range(10)}).to_csv(tmp_path / "score.csv", index=False)
    engine = registry.create(ENGINE, caller, {
        "name": "noop", "type": "Python", "artifacts": {"default": {"image": {"location": "noop"}}}})
    instance = registry.create(MLINSTANCE, caller, {
        "name": "noop instance", "engineId": engine["id"], "tasks": [
            {"name": "score", "parameters": [{"key": "scoringResultsDataSetId",
                                              "value": str(tmp_path / "out.csv")}]}]})
    service = registry.create(MLSERVICE, caller, {
        "name": "hourly", "mlInstanceId": instance["id"],
        "trainingDataSetId": str(tmp_path / "train.csv"), "trainingTimeframe": 180,
        "scoringDataSetId": str(tmp_path / "score.csv"), "scoringTimeframe": 120,
        "trainingSchedule": {"cron": "0 * * * *"}, "scoringSchedule": {"cron": "45 12 * * *"},
        "tags": {"publishPolicy": "better", "publishMetric": "rows", "publishMode": "max"}})
    executor = RunExecutor(registry, kind="server")
    clock = Clock("2024-05-01T10:15:00")
    scheduler = Scheduler(registry, runs=executor, clock=clock)
    scheduler.tick()
    yield registry, caller, instance, service, executor, scheduler, clock, tmp_path
    executor.shutdown(5.0)


def _fire_and_finish(registry, caller, executor, scheduler, clock, when):
    clock.set(when)
    assert scheduler.tick() == 1
    rows = [r for r in registry.store.schedule_rows() if r["last_fire"]]
    run_id = max(rows, key=lambda r: r["last_fire"])["last_run_id"]
    assert executor.wait_ended(caller, run_id, 60).value == "DONE"
    scheduler.tick()   # settles the training runs that ended
    return registry.get(EXPERIMENT_RUN, caller, run_id)


def test_publish_policy_timeframe_and_the_model_a_score_uses(setup):
    registry, caller, instance, service, executor, scheduler, clock, tmp = setup
    desk = ServiceDesk(registry)
    first = _fire_and_finish(registry, caller, executor, scheduler, clock, "2024-05-01T11:00:00.2")
    # trainingTimeframe 180: the last three hours of the ten hourly rows were read
    assert first["result"]["metrics"][0] == {"name": "rows", "value": 3.0, "valueType": "double"}
    status = desk.status(caller.scope, service)
    assert status["publishedModel"]["modelId"] == first["result"]["modelId"]
    assert status["lastPublication"]["published"] is True

    body = {k: v for k, v in registry.get(MLSERVICE, caller, service["id"]).items()
            if k not in ("id", "created", "updated", "createdBy")}
    registry.replace(MLSERVICE, caller, service["id"], {**body, "trainingTimeframe": 60})
    second = _fire_and_finish(registry, caller, executor, scheduler, clock, "2024-05-01T12:00:00.2")
    assert second["result"]["metrics"][0]["value"] == 1.0
    status = desk.status(caller.scope, service)
    assert status["publishedModel"]["modelId"] == first["result"]["modelId"]   # 1 row is worse
    assert status["lastPublication"] == {
        "runId": second["id"], "modelId": second["result"]["modelId"], "published": False,
        "reason": "rows 1 is worse than the published 3"}

    score = _fire_and_finish(registry, caller, executor, scheduler, clock, "2024-05-01T12:45:00.2")
    choice = score["runtime"]["modelChoice"]
    assert (choice["source"], choice["modelId"], choice["mlServiceId"]) == (
        "mlService", first["result"]["modelId"], service["id"])
    assert len(pd.read_csv(tmp / "out.csv")) == 2   # scoringTimeframe 120: two hourly rows
    log = (registry.home.runs / score["id"] / "worker.log").read_text()
    assert f"scoring with Model {first['result']['modelId']}" in log and "rows 3" in log

    # A plain score run of the MLInstance (its own Experiment) uses the published Model too.
    plain = registry.create(EXPERIMENT, caller, {"name": "plain", "mlInstanceId": instance["id"]})
    prepared = executor.prepare(caller, plain["id"], "score")
    assert prepared.model["id"] == first["result"]["modelId"]
    assert "the published Model of MLService" in prepared.describe_plan()


def test_plain_runs_never_pick_a_sweeps_or_a_services_experiment(registry, caller):
    engine = registry.create(ENGINE, caller, {"name": "e", "type": "Python"})
    instance = registry.create(MLINSTANCE, caller, {"name": "i", "engineId": engine["id"]})
    assert default_experiment(registry, caller, instance) is None
    plain = registry.create(EXPERIMENT, caller, {"name": "plain", "mlInstanceId": instance["id"]})
    registry.create(EXPERIMENT, caller, {"name": "sweep", "mlInstanceId": instance["id"],
                                         "description": SWEEP_EXPERIMENT_DESCRIPTION})
    registry.create(EXPERIMENT, caller, {"name": "svc", "mlInstanceId": instance["id"],
                                         "createdByService": True})
    assert default_experiment(registry, caller, instance)["id"] == plain["id"]
