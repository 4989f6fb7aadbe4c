"""Users' recipes as Ray jobs on a cluster of a head and one worker node, each with its own ports,
loopback address and temporary folder, running a Python that has Ray but nothing of this runtime:
the recipe travels in the job's package (its files are removed from the submitting home's recipe
store once the job is submitted), its environment as the runtime_env `uv` field with the pins of
its local environment (the function recipe needs pandas 1.x: the cluster's Python has pandas 2),
and the Model comes back to this registry. Through `run submit` and through the API of a server
started with --run-backend ray; a long recipe job is cancelled; a PySpark recipe is refused.

One cluster and one server for the module; the head has no CPUs, so every job runs on the worker
node. `run submit` works in the server's home, so each recipe's local environment (whose pins the
job's runtime_env names) is built once, and Ray builds one environment per set of pins on the node
(the function and TensorFlow-style recipes share the platform profile's pins; the class recipe and
the long one add tabulate)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from ray_head import RayHead, python_without_runtime
from waiting import until, wait_run

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "recipes" / "fixtures"
RETAIL = REPO.parent / "shared" / "data" / "retail"
TIMEOUT_S = 600
sys.path.insert(0, str(REPO / "tests" / "api"))
from live_server import live_server, new_sandbox, sensei_client  # noqa: E402

# (fixture folder, config file, extra parameters of train and of score)
RECIPES = {
    "functions-pandas1": ("retail_functions", "retail.config.json",
                          {"n_estimators": "5", "max_depth": "4"}),
    "classes": ("class_recipe", "class.config.json", {}),
    "tensorflow-style": ("evaluated_classes", "evaluated.config.json", {}),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray")
    cache = os.environ.get("MLRUNTIME_UV_CACHE_DIR")   # the suite's shared uv cache (conftest)
    python = python_without_runtime(tmp_path_factory.mktemp("node-python"))
    head = RayHead(num_cpus=0, python=python, env={"UV_CACHE_DIR": cache} if cache else {})
    head.start()
    try:
        head.add_worker(num_cpus=2)
        yield head
    finally:
        head.stop()


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_") or
           k == "MLRUNTIME_UV_CACHE_DIR"}
    env["MLRUNTIME_HOME"] = str(home)
    return env


def cli(home: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--json"], cwd=home.parent,
                          env=_env(home), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _recipe_store(home: Path) -> Path:
    return home / "recipes"


def remove_recipes(home: Path) -> int:
    """Every stored recipe of `home` moved out of its store (to HOME/../recipes-away, where
    `restore_recipes` takes them back from); how many there were."""
    store = _recipe_store(home)
    found = [p for p in store.iterdir() if (p / "recipe.json").is_file()] if store.is_dir() else []
    away = home.parent / "recipes-away"
    away.mkdir(exist_ok=True)
    for folder in found:
        os.rename(folder, away / folder.name)
    return len(found)


def restore_recipes(home: Path) -> None:
    """The recipes `remove_recipes` moved away, back in the store (a later run of the same
    MLInstance is prepared from them, as after registering the recipe again)."""
    away = home.parent / "recipes-away"
    for folder in list(away.iterdir()) if away.is_dir() else []:
        os.rename(folder, _recipe_store(home) / folder.name)


def run_ids(home: Path) -> list[dict]:
    """The runs of `home`, newest first."""
    from runtime.home import resolve_home
    from runtime.listing import Filter, ListQuery
    from runtime.registry import Caller, Registry
    from runtime.schemas import EXPERIMENT_RUN

    if not (home / "registry.db").exists():
        return []
    registry = Registry.open(resolve_home(home))
    try:
        return registry.list(EXPERIMENT_RUN, Caller.local(), ListQuery(
            filters=(Filter("deleted", "==", False, "bool"),), order=(("created", True),),
            limit=50)).children
    finally:
        registry.close()


def submitted(home: Path, before: set[str]) -> str:
    """The id of the run of `home` not in `before` once it has a Ray submission id."""
    def check():
        return next((run["id"] for run in run_ids(home) if run["id"] not in before
                     and (run.get("backend") or {}).get("submissionId")), None)
    return until(check, timeout_s=TIMEOUT_S, interval_s=0.2, what="the run's Ray submission")


def submit_without_the_recipe(home: Path, *args: str) -> dict:
    """`run submit ARGS`, the home's recipe store emptied as soon as the job is submitted."""
    before = {run["id"] for run in run_ids(home)}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "submit", *args, "--json",
                             "--no-working-dir"], cwd=home.parent, env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        submitted(home, before)
        assert remove_recipes(home) >= 1
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        restore_recipes(home)
    assert out.strip(), err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ray_server(cluster, tmp_path_factory):
    """`run serve --run-backend ray` with RAY_ADDRESS naming the cluster. Its home is the CLI
    tests' too: a recipe's local environment (whose pins the job takes) is built once."""
    home = tmp_path_factory.mktemp("api") / "home"
    cache = os.environ.get("MLRUNTIME_UV_CACHE_DIR")
    if cache:   # the server drops MLRUNTIME_* settings: its home's uv cache is the suite's
        (home / "cache").mkdir(parents=True)
        (home / "cache" / "uv").symlink_to(cache, target_is_directory=True)
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        with live_server(home, "--run-backend", "ray") as server:
            yield server
    finally:
        os.environ.pop("RAY_ADDRESS") if previous is None else os.environ.update(RAY_ADDRESS=previous)


def _params(**values: str) -> list[str]:
    return [arg for key, value in values.items() for arg in ("-p", f"{key}={value}")]


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_and_scores_through_run_submit(cluster, ray_server, tmp_path, name):
    folder, config, extra = RECIPES[name]
    recipe = tmp_path / folder
    shutil.copytree(FIXTURES / folder, recipe)
    home = ray_server.home
    train = {"trainingDataSetId": str(RETAIL / "retail-training.csv"), **extra}
    out = tmp_path / "scores.parquet"
    score = {"scoringDataSetId": str(RETAIL / "retail-scoring.csv"), "scoringResultsDataSetId": str(out)}
    # Registers the Engine (the recipe stored in this home) and the MLInstance; runs nothing
    planned = cli(home, "train", str(recipe / config), "--engine", str(recipe), "--dry-run")
    instance = planned["mlInstanceId"]

    trained = submit_without_the_recipe(home, "train", instance, "--address", cluster.address,
                                        *_params(**train))
    assert trained["state"] == "DONE", trained["reason"]
    assert trained["modelId"]
    log = Path(trained["log"]).read_text()
    from runtime.home import resolve_home
    from runtime.schemas import EXPERIMENT_RUN, MODEL
    from runtime.registry import Caller, Registry

    registry = Registry.open(resolve_home(home))
    try:
        model = registry.get(MODEL, Caller.local(), trained["modelId"])
        run = registry.get(EXPERIMENT_RUN, Caller.local(), trained["runId"])
        assert model["modelArtifactDigest"].startswith("sha256:")
        assert registry.model_artifact_dir(Caller.local(), model["id"]).is_dir()
    finally:
        registry.close()
    assert run["backend"]["request"]["num_cpus"] == 1    # no cpus named: one CPU, as locally
    if name == "functions-pandas1":   # Series.dt.week: pandas 1.x, not the cluster's pandas 2
        assert {m["name"] for m in trained["metrics"]} == {"MAPE", "MAE", "RMSE", "MASE", "R-squared"}
    # (the job's own temporary folder on the node: the recipe never was under this home there),
    # removed when the job ended: a long-lived node's disk does not fill with every job's recipe
    assert "with engine recipe:" in log and "/mlrt-recipe-" in log
    unpacked = {Path(p) for p in re.findall(r"(/\S*?/mlrt-recipe-[^/\s]+)/", log)}
    assert unpacked and not any(folder.exists() for folder in unpacked), unpacked

    scored = submit_without_the_recipe(home, "score", instance, "--address", cluster.address,
                                       *_params(**score))
    assert scored["state"] == "DONE", scored["reason"]
    assert scored["modelId"] == trained["modelId"]
    assert pd.read_parquet(out)["prediction"].notna().all()


def _created(resp: httpx.Response) -> dict:
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


def _run_without_the_recipe(client, home: Path, experiment: str, mode: str) -> dict:
    run = _created(client.post(f"/experiments/{experiment}/runs", json={"mode": mode}))
    until(lambda: (client.get(f"/experiments/{experiment}/runs/{run['id']}").json().get("backend")
                   or {}).get("submissionId"), timeout_s=TIMEOUT_S, interval_s=0.2,
          what="the run's Ray submission")
    assert remove_recipes(home) >= 1
    try:
        return wait_run(client, run["id"], experiment_id=experiment, timeout_s=TIMEOUT_S)
    finally:
        restore_recipes(home)


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_and_scores_through_the_api_on_ray(ray_server, tmp_path, name):
    sys.path.insert(0, str(REPO / "tests" / "recipes"))
    from recipe_helpers import zip_folder

    folder, config, extra = RECIPES[name]
    artifact = zip_folder(FIXTURES / folder)
    out = tmp_path / "api-scores.parquet"
    own = {p["key"]: p["value"]
           for p in json.loads((FIXTURES / folder / config).read_text())[0]["parameters"]}
    train = {**own, "trainingDataSetId": str(RETAIL / "retail-training.csv"), **extra}
    tasks = [{"name": "train", "parameters": [{"key": k, "value": v} for k, v in train.items()]},
             {"name": "score", "parameters": [
                 {"key": "scoringDataSetId", "value": str(RETAIL / "retail-scoring.csv")},
                 {"key": "scoringResultsDataSetId", "value": str(out)}]}]
    with sensei_client(ray_server.api_url, new_sandbox(), token=None) as client:
        engine = _created(client.post("/engines", files={
            "engine": (None, json.dumps({"name": name, "type": "Python"}), "application/json"),
            "defaultArtifact": (f"{folder}.zip", artifact, "application/zip")}))
        instance = _created(client.post("/mlInstances", json={
            "name": name, "engineId": engine["id"], "tasks": tasks}))
        experiment = _created(client.post("/experiments", json={
            "name": name, "mlInstanceId": instance["id"]}))
        task = _run_without_the_recipe(client, ray_server.home, experiment["id"], "train")
        assert task["state"] == "DONE", task
        models = client.get("/models").json()["children"]
        assert any(m.get("experimentRunId") for m in models)
        task = _run_without_the_recipe(client, ray_server.home, experiment["id"], "score")
        assert task["state"] == "DONE", task
    assert pd.read_parquet(out)["prediction"].notna().all()


def test_cancel_stops_a_long_recipe_job(cluster, tmp_path):
    recipe = tmp_path / "sleepy"
    shutil.copytree(FIXTURES / "class_recipe", recipe)
    trainer = recipe / "classrecipe" / "trainer.py"
    trainer.chmod(0o644)
    where = tmp_path / "trainer-ran-from"   # the job's copy of the recipe on the node
    trainer.write_text(trainer.read_text().replace(
        "    def train(self, config={}):\n",
        "    def train(self, config={}):\n"
        f"        open({str(where)!r}, 'w').write(__file__)\n"
        "        import time; time.sleep(600)\n"))
    home = tmp_path / "home"
    planned = cli(home, "train", str(recipe / "class.config.json"), "--engine", str(recipe),
                  "--dry-run")
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "submit", "train",
                             planned["mlInstanceId"], "--address", cluster.address, "--json",
                             "--no-working-dir",
                             *_params(trainingDataSetId=str(RETAIL / "retail-training.csv"))],
                            cwd=tmp_path, env=_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        run_id = submitted(home, set())
        from runtime.home import resolve_home
        from runtime.registry import Caller, Registry

        registry = Registry.open(resolve_home(home))
        try:
            wait_run(registry, run_id, states={"RUNNING"}, scope=Caller.local().scope,
                     timeout_s=TIMEOUT_S)
        finally:
            registry.close()
        cancelled = cli(home, "cancel", run_id)
        assert cancelled["state"] == "ABORTED"
        out, _ = proc.communicate(timeout=120)
        assert json.loads(out.strip().splitlines()[-1])["state"] == "ABORTED"
        # the stopped job removed its unpacked recipe from the node
        unpacked = Path(where.read_text())
        assert "/mlrt-recipe-" in str(unpacked)
        until(lambda: not unpacked.exists(), timeout_s=30, interval_s=0.2,
              what=f"the stopped job's copy of the recipe ({unpacked}) removed")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_pyspark_recipe_is_refused_naming_spark(cluster, tmp_path):
    recipe = REPO / "tests" / "spark_recipes" / "fixtures" / "retail_regression"
    config = tmp_path / "config.json"
    config.write_text(json.dumps([{"name": "train", "parameters": []}]))
    home = tmp_path / "home"
    planned = cli(home, "train", str(config), "--engine", str(recipe), "--dry-run")
    refused = subprocess.run([sys.executable, "-m", "runtime.cli.main", "submit", "train",
                              planned["mlInstanceId"], "--address", cluster.address, "--json"],
                             cwd=tmp_path, env=_env(home), capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    assert refused.returncode != 0
    assert "is a PySpark recipe" in refused.stderr and "spark://" in refused.stderr
