"""A retail-sales-spark run end to end: through the CLI (`run train --warm`/`run score` of an
MLInstance file: the score run takes the warm Spark worker the train run left in the home, which
`run warm list` shows and `run warm stop` stops) and through the API (a real `run serve` on a free
loopback port, one for the module, so its runs share a warm Spark session): warm reuse, and a
train run without validation rows."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL_GBT = [{"key": "n_estimators", "value": "3"}, {"key": "max_depth", "value": "3"},
             {"key": "driverMemory", "value": "1152"}, {"key": "driverCores", "value": "2"}]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}


def _cli(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=_env())


def _instance(data: dict, scores: Path) -> dict:
    return {"name": "retail-spark", "engineId": "retail-sales-spark", "tasks": [
        {"name": "train", "parameters": [
            {"key": "trainingDataSetId", "value": str(data["training.csv"])}, *SMALL_GBT]},
        {"name": "score", "parameters": [   # the train task's shape: one warm worker serves both
            {"key": "scoringDataSetId", "value": str(data["scoring.parquet"])},
            {"key": "scoringResultsDataSetId", "value": str(scores)}, *SMALL_GBT[2:]]}]}


@pytest.fixture
def home(tmp_path):
    """A runtime home whose warm workers are stopped at the end, whatever the test left."""
    from runtime.pools import stop_home

    home = tmp_path / "home"
    yield home
    stop_home(home)


def test_cli_train_then_score_on_one_warm_worker(retail_small, tmp_path, home):
    scores = tmp_path / "out" / "scores.parquet"
    target = tmp_path / "retail-spark.json"
    target.write_text(json.dumps(_instance(retail_small, scores)))

    planned = _cli("train", str(target), "--dry-run", home=home)
    assert planned.returncode == 0, planned.stderr
    assert "pyspark" in planned.stdout and "1152 MB, 2 cores" in planned.stdout

    trained = _cli("train", str(target), "--json", "--warm", home=home)
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads(trained.stdout)
    assert summary["state"] == "DONE" and summary["modelId"]
    metrics = {m["name"]: m["value"] for m in summary["metrics"]}
    assert set(metrics) == {"MAPE", "MAE", "RMSE", "MASE"} and 0 < metrics["MAPE"] < 0.5
    result = json.loads((home / "runs" / summary["runId"] / "result.json").read_text())
    assert result["spark"]["master"].startswith("local[") and result["spark"]["applicationId"]
    # the MLInstance's resources reached the JVM, and the run record keeps what Spark reports
    assert (summary["spark"]["driverMemory"], summary["spark"]["driverCores"]) == ("1152m", 2)
    assert summary["spark"]["master"] == "local[2]"
    # what the run took: the driver's process group (its JVM included) and the executors' memory
    system = summary["system"]
    assert system["sampled"] and system["samples"] >= 2 and system["peak_memory_mb"] > 200
    assert "peak_spark_storage_mb" in system and system["max_threads"] > 10
    assert result["model_dir"]
    assert any(home.rglob("pipeline/metadata"))  # the registered model: Spark ML's own writer
    # the per-iteration training loss, one point per boosting iteration (n_estimators=3)
    points = [json.loads(line) for line in
              (home / "runs" / summary["runId"] / "metrics.jsonl").read_text().splitlines()]
    assert [(p["name"], p["step"]) for p in points] == [("trainingLoss", s) for s in (1, 2, 3)]

    # the train run's worker outlived it (--warm): listed with its shape, idle, in this home
    [worker] = json.loads(_cli("warm", "list", "--json", home=home).stdout)
    assert (worker["kind"], worker["pid"]) == ("spark", result["spark"]["workerPid"])
    assert (worker["master"], worker["driverMemory"], worker["runs"]) == ("local[2]", "1152m", 1)
    assert worker["state"] == "idle" and worker["home"] == str(home)
    assert "spark" in _cli("warm", "list", home=home).stdout

    scored = _cli("score", str(target), "--json", home=home)   # plain: takes the one listening
    assert scored.returncode == 0, scored.stderr[-3000:]
    score_run = json.loads(scored.stdout)
    assert score_run["state"] == "DONE"
    again = json.loads((home / "runs" / score_run["runId"] / "result.json").read_text())["spark"]
    assert again["workerPid"] == result["spark"]["workerPid"] and again["reusedSession"] is True
    assert (again["jvmPid"], again["applicationId"]) == (result["spark"]["jvmPid"],
                                                         result["spark"]["applicationId"])
    assert "warm session" in (home / "runs" / score_run["runId"] / "worker.log").read_text()
    frame = pd.read_parquet(scores)
    assert list(frame.columns) == ["date", "store", "prediction"]
    assert len(frame) == 3 * 30 and frame["prediction"].notna().all()

    stopped = _cli("warm", "stop", "--json", home=home)
    assert json.loads(stopped.stdout)["stopped"] == [
        {"kind": "spark", "pid": result["spark"]["workerPid"], "gone": True}]
    assert not _alive(result["spark"]["workerPid"]) and not _alive(result["spark"]["jvmPid"])
    assert json.loads(_cli("warm", "list", "--json", home=home).stdout) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(folder: Path):
    import httpx

    home, port = folder / "home", _free_port()
    log = open(folder / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--home", str(home), "--log-level", "warning"],
                            cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/data/sensei"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/engines", timeout=1.0)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return url, home, proc, log


def _stop_server(proc: subprocess.Popen, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def _servers(tmp_path_factory):
    """One `run serve` for the module, so its runs share one warm Spark session (a cold JVM costs
    10-20 s on a loaded 2-core box); a test that stops it (the shutdown test) leaves the next test
    a fresh one."""
    started = []

    def current():
        if not started or started[-1][2].poll() is not None:
            started.append(_start_server(tmp_path_factory.mktemp("spark-serve")))
        return started[-1]
    yield current
    for _, _, proc, log in started:
        _stop_server(proc, log)


@pytest.fixture
def server(_servers, request):
    """The module's server, a client in a sandbox of this test's own."""
    import httpx

    url, home, proc, _ = _servers()
    sandbox = "spark-" + hashlib.sha1(request.node.name.encode()).hexdigest()[:10]
    headers = {"x-api-key": "k", "x-gw-ims-org-id": "TESTORG@AdobeOrg", "x-sandbox-name": sandbox}
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
        yield client, home, proc


def _wait(client, experiment_id: str, run_id: str, timeout_s: float = 400) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        task = client.get(f"/experiments/{experiment_id}/runs/{run_id}/status").json()["status"]["tasks"][0]
        if task["state"] in ("DONE", "FAILED", "ABORTED"):
            return task
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} did not end in {timeout_s} s")


def _register_spark_engine(client) -> dict:
    return client.post("/engines", json={
        "name": "RetailSpark", "type": "PySpark",
        "artifacts": {"default": {"image": {"location": "retail-sales-spark", "name": "retail-sales-spark",
                                            "executionType": "pyspark", "packagingType": "egg"}}}}).json()


def test_train_without_validation_rows_registers_the_model(server, retail_small):
    """retail-sales-spark, like retail-sales: a train run without validation rows keeps its
    Model, ends DONE and says why there are no validation metrics (the CLI's printing of a run's
    warnings: tests/execution/test_validation_window.py)."""
    client, home, _ = server
    engine = _register_spark_engine(client)
    instance = client.post("/mlInstances", json={
        "name": "retail-spark", "engineId": engine["id"], "tasks": [{"name": "train", "parameters": [
            {"key": "trainingDataSetId", "value": str(retail_small["training.csv"])},
            {"key": "n_estimators", "value": "2"}, {"key": "max_depth", "value": "2"},
            {"key": "driverMemory", "value": "1152"}, {"key": "driverCores", "value": "2"},
            {"key": "validation_start", "value": "2030-01-01"}]}]})
    assert instance.status_code == 201, instance.text
    experiment = client.post("/experiments", json={"name": "no-validation",
                                                   "mlInstanceId": instance.json()["id"]}).json()
    run = client.post(f"/experiments/{experiment['id']}/runs", json={"mode": "TRAIN"}).json()
    task = _wait(client, experiment["id"], run["id"])
    assert task["state"] == "DONE", task
    summary = json.loads((home / "runs" / run["id"] / "result.json").read_text())
    (warning,) = summary["warnings"]
    assert warning.startswith("No validation metrics: no row from validation_start 2030-01-01")
    assert "the labelled rows end at 20" in warning
    assert task["message"] == "Run completed with warnings: " + warning, task
    stored = client.get(f"/experiments/{experiment['id']}/runs/{run['id']}").json()["result"]
    assert stored["state"] == "DONE" and stored["warnings"] == [warning]
    assert not {"MAPE", "MAE", "RMSE", "MASE"} & {m["name"] for m in stored["metrics"]}
    model = client.get(f"/models/{stored['modelId']}")
    assert model.status_code == 200, model.text


def test_api_runs_reuse_the_warm_session_and_the_server_closes_it(server, retail_small, tmp_path):
    client, home, proc = server
    engine = _register_spark_engine(client)
    body = _instance(retail_small, tmp_path / "scores.parquet")
    instance = client.post("/mlInstances", json={**body, "engineId": engine["id"]})
    assert instance.status_code == 201, instance.text
    experiment = client.post("/experiments", json={"name": "spark", "mlInstanceId": instance.json()["id"]}).json()

    results = []
    for _ in range(2):
        run = client.post(f"/experiments/{experiment['id']}/runs", json={"mode": "TRAIN"}).json()
        task = _wait(client, experiment["id"], run["id"])
        assert task["state"] == "DONE", task
        results.append(json.loads((home / "runs" / run["id"] / "result.json").read_text())["spark"])
        stored = client.get(f"/experiments/{experiment['id']}/runs/{run['id']}").json()
        assert stored["runtime"]["plan"]["backend"] == "pyspark"
    first, second = results
    assert second["reusedSession"] and second["jvmPid"] == first["jvmPid"]
    assert second["applicationId"] == first["applicationId"]
    assert second["dispatchToEngineS"] < 1.0  # target 0.3 s; measured ~0.02 s warm

    proc.terminate()  # the server's shutdown closes its Spark workers
    proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(first["workerPid"]):
        time.sleep(0.2)
    assert not _alive(first["workerPid"]) and not _alive(first["jvmPid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())
