"""A class-based recipe written like the platform's TensorFlow retail sample runs unchanged: its
`Evaluation` entry point is called (split(config), then evaluate(test part, model, config) reading
the figures the trainer left under modelPATH) and its metrics are the run's metrics and Insight;
TF_CONFIG is set for it (unless the user set one); and a pin with wheels for CPython 3.10 only
(as TensorFlow 2.8's) puts its environment on this host's Python 3.10, where the worker runs it.

The pinned package comes from a local --find-links folder (UV_FIND_LINKS), built by the test."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recipe_helpers import FIXTURES, REPO, RETAIL

sys.path.insert(0, str(REPO / "tests" / "envs"))
from local_wheels import py310_only_wheel  # noqa: E402

RUN_TIMEOUT_S = 600
RECIPE = FIXTURES / "evaluated_classes"
CONFIG = str(RECIPE / "evaluated.config.json")


def _has_python_310() -> bool:
    from runtime.envs.build import find_uv
    from runtime.envs.interpreters import host_pythons

    return any(p.version.startswith("3.10.") for p in host_pythons(find_uv()))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("class-recipes") / "home"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    py310_only_wheel(folder)
    return folder


def cli(home: Path, *args: str, env: dict | None = None, check: bool = True
        ) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")
            and k != "TF_CONFIG"}
    base["MLRUNTIME_HOME"] = str(home)
    if os.environ.get("MLRUNTIME_UV_CACHE_DIR"):
        base["MLRUNTIME_UV_CACHE_DIR"] = os.environ["MLRUNTIME_UV_CACHE_DIR"]
    proc = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args], cwd=REPO,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    if check and proc.returncode != 0:
        pytest.fail(f"run {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def insights_of(home: Path, run_id: str) -> list[dict]:
    from runtime.home import resolve_home
    from runtime.listing import ListQuery
    from runtime.schemas import INSIGHT
    from runtime.registry import Caller, Registry

    registry = Registry.open(resolve_home(home))
    try:
        listing = registry.list(INSIGHT, Caller.local(), ListQuery())
    finally:
        registry.close()
    return [i for i in listing.children if i["context"].get("experimentRunId") == run_id]


@pytest.mark.skipif(not _has_python_310() or sys.version_info[:2] == (3, 10),
                    reason="needs a CPython 3.10 on this host besides the runtime's own")
def test_evaluated_class_recipe_runs_on_the_python_its_pin_needs(home, wheelhouse, tmp_path):
    env = {"UV_FIND_LINKS": str(wheelhouse)}
    train = ["train", CONFIG, "--engine", str(RECIPE), "--pip", "envtest-py310only==1.0", "--json",
             "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}"]
    trained = summary(cli(home, *train, env=env))
    assert trained["state"] == "DONE", trained
    run_dir = Path(trained["log"]).parent
    seen = json.loads((run_dir / "logs" / "trainer.json").read_text())
    assert seen["python"] == [3, 10] and seen["pinned"]          # its environment: Python 3.10
    cluster = seen["TF_CONFIG"]
    assert cluster["task"] == {"type": "worker", "index": 0}
    (worker,) = cluster["cluster"]["worker"]
    assert worker.startswith("127.0.0.1:") and int(worker.rsplit(":", 1)[1]) > 0

    # The evaluator got split()'s second part, what train() returned, and the run's config; its
    # figures (the trainer's, read back from modelPATH) are the run's metrics and its Insight.
    called = json.loads((run_dir / "logs" / "evaluator.json").read_text())
    assert called["data"] == "held-out weeks" and called["model"] == "None"
    assert called["TF_CONFIG"]["task"]["type"] == "worker"
    from runtime.home import resolve_home
    from runtime.schemas import MODEL
    from runtime.registry import Caller, Registry
    registry = Registry.open(resolve_home(home))
    try:
        model = registry.get(MODEL, Caller.local(), trained["modelId"])
    finally:
        registry.close()
    model_dir = Path(model["modelArtifactUri"].removeprefix("file://"))
    figures = json.loads((model_dir / "held_out.json").read_text())
    metrics = {m["name"]: m["value"] for m in trained["metrics"]}
    assert metrics == pytest.approx(figures) and set(metrics) == {"MAE", "MAPE", "RMSE"}
    assert 0 < metrics["MAPE"] < 1
    (insight,) = insights_of(home, trained["runId"])
    assert {m["name"]: float(m["value"]) for m in insight["metrics"]} == pytest.approx(figures)

    out = tmp_path / "scores.parquet"
    scored = summary(cli(home, "score", CONFIG, "--engine", str(RECIPE), "--pip",
                         "envtest-py310only==1.0", "--json",
                         "-p", f"scoringDataSetId={RETAIL / 'retail-scoring.csv'}",
                         "-p", f"scoringResultsDataSetId={out}", env=env))
    assert scored["state"] == "DONE", scored
    import pandas as pd
    frame = pd.read_parquet(out)
    assert len(frame) > 1000 and frame["prediction"].notna().all()

    # A TF_CONFIG the user set is theirs: the recipe sees it unchanged.
    own = {"cluster": {"chief": ["127.0.0.1:2222"]}, "task": {"type": "chief", "index": 0}}
    again = summary(cli(home, *train, env={**env, "TF_CONFIG": json.dumps(own)}))
    assert again["state"] == "DONE", again
    seen = json.loads((Path(again["log"]).parent / "logs" / "trainer.json").read_text())
    assert seen["TF_CONFIG"] == own


def test_an_evaluator_without_evaluate_fails_before_training(home, tmp_path):
    """A class recipe scores and writes its own output: the runtime has nothing to compute metrics
    from, so an evaluator must compute them itself; one that does not stops the run at once."""
    recipe = tmp_path / "no_evaluate"
    shutil.copytree(RECIPE, recipe)
    (recipe / "evalcls" / "evaluator.py").write_text(
        "from ml.runtime.python.core.regressionEvaluator import RegressionEvaluator\n\n\n"
        "class Evaluator(RegressionEvaluator):\n    pass\n")
    failed = cli(home, "train", str(recipe / "evaluated.config.json"), "--engine", str(recipe),
                 "--env-manager", "local", "--json",
                 "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}", check=False)
    result = summary(failed)
    assert failed.returncode == 1 and result["state"] == "FAILED"
    assert "does not implement evaluate(self, data, model, config)" in result["reason"]
    assert not (Path(result["log"]).parent / "logs" / "trainer.json").exists()   # never trained
