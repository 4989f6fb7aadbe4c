"""Users' recipes served online by a real `run serve`: a function recipe's scorer takes the
request's rows as its frame; a class recipe's scorer runs unchanged, its platform_sdk reader
handed the request and its writer's frame captured in memory (the path marked slow: the scorer
reloads its model on every call); a PySpark engine's Model is refused with a 422 that says why.
Recipes run in the runtime's own environment (--env-manager local): no environment is built."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serving_helpers import Served, cli_env

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RECIPES = REPO / "tests" / "recipes" / "fixtures"
RETAIL = REPO.parent / "shared" / "data" / "retail"


def _env(**extra: str) -> dict[str, str]:
    return cli_env(MLRUNTIME_ENV_MANAGER="local", **extra)


def _train(home: Path, recipe: Path, config: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "runtime.cli.main", "train", str(recipe / config),
                          "--engine", str(recipe), "--env-manager", "local", "--home", str(home),
                          "--json", "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}"],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["state"] == "DONE", summary
    return summary


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("online-recipes")
    home = root / "home"
    functions = _train(home, HERE / "fixtures" / "mean_functions", "mean.config.json")
    classes = _train(home, RECIPES / "old_classes", "old.config.json")
    server = Served(home, "serve", log=root / "server.log", env=_env(MLRUNTIME_SCHEDULER="off"),
                    wait_s=30)
    base = server.__enter__().base
    try:
        yield {"base": base, "api": base + "/data/sensei", "home": home, "root": root,
               "functions": functions, "classes": classes}
    finally:
        server.__exit__()


def _invoke(served, model_id: str, body: dict) -> httpx.Response:
    return httpx.post(f"{served['api']}/models/{model_id}/invocations", json=body, timeout=120)


def _store_means(factor: float) -> dict[int, float]:
    import pandas as pd

    frame = pd.read_csv(RETAIL / "retail-training.csv")
    return {int(s): float(m) * factor for s, m in frame.groupby("store")["weeklySales"].mean().items()}


def test_a_function_recipe_scores_the_request_rows(served):
    means = _store_means(2.0)
    answer = _invoke(served, served["functions"]["modelId"],
                     {"dataframe_split": {"columns": ["store", "weeklySales"],
                                          "data": [[1, 10.0], [3, 20.0], [1, 30.0]]}})
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Model-Id"] == served["functions"]["modelId"]
    predictions = answer.json()["predictions"]
    assert [p["store"] for p in predictions] == [1, 3, 1]
    assert [p["prediction"] for p in predictions] == pytest.approx([means[1], means[3], means[1]])


def test_a_class_recipe_runs_unchanged_with_the_request_as_its_data_set(served):
    import pandas as pd

    mean = float(pd.read_csv(RETAIL / "retail-training.csv")["weeklySales"].mean()) * 2
    model = served["classes"]["modelId"]
    answer = _invoke(served, model, {"dataframe_records": [{"store": 4, "weeklySales": 1.0},
                                                           {"store": 9, "weeklySales": 2.0}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [{"store": 4, "prediction": pytest.approx(mean)},
                                            {"store": 9, "prediction": pytest.approx(mean)}]
    # the scorer wrote to its answer data set in memory: no file appeared where it points
    assert not Path("/online-answer").exists()
    # its metadata says why each request is slow
    metadata = httpx.get(f"{served['base']}/v2/models/{model}", timeout=30).json()
    assert "modelPATH" in metadata["parameters"]["slow"]


def test_a_pyspark_engine_is_refused_with_a_422_saying_why(served):
    """A Model of a PySpark MLInstance (registered, never trained: the refusal comes before a
    host starts or anything loads)."""
    from runtime.home import resolve_home
    from runtime.registry import Caller, Registry
    from runtime.run_targets import ensure_engine
    from runtime.schemas import EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE, MODEL

    registry = Registry.open(resolve_home(served["home"]))
    try:
        caller = Caller.local()
        engine = ensure_engine(registry, caller, "retail-sales-spark")
        instance = registry.create(MLINSTANCE, caller, {
            "name": "spark forecast", "engineId": engine["id"],
            "tasks": [{"name": "train", "parameters": []}]})
        experiment = registry.create(EXPERIMENT, caller, {"name": "spark",
                                                          "mlInstanceId": instance["id"]})
        run = registry.create(EXPERIMENT_RUN, caller, {"mode": "train",
                                                       "experimentId": experiment["id"]})
        model = registry.create(MODEL, caller, {"name": "spark model",
                                                "experimentId": experiment["id"],
                                                "experimentRunId": run["id"]})
    finally:
        registry.close()
    answer = _invoke(served, model["id"], {"dataframe_records": [{"store": 1}]})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "PySpark" in detail and "run score" in detail
