"""`run submit` and `run cancel` end to end on a real Ray head: the submitting registry ends with
the run's state, Ray submission id, metrics, Model and logs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from runtime.home import resolve_home
from runtime.schemas import EXPERIMENT_RUN, MODEL
from runtime.registry import Caller, Registry
from waiting import until, wait_run

REPO = Path(__file__).resolve().parents[2]
RUN = str(Path(sys.executable).with_name("run"))


def submit(tmp_path, *args, timeout=120):
    env = {**os.environ, "MLRUNTIME_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([RUN, "submit", *args, "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, (json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None)


def instance(tmp_path, engine, tasks):
    path = tmp_path / f"{engine.replace(':', '-')}.json"
    path.write_text(json.dumps({"name": f"{engine} on ray", "engineId": engine, "tasks": [
        {"name": name, "parameters": [{"key": k, "value": v} for k, v in params.items()]}
        for name, params in tasks.items()]}))
    return path


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    return path


def registry_of(tmp_path):
    return Registry.open(resolve_home(tmp_path / "home")), Caller.local()


def test_noop_train_then_score(ray_address, tmp_path, rows):
    target = instance(tmp_path, "noop", {"train": {"trainingDataSetId": str(rows), "echo": "hi"},
                                         "score": {"scoringDataSetId": str(rows)}})
    proc, train = submit(tmp_path, "train", str(target), "--address", ray_address, "--follow")
    assert proc.returncode == 0, proc.stderr
    assert train["state"] == "DONE" and train["metrics"][0]["name"] == "rows"
    assert "stage train" in proc.stderr  # --follow streamed the log
    assert train["submissionId"].startswith(f"mlrt-{train['runId']}")

    registry, caller = registry_of(tmp_path)
    try:
        run = registry.get(EXPERIMENT_RUN, caller, train["runId"])
        assert run["backend"]["submissionId"] == train["submissionId"]
        status = registry.run_status(caller, train["experimentId"], train["runId"])
        task = status["status"]["tasks"][0]
        assert task["state"] == "DONE" and task["tasklogs"][0]["name"] == "worker.log"
        log = registry.run_log(caller, train["experimentId"], train["runId"], "worker.log")
        assert "stage train" in log.read_text()
        model = registry.get(MODEL, caller, train["modelId"])
        model_dir = registry.model_artifact_dir(caller, model["id"])
        assert json.loads((model_dir / "model.json").read_text())["echo"] == "hi"
    finally:
        registry.close()

    proc, score = submit(tmp_path, "score", str(target), "--address", ray_address)
    assert proc.returncode == 0, proc.stderr
    assert score["state"] == "DONE" and score["modelId"] == train["modelId"]
    assert pd.read_parquet(score["output"]).shape == (3, 1)


def test_retail_sales_train_and_score(ray_address, tmp_path):
    from engines.retail_sales import write_retail_dataset

    paths = write_retail_dataset(tmp_path / "retail", seed=3, stores=2)
    train_csv, score_csv = (str(p) for p in list(paths.values())[:2])
    target = instance(tmp_path, "retail-sales", {
        "train": {"trainingDataSetId": train_csv, "n_estimators": "4", "max_depth": "2",
                  "ACP_DSW_TARGET_FEATURES": "weeklySales"},
        "score": {"scoringDataSetId": score_csv,
                  "scoringResultsDataSetId": str(tmp_path / "scores.parquet")}})
    proc, train = submit(tmp_path, "train", str(target), "--address", ray_address, timeout=180)
    assert proc.returncode == 0, train["reason"]
    assert train["state"] == "DONE" and {m["name"] for m in train["metrics"]} >= {"MAPE"}
    proc, score = submit(tmp_path, "score", str(target), "--address", ray_address, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert Path(score["output"]) == tmp_path / "scores.parquet"
    assert len(pd.read_parquet(score["output"])) > 0


def test_failing_job_is_failed_with_the_worker_s_reason(ray_address, tmp_path):
    missing = tmp_path / "nowhere" / "rows.csv"
    target = instance(tmp_path, "noop", {"train": {"trainingDataSetId": str(missing)}})
    proc, summary = submit(tmp_path, "train", str(target), "--address", ray_address)
    assert proc.returncode == 1 and summary is not None, proc.stderr
    assert summary["state"] == "FAILED" and summary["modelId"] is None
    assert "trainingDataSetId" in summary["reason"] and str(missing) in summary["reason"]
    registry, caller = registry_of(tmp_path)
    try:
        task = registry.run_status(caller, summary["experimentId"], summary["runId"])["status"]["tasks"][0]
        assert task["state"] == "FAILED" and str(missing) in task["logs"]
    finally:
        registry.close()


def test_cancel_stops_the_job_and_the_run_is_aborted(ray_address, tmp_path, rows):
    target = instance(tmp_path, "noop", {"train": {"trainingDataSetId": str(rows),
                                                   "sleep_ms": "60000"}})
    env = {**os.environ, "MLRUNTIME_HOME": str(tmp_path / "home")}
    waiting = subprocess.Popen([RUN, "submit", "train", str(target), "--address", ray_address,
                                "--json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        registry, caller = registry_of(tmp_path)
        try:
            submitted = until(lambda: [r["id"] for r in _runs(registry, caller)
                                       if (r.get("backend") or {}).get("submissionId")],
                              what="the run's Ray submission")
            run_id = submitted[0]
            wait_run(registry, run_id, states={"RUNNING"}, scope=caller.scope, timeout_s=60)
        finally:
            registry.close()
        cancel = subprocess.run([RUN, "cancel", run_id, "--json"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert cancel.returncode == 0, cancel.stderr
        assert json.loads(cancel.stdout.strip().splitlines()[-1])["state"] == "ABORTED"
        out, err = waiting.communicate(timeout=60)
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["state"] == "ABORTED" and "cancel" in summary["reason"]
    finally:
        if waiting.poll() is None:
            waiting.kill()


def _runs(registry, caller):
    from runtime.listing import Filter, ListQuery

    return registry.list(EXPERIMENT_RUN, caller, ListQuery(
        filters=(Filter("deleted", "==", False, "bool"),), limit=10)).children
