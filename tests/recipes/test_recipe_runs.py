"""Recipes written in the platform's formats, run unchanged from the CLI and through the API:
train then score, each in its own environment (uv; the first build needs the package index),
Engine and MLInstance reuse, tampered and uploaded models refused.

One runtime home serves the whole module, so its uv cache and environments are built once."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli_process import run_cli, summary
from recipe_helpers import FIXTURES, REPO, RETAIL, zip_folder

sys.path.insert(0, str(REPO / "tests" / "api"))
from live_server import live_server, new_sandbox, sensei_client  # noqa: E402

RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recipes") / "home"


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli(home, *args, cwd=REPO, timeout_s=RUN_TIMEOUT_S, check=check)


def _registry(home: Path):
    from runtime.home import resolve_home
    from runtime.registry import Registry

    return Registry.open(resolve_home(home))


def _count(home: Path, kind_name: str) -> int:
    from runtime.listing import ListQuery
    from runtime.schemas import KINDS
    from runtime.store import Scope

    registry = _registry(home)
    try:
        return registry.store.list(KINDS[kind_name], Scope("local", "prod"), ListQuery())[1]
    finally:
        registry.close()


def test_function_recipe_from_the_cli(home: Path, tmp_path: Path) -> None:
    """pandas 1.x API (Series.dt.week, dropna(0, ...)) runs in the recipe's own environment."""
    recipe = tmp_path / "retail_functions"
    shutil.copytree(FIXTURES / "retail_functions", recipe)
    config = str(recipe / "retail.config.json")
    train = ["train", config, "--engine", str(recipe), "--json",
             "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}"]
    first = summary(cli(home, *train))
    assert first["state"] == "DONE", first
    metrics = {m["name"]: m["value"] for m in first["metrics"]}
    assert set(metrics) == {"MAPE", "MAE", "RMSE", "MASE", "R-squared"}
    assert 0 < metrics["MAPE"] < 0.5 and metrics["R-squared"] > 0.5
    second = summary(cli(home, *train))
    assert second["state"] == "DONE" and second["modelId"] != first["modelId"]
    assert (_count(home, "engine"), _count(home, "mlInstance")) == (1, 1)   # reused

    registry = _registry(home)
    try:
        from runtime.schemas import ENGINE, EXPERIMENT_RUN, MODEL
        from runtime.registry import Caller
        caller = Caller.local()
        run = registry.get(EXPERIMENT_RUN, caller, second["runId"])
        model = registry.get(MODEL, caller, second["modelId"])
        engine = registry.list(ENGINE, caller, __import__("runtime.listing", fromlist=["x"]).ListQuery()).children[0]
        engine = registry.get(ENGINE, caller, engine["id"])
    finally:
        registry.close()
    sha = engine["artifacts"]["default"]["image"]["sha256"]
    assert run["runtime"]["artifact"]["sha256"] == sha          # the run records what it ran
    python = run["runtime"]["plan"]["python"]                    # its own environment
    assert python and Path(python) != Path(sys.executable)
    assert Path(python).is_relative_to(home / "envs")
    assert model["modelArtifactDigest"].startswith("sha256:")

    out = tmp_path / "scores.parquet"
    score = ["score", config, "--engine", str(recipe), "--json",
             "-p", f"scoringDataSetId={RETAIL / 'retail-scoring.csv'}",
             "-p", f"scoringResultsDataSetId={out}"]
    scored = summary(cli(home, *score))
    assert scored["state"] == "DONE" and scored["modelId"] == second["modelId"]
    import pandas as pd
    frame = pd.read_parquet(out)
    assert {"store", "prediction"} <= set(frame.columns) and len(frame) > 1000

    # A model file changed on disk is never unpickled.
    model_file = Path(model["modelArtifactUri"].removeprefix("file://")) / "model.pkl"
    model_file.chmod(0o644)
    model_file.write_bytes(model_file.read_bytes() + b"\x00")
    refused = cli(home, *score, check=False)
    assert refused.returncode == 1
    assert "changed since this runtime wrote it" in summary(refused)["reason"]

    # Edited content is the next artifactVersion of the same Engine (tests/recipes/test_recipe_versions.py)
    (recipe / "retailfn" / "pipeline.py").write_text(
        (recipe / "retailfn" / "pipeline.py").read_text() + "\n# tuned\n")
    cli(home, "train", config, "--engine", str(recipe), "--dry-run")
    assert (_count(home, "engine"), _count(home, "mlInstance")) == (1, 1)


def test_class_recipe_with_its_own_requirement(home: Path, tmp_path: Path) -> None:
    recipe = FIXTURES / "class_recipe"
    config = str(recipe / "class.config.json")
    trained = summary(cli(home, "train", config, "--engine", str(recipe), "--json",
                          "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}"))
    assert trained["state"] == "DONE", trained
    # tabulate is the recipe's own requirement: its environment has it, the runtime's does not
    means = (Path(trained["log"]).parent / "logs" / "means.txt").read_text()
    assert "store" in means and "----" in means
    out = tmp_path / "class-scores.parquet"
    scored = summary(cli(home, "score", config, "--engine", str(recipe), "--json",
                         "-p", f"scoringDataSetId={RETAIL / 'retail-scoring.csv'}",
                         "-p", f"scoringResultsDataSetId={out}"))
    assert scored["state"] == "DONE", scored
    import pandas as pd
    assert pd.read_parquet(out)["prediction"].notna().all()


def _wait(client: httpx.Client, experiment: str, run: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        task = client.get(f"/experiments/{experiment}/runs/{run}/status").json()["status"]["tasks"][0]
        if task["state"] in ("DONE", "FAILED", "ABORTED"):
            return task
        time.sleep(0.5)
    pytest.fail(f"run {run} did not end within {RUN_TIMEOUT_S} s")


def test_uploaded_recipe_through_the_api(home: Path, tmp_path: Path) -> None:
    with live_server(home) as server, sensei_client(server.api_url, new_sandbox(),
                                                    token=None) as client:
        bad = client.post("/engines", files={
            "engine": (None, json.dumps({"name": "bad"}), "application/json"),
            "defaultArtifact": ("recipe.zip", b"definitely not a zip", "application/octet-stream")})
        assert bad.status_code == 400 and "not an archive" in bad.json()["detail"]

        response = client.post("/engines", files={
            "engine": (None, json.dumps({"name": "Classify", "type": "Python"}), "application/json"),
            "defaultArtifact": ("classify.zip", zip_folder(FIXTURES / "classify_functions"),
                                "application/zip")})
        assert response.status_code == 201, response.text
        engine = response.json()
        assert engine["artifacts"]["default"]["image"]["recipeKind"] == "python-functions"
        tasks = json.loads((FIXTURES / "classify_functions" / "classify.config.json").read_text())
        tasks[0]["parameters"].append({"key": "trainingDataSetId",
                                       "value": str(RETAIL / "retail-training.csv")})
        results = tmp_path / "classify-results.jsonl"
        tasks[1]["parameters"] = [{"key": "scoringDataSetId", "value": str(RETAIL / "retail-scoring.csv")},
                                  {"key": "scoringResultsDataSetId", "value": str(results)}]
        instance = client.post("/mlInstances", json={"name": "classify", "engineId": engine["id"],
                                                      "tasks": tasks}).json()
        experiment = client.post("/experiments", json={"name": "x",
                                                        "mlInstanceId": instance["id"]}).json()
        run = client.post(f"/experiments/{experiment['id']}/runs", json={"mode": "train"}).json()
        task = _wait(client, experiment["id"], run["id"])
        assert task["state"] == "DONE", task
        insights = [i for i in client.get("/insights").json()["children"]
                    if i["context"].get("experimentRunId") == run["id"]]
        names = {m["name"] for m in insights[0]["metrics"]}
        assert names == {"accuracy", "precision", "recall", "F-score", "AUC"}
        assert all(0 <= float(m["value"]) <= 1 for m in insights[0]["metrics"])
        detail = client.get(f"/experiments/{experiment['id']}/runs/{run['id']}").json()
        assert detail["runtime"]["artifact"]["sha256"] == \
            engine["artifacts"]["default"]["image"]["sha256"]

        score = client.post(f"/experiments/{experiment['id']}/runs", json={"mode": "score"}).json()
        task = _wait(client, experiment["id"], score["id"])
        assert task["state"] == "DONE", task
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        assert len(rows) > 1000 and {"prediction", "probability"} <= set(rows[0])

        # A PUT with another artifact is the Engine's next version; the runs keep their digest.
        put = client.put(f"/engines/{engine['id']}", files={
            "engine": (None, json.dumps({"name": "Classify v2"}), "application/json"),
            "defaultArtifact": ("class.zip", zip_folder(FIXTURES / "class_recipe"),
                                "application/zip")})
        assert put.status_code == 200, put.text
        image = put.json()["artifacts"]["default"]["image"]
        assert (image["artifactVersion"], image["recipeKind"]) == (2, "python-classes")
        assert image["sha256"] != engine["artifacts"]["default"]["image"]["sha256"]
        assert client.get(f"/experiments/{experiment['id']}/runs/{run['id']}").json()[
            "runtime"]["artifact"]["sha256"] == engine["artifacts"]["default"]["image"]["sha256"]

        # A Model uploaded through POST /models is never unpickled.
        import pickle
        uploaded = client.post("/models", files={
            "model": (None, json.dumps({"name": "mine", "experimentRunId": run["id"]}),
                      "application/json"),
            "modelArtifact": ("model.pkl", pickle.dumps({"not": "trained here"}),
                              "application/octet-stream")}).json()
        refused = client.post(f"/experiments/{experiment['id']}/runs", json={
            "mode": "score", "tasks": [{"name": "score", "parameters": [
                {"key": "modelId", "value": uploaded["id"]}]}]}).json()
        task = _wait(client, experiment["id"], refused["id"])
        assert task["state"] == "FAILED"
        assert "no digest recorded by this runtime" in task["message"] or \
            "no digest recorded by this runtime" in task.get("logs", ""), task


def test_older_class_recipe_in_this_environment(home: Path, tmp_path: Path) -> None:
    """--env-manager local: the runtime's own interpreter, compat/ on the recipe's path only."""
    recipe = FIXTURES / "old_classes"
    config = str(recipe / "old.config.json")
    trained = summary(cli(home, "train", config, "--engine", str(recipe), "--env-manager", "local",
                          "--sandbox", "lab", "--org", "Acme@AdobeOrg", "--json",
                          "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}"))
    assert trained["state"] == "DONE", trained
    model_dir = Path(trained["log"]).parent / "model"   # moved into the Model's folder on success
    registry = _registry(home)
    try:
        from runtime.schemas import MODEL, EXPERIMENT_RUN
        from runtime.registry import Caller
        caller = Caller.local(org="Acme@AdobeOrg", sandbox="lab")
        model = registry.get(MODEL, caller, trained["modelId"])
        run = registry.get(EXPERIMENT_RUN, caller, trained["runId"])
    finally:
        registry.close()
    assert run["runtime"]["plan"]["python"] is None and run["runtime"]["artifact"]["envManager"] == "local"
    folder = Path(model["modelArtifactUri"].removeprefix("file://"))
    saved = json.loads((folder / "model.json").read_text())
    config_seen = saved["config"]
    assert (config_seen["sandboxId"], config_seen["sandboxName"]) == ("lab", "lab")
    assert config_seen["ML_FRAMEWORK_IMS_TENANT_ID"] == "Acme@AdobeOrg"
    assert config_seen["ML_FRAMEWORK_IMS_TOKEN"] and config_seen["ML_FRAMEWORK_IMS_ML_TOKEN"]
    assert config_seen["modelPATH"] == str(model_dir) and config_seen["factor"] == "2"
    assert config_seen["logsPATH"] == str(Path(trained["log"]).parent / "logs")

    out = tmp_path / "old.jsonl"
    score = ["score", config, "--engine", str(recipe), "--env-manager", "local", "--sandbox", "lab",
             "--org", "Acme@AdobeOrg", "--json",
             "-p", f"scoringDataSetId={RETAIL / 'retail-scoring.csv'}",
             "-p", f"scoringResultsDataSetId={out}"]
    assert summary(cli(home, *score))["state"] == "DONE"
    first = json.loads(out.read_text().splitlines()[0])
    assert first["prediction"] == pytest.approx(saved["mean"])
    # The model folder a class recipe wrote is checked as a whole before its scorer runs.
    (folder / "model.json").chmod(0o644)
    (folder / "model.json").write_text(json.dumps({**saved, "mean": 0}))
    refused = cli(home, *score, check=False)
    assert refused.returncode == 1 and "changed since this runtime wrote it" in summary(refused)["reason"]
