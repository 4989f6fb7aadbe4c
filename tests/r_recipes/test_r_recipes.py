"""R recipes in the platform's layout run through the one run path: `run train|score CONFIG
--engine DIR` and multipart POST /engines + the API, on Debian's R. One runtime home (its R library
and the Python environment reticulate binds built once) serves the module."""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from r_helpers import REPO, cli, needs_r, summary

sys.path.insert(0, str(REPO / "tests" / "api"))
from live_server import live_server, new_sandbox, sensei_client  # noqa: E402

pytestmark = needs_r()
TWO = "Retail Two Arg"


def _log(result: dict) -> str:
    return Path(result["log"]).read_text()


def _rows(csv_path: Path) -> int:
    import csv

    with open(csv_path, newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _model_folder(home: Path, model_id: str) -> Path:
    """Where the trained Model's folder (the recipe's modelPATH) was kept."""
    from runtime.home import resolve_home
    from runtime.registry import Caller, Registry
    from runtime.schemas import MODEL

    registry = Registry.open(resolve_home(home))
    try:
        model = registry.get(MODEL, Caller.local(), model_id)
    finally:
        registry.close()
    return Path(model["modelArtifactUri"].removeprefix("file://"))


def test_two_argument_trainer_with_an_evaluator_through_platform_sdk(home: Path,
                                                                     workdir: Path) -> None:
    """split(config) -> train(config, train_part) -> the evaluator's metrics on the test part;
    data read and written through platform_sdk; use_python of a missing path ignored."""
    config = f"{TWO}/retail.config.json"
    proc = cli(home, workdir, "train", config, "--engine", TWO, "--json",
               "-p", "trainingDataSetId=data/retail-training.csv")
    trained = summary(proc)
    assert trained["state"] == "DONE", trained
    metrics = {m["name"]: m["value"] for m in trained["metrics"]}
    assert set(metrics) == {"MAPE", "MAE", "RMSE", "MASE"}
    assert 0 < metrics["MAPE"] < 1 and metrics["RMSE"] > metrics["MAE"] > 0
    log = _log(trained)
    assert 'use_python("/usr/bin/python3.6"): no such interpreter here; ignored' in log
    assert "DESCRIPTION imports NoSuchRPackageUsed, which no R code of the recipe loads" in \
        log + proc.stdout + proc.stderr      # said where the recipe's environment is prepared
    model = _model_folder(home, trained["modelId"])
    # The recipe's global environment holds its own definitions, none of the runtime's.
    assert set((model / "globals.txt").read_text().split()) == {
        "Helper", "abstractEvaluator", "abstractScorer", "abstractTrainer",
        "applicationEvaluator", "applicationScorer", "applicationTrainer"}
    tz, python, numpy, _tmp, cwd = (model / "environment.txt").read_text().split()
    assert tz == "UTC" and numpy.startswith("1.") and "/envs/" in python
    assert cwd.endswith(f"/{trained['runId']}/model")     # the recipe's setwd(modelPATH)
    keys = set((model / "config_keys.txt").read_text().split())
    assert {"modelPATH", "trainingDataSetId", "ML_FRAMEWORK_IMS_TOKEN", "sandboxName",
            "tenantId", "evaluation.metrics"} <= keys

    scored = summary(cli(home, workdir, "score", config, "--engine", TWO, "--json",
                         "-p", "scoringDataSetId=data/retail-scoring.csv",
                         "-p", "scoringResultsDataSetId=out/two-arg.jsonl"))
    assert scored["state"] == "DONE", scored
    rows = [json.loads(x) for x in (workdir / "out" / "two-arg.jsonl").read_text().splitlines()]
    assert len(rows) == _rows(workdir / "data" / "retail-scoring.csv")   # one per store and week
    (tenant, columns), = rows[0].items()     # XDM: the columns under the tenant id
    assert tenant.startswith("_") and set(columns) == {"date", "store", "prediction"}


def test_one_argument_trainer_with_relative_data_set_ids(home: Path, workdir: Path) -> None:
    """train(config) reads its own CSV after setwd(modelPATH): the relative id reaches it
    absolute; the scorer writes a CSV into a folder that did not exist."""
    trained = summary(cli(home, workdir, "train", "one_arg/one.config.json", "--engine", "one_arg",
                          "--json", "-p", "trainingDataSetId=data/retail-training.csv"))
    assert trained["state"] == "DONE", trained
    assert trained["metrics"] == []
    scored = summary(cli(home, workdir, "score", "one_arg/one.config.json", "--engine",
                         "one_arg", "--json", "-p", "scoringDataSetId=data/retail-scoring.csv",
                         "-p", "scoringResultsDataSetId=out/one/scores.csv"))
    assert scored["state"] == "DONE", scored
    lines = (workdir / "out" / "one" / "scores.csv").read_text().splitlines()
    assert lines[0] == '"date","store","prediction"'
    assert len(lines) - 1 == _rows(workdir / "data" / "retail-scoring.csv")
    assert f"scored {len(lines) - 1} rows" in _log(scored)     # R's output reached the run's log


def test_r_code_that_fails_names_the_message_the_class_and_the_method(home: Path,
                                                                      workdir: Path) -> None:
    failed = summary(cli(home, workdir, "train", "one_arg/one.config.json", "--engine", "one_arg",
                         "--json", "-p", "trainingDataSetId=data/retail-training.csv",
                         "-p", "fail=true", "-p", "column=zzz", check=False))
    assert failed["state"] == "FAILED"
    assert "failed in applicationTrainer$train: the training data has no column named zzz" in \
        failed["reason"]
    assert "simpleError" in failed["reason"]


def test_a_package_not_installed_fails_the_run_before_it_starts(home: Path, workdir: Path) -> None:
    proc = cli(home, workdir, "train", "missing_package/one.config.json", "--engine",
               "missing_package", "--json", "-p", "trainingDataSetId=data/retail-training.csv",
               check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "loads notInstalledAnywhere" in text
    assert "apt-get install -y --no-install-recommends r-cran-notinstalledanywhere" in text
    assert "stage train" not in text


def test_max_runtime_ends_an_r_run_aborted_and_stops_rscript(home: Path, workdir: Path) -> None:
    pid_file = workdir / "max-runtime.pid"
    aborted = summary(cli(home, workdir, "train", "one_arg/one.config.json", "--engine", "one_arg",
                          "--json", "-p", "trainingDataSetId=data/retail-training.csv",
                          "-p", "sleep=300", "-p", "maxRuntime=10", "-p", f"pidFile={pid_file}",
                          check=False))
    # 10 s: long enough for Rscript to reach train() on a loaded CI machine (3 s was not, once)
    assert aborted["state"] in ("ABORTED", "FAILED"), aborted
    assert "maxRuntime of 10 s" in aborted["reason"]
    r_pid = int(pid_file.read_text())       # written by train(), so R had started
    deadline = time.monotonic() + 10
    while _alive(r_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(r_pid), "Rscript outlived the run its maxRuntime ended"


def test_retries_run_a_failed_r_task_again(home: Path, workdir: Path) -> None:
    """The trainer fails its first attempt (it leaves a marker file) and trains on the second."""
    marker = workdir / "failed-once.marker"
    trained = summary(cli(home, workdir, "train", "one_arg/one.config.json", "--engine", "one_arg",
                          "--json", "-p", "trainingDataSetId=data/retail-training.csv",
                          "-p", "retries=1", "-p", f"failOnceMarker={marker}"))
    assert trained["state"] == "DONE", trained
    assert marker.is_file()
    log = _log(trained)
    assert "attempt 1 of 2 failed" in log and "failing this first attempt, as asked" in log


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, str(Path(folder.name) / path.relative_to(folder)))
    return buffer.getvalue()


def _tar(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return buffer.getvalue()


def _state(client: httpx.Client, experiment: str, run: str) -> dict:
    return client.get(f"/experiments/{experiment}/runs/{run}/status").json()["status"]["tasks"][0]


def _wait(client: httpx.Client, experiment: str, run: str, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = _state(client, experiment, run)
        if task["state"] in ("DONE", "FAILED", "ABORTED"):
            return task
        time.sleep(0.5)
    pytest.fail(f"run {run} did not end within {timeout_s} s")


def _engine(client: httpx.Client, name: str, artifact: bytes, filename: str) -> dict:
    response = client.post("/engines", files={
        "engine": (None, json.dumps({"name": name, "type": "R"}), "application/json"),
        "defaultArtifact": (filename, artifact, "application/octet-stream")})
    assert response.status_code == 201, response.text
    return response.json()


def _experiment(client: httpx.Client, engine: dict, tasks: list) -> dict:
    instance = client.post("/mlInstances", json={"name": engine["name"], "engineId": engine["id"],
                                                  "tasks": tasks}).json()
    return client.post("/experiments", json={"name": "r", "mlInstanceId": instance["id"]}).json()


def _r_parents(home: Path) -> list[dict]:
    from runtime.pools import describe_home

    return [w for w in describe_home(home) if w["kind"] == "r"]


def _forked_warm(home: Path, run_id: str) -> bool:
    return "forked by the warm R parent" in (home / "runs" / run_id / "worker.log").read_text()


def test_multipart_engines_and_api_runs_warm_r_parent_and_cancel(home: Path,
                                                                 workdir: Path) -> None:
    """Through a server: the first R run starts cold and starts the server's warm R parent; the
    runs after it are forked by that parent, each as isolated as a cold Rscript; a cancel kills
    the forked R child; the parent ends with the server."""
    with live_server(home) as server, sensei_client(server.api_url, new_sandbox(),
                                                    token=None) as client:
        engine = _engine(client, "Retail R", _zip(workdir / TWO), "retail r.zip")
        image = engine["artifacts"]["default"]["image"]
        assert (image["recipeKind"], image["artifactVersion"], engine["type"]) == ("r", 1, "R")
        tasks = json.loads((workdir / TWO / "retail.config.json").read_text())
        tasks[0]["parameters"].append({"key": "trainingDataSetId",
                                       "value": str(workdir / "data" / "retail-training.csv")})
        results = workdir / "out" / "api.jsonl"
        tasks[1]["parameters"] = [
            {"key": "scoringDataSetId", "value": str(workdir / "data" / "retail-scoring.csv")},
            {"key": "scoringResultsDataSetId", "value": str(results)}]
        experiment = _experiment(client, engine, tasks)
        cold = client.post(f"/experiments/{experiment['id']}/runs", json={"mode": "train"}).json()
        assert _wait(client, experiment["id"], cold["id"])["state"] == "DONE"
        assert not _forked_warm(home, cold["id"])
        insights = [i for i in client.get("/insights").json()["children"]
                    if i["context"].get("experimentRunId") == cold["id"]]
        assert {m["name"] for m in insights[0]["metrics"]} == {"MAPE", "MAE", "RMSE", "MASE"}

        deadline = time.monotonic() + 180      # it loads R's packages and Python with pandas
        while not _r_parents(home):
            assert time.monotonic() < deadline, "the server's warm R parent did not start"
            time.sleep(0.5)
        parent = _r_parents(home)[0]

        # Forked warm: the same metrics, and nothing of the parent's or of the run before
        # visible (the global environment, the working folder, R's temporary folder).
        warm = client.post(f"/experiments/{experiment['id']}/runs", json={"mode": "train"}).json()
        assert _wait(client, experiment["id"], warm["id"])["state"] == "DONE"
        assert _forked_warm(home, warm["id"])
        metrics = [{m["name"]: m["value"] for m in i["metrics"]}
                   for i in client.get("/insights").json()["children"]
                   if i["context"].get("experimentRunId") in (cold["id"], warm["id"])]
        assert len(metrics) == 2 and metrics[0] == pytest.approx(metrics[1])
        uri, = [m["modelArtifactUri"] for m in client.get("/models").json()["children"]
                if m.get("experimentRunId") == warm["id"]]
        model = Path(uri.removeprefix("file://"))
        assert set((model / "globals.txt").read_text().split()) == {
            "Helper", "abstractEvaluator", "abstractScorer", "abstractTrainer",
            "applicationEvaluator", "applicationScorer", "applicationTrainer"}
        tz, _python, numpy, tmp, cwd = (model / "environment.txt").read_text().split()
        assert tz == "UTC" and numpy.startswith("1.") and cwd.endswith(f"/{warm['id']}/model")
        assert not Path(tmp).exists(), "the forked run's R temporary folder outlived it"

        score = client.post(f"/experiments/{experiment['id']}/runs", json={"mode": "score"}).json()
        assert _wait(client, experiment["id"], score["id"])["state"] == "DONE"
        assert _forked_warm(home, score["id"])
        assert len(results.read_text().splitlines()) == _rows(workdir / "data" /
                                                              "retail-scoring.csv")

        # A long R run, cancelled: its worker stops, and the forked R child with it.
        slow = _engine(client, "Slow R", _tar(workdir / "one_arg"), "one_arg.tar.gz")
        experiment = _experiment(client, slow, [{"name": "train", "parameters": [
            {"key": "trainingDataSetId", "value": str(workdir / "data" / "retail-training.csv")},
            {"key": "sleep", "value": "300"}]}])
        run = client.post(f"/experiments/{experiment['id']}/runs", json={"mode": "train"}).json()
        pid_file = home / "runs" / run["id"] / "model" / "pid.txt"
        deadline = time.monotonic() + 120
        while not (pid_file.is_file() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, _state(client, experiment["id"], run["id"])
            time.sleep(0.3)
        r_pid = int(pid_file.read_text())
        assert _forked_warm(home, run["id"]) and r_pid != parent["pid"]
        cancel = client.post(f"/experiments/{experiment['id']}/runs/{run['id']}/cancel")
        assert cancel.status_code in (200, 202), cancel.text
        assert _wait(client, experiment["id"], run["id"], 30)["state"] == "ABORTED"
        deadline = time.monotonic() + 10
        while _alive(r_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(r_pid), "the R child outlived its cancelled run"
        assert _alive(parent["pid"])
    deadline = time.monotonic() + 15          # the server's parent ends with it
    while _alive(parent["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(parent["pid"]), "the warm R parent outlived the server that owned it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie child of someone else counts as gone
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False
