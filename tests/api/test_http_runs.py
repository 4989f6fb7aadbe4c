"""Runs over HTTP on a real server: POST .../runs executes in the background, on the real data."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from contract import repo_root, validate

RETAIL = repo_root().parent / "shared" / "data" / "retail"
pytestmark = pytest.mark.skipif(not (RETAIL / "retail.csv").exists(),
                                reason="the shared retail data set is not beside the checkout")
TERMINAL = {"DONE", "FAILED", "ABORTED"}


def _wait(client: httpx.Client, experiment_id: str, run_id: str, timeout_s: float = 180) -> dict:
    deadline = time.time() + timeout_s
    seen = []
    while time.time() < deadline:
        status = client.get(f"/experiments/{experiment_id}/runs/{run_id}/status")
        assert status.status_code == 200
        body = status.json()
        task = body["status"]["tasks"][0]
        if not seen or seen[-1] != task["state"]:
            seen.append(task["state"])
        if task["state"] in TERMINAL:
            validate(body, "RunStatus")
            task["seen"] = seen
            return body
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} did not end in {timeout_s} s (states seen: {seen})")


@pytest.fixture
def experiment(client: httpx.Client, tmp_path: Path) -> dict:
    engine = client.post("/engines", json={
        "name": "Retail", "type": "Python",
        "artifacts": {"default": {"image": {"location": "retail-sales", "name": "retail-sales",
                                            "packagingType": "egg"}}}}).json()
    instance = client.post("/mlInstances", json={
        "name": "Retail", "engineId": engine["id"], "tasks": [
            {"name": "train", "parameters": [
                {"key": "trainingDataSetId", "value": str(RETAIL / "retail-training.csv")},
                {"key": "epochs", "value": "10"}]},
            {"name": "score", "parameters": [
                {"key": "scoringDataSetId", "value": str(RETAIL / "retail-scoring.csv")},
                {"key": "scoringResultsDataSetId", "value": str(tmp_path / "scores.parquet")}]}]})
    assert instance.status_code == 201, instance.text
    exp = client.post("/experiments", json={"name": "x", "mlInstanceId": instance.json()["id"]})
    return {**exp.json(), "engineId": engine["id"], "scores": tmp_path / "scores.parquet"}


def test_train_and_score_runs_execute_and_record_results(client: httpx.Client, experiment: dict):
    eid = experiment["id"]
    created = client.post(f"/experiments/{eid}/runs", json={"mode": "TRAIN"})
    assert created.status_code == 201
    run_id = created.json()["id"]
    status = _wait(client, eid, run_id)
    task = status["status"]["tasks"][0]
    assert task["state"] == "DONE", task
    assert task["seen"][-1] == "DONE" and set(task["seen"]) <= {"PENDING", "RUNNING", "DONE"}
    assert task["started"] <= task["ended"]
    log_url = task["tasklogs"][0]["url"]
    log = client.get(log_url.removeprefix("/data/sensei"))
    assert log.status_code == 200 and "train" in log.text

    run = client.get(f"/experiments/{eid}/runs/{run_id}").json()
    assert run["runtime"]["resolved"]["provenance"]["epochs"] == "mlInstance"
    assert run["runtime"]["plan"]["backend"] == "python-cpu"

    models = client.get("/models", params={"property": f"experimentRunId=={run_id}"}).json()
    assert models["_page"]["totalCount"] == 1
    model = models["children"][0]
    artifact = client.get(f"/models/{model['id']}/artifact")
    assert artifact.status_code == 200 and artifact.content[:2] == b"PK"   # a zip of the folder

    insights = client.get("/insights", params={
        "property": f"context.experimentRunId=={run_id}"}).json()
    metrics = {m["name"]: float(m["value"]) for m in insights["children"][0]["metrics"]}
    assert 0 < metrics["MAPE"] < 0.0548

    score = client.post(f"/experiments/{eid}/runs", json={"mode": "score"}).json()
    assert _wait(client, eid, score["id"])["status"]["tasks"][0]["state"] == "DONE"
    scores = pd.read_parquet(experiment["scores"])
    assert list(scores.columns) == ["date", "store", "prediction"] and len(scores) > 0


def test_a_failing_run_is_failed_with_reason_and_log(client: httpx.Client, experiment: dict):
    eid = experiment["id"]
    run = client.post(f"/experiments/{eid}/runs", json={"mode": "train", "tasks": [
        {"name": "train", "parameters": [
            {"key": "trainingDataSetId", "value": "/no/such/data.csv"}]}]}).json()
    task = _wait(client, eid, run["id"])["status"]["tasks"][0]
    assert task["state"] == "FAILED"
    assert "/no/such/data.csv" in task["message"] and task["logs"]


def test_a_run_that_cannot_be_configured_fails_before_running(client: httpx.Client,
                                                             experiment: dict):
    eid = experiment["id"]
    run = client.post(f"/experiments/{eid}/runs", json={"mode": "train", "tasks": [
        {"name": "train", "parameters": [{"key": "learning_rte", "value": "0.1"}]}]}).json()
    task = _wait(client, eid, run["id"])["status"]["tasks"][0]
    assert task["state"] == "FAILED" and "learning_rate" in task["message"]


def test_scoring_without_a_model_fails_clearly(client: httpx.Client, experiment: dict):
    eid = experiment["id"]
    run = client.post(f"/experiments/{eid}/runs", json={"mode": "score"}).json()
    task = _wait(client, eid, run["id"])["status"]["tasks"][0]
    assert task["state"] == "FAILED" and "no trained Model" in task["message"]
