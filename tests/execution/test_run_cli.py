"""`run train|score|fp` end to end on the real retail data, through a worker subprocess."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from waiting import until

RETAIL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "retail"
pytestmark = pytest.mark.skipif(not (RETAIL / "retail.csv").exists(),
                                reason="the shared retail data set is not beside the checkout")


def cli(home, *argv, cwd=None, check=False, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    proc = subprocess.run([sys.executable, "-m", "runtime.cli.main", *argv, "--home", str(home)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def last_json(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def instance_file(tmp_path):
    doc = {"name": "Retail", "engineId": "retail-sales", "tasks": [
        {"name": "fp", "parameters": [
            {"key": "trainingDataSetId", "value": str(RETAIL / "retail-training.csv")},
            {"key": "featuresDataSetId", "value": str(tmp_path / "features.parquet")}]},
        {"name": "train", "parameters": [
            {"key": "trainingDataSetId", "value": str(RETAIL / "DSWRetailSales-Training.parquet")},
            {"key": "epochs", "value": "10"}]},
        {"name": "score", "parameters": [
            {"key": "scoringDataSetId", "value": str(RETAIL / "retail-scoring.csv")},
            {"key": "scoringResultsDataSetId", "value": str(tmp_path / "scores.csv")}]}]}
    path = tmp_path / "retail.json"
    path.write_text(json.dumps(doc))
    return path


def test_train_then_score_then_fp(tmp_path, instance_file):
    home = tmp_path / "home"
    train = last_json(cli(home, "train", str(instance_file), "--json", check=True))
    assert train["state"] == "DONE" and train["mode"] == "train" and train["modelId"]
    metrics = {m["name"]: m["value"] for m in train["metrics"]}
    assert {"MAPE", "MAE", "RMSE", "MASE"} <= set(metrics)
    assert 0 < metrics["MAPE"] < 0.0548          # better than next week = this week

    score = last_json(cli(home, "score", str(instance_file), "--json", check=True))
    assert score["state"] == "DONE" and score["modelId"] == train["modelId"]
    assert score["experimentId"] == train["experimentId"]
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(scores.columns) == ["date", "store", "prediction"]
    assert scores["store"].nunique() == 45 and scores["prediction"].gt(0).all()

    fp = last_json(cli(home, "fp", str(instance_file), "--json", check=True))
    assert fp["state"] == "DONE" and Path(fp["output"]).exists()

    # the registry saw all of it: one MLInstance reused, three runs, one Model, one Insight
    listing = json.loads(cli(home, "instances", "list", "--json", check=True).stdout)
    assert listing["_page"]["totalCount"] == 1


def test_score_without_a_trained_model_fails_clearly(tmp_path, instance_file):
    proc = cli(tmp_path / "home", "score", str(instance_file))
    assert proc.returncode == 1
    assert "has no trained Model to score with" in proc.stderr


def test_explain_shows_values_and_sources_and_runs_nothing(tmp_path, instance_file):
    home = tmp_path / "home"
    params = tmp_path / "p.yaml"
    params.write_text("n_estimators: 3\n")
    proc = cli(home, "train", str(instance_file), "--explain", "-p", "learning_rate=0.05",
               "--params", str(params), check=True)
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    assert rows["learning_rate"][1:] == ["0.05", "cli"]
    assert rows["n_estimators"][1:] == ["3", "cli"]
    assert rows["epochs"][1:] == ["10", "mlInstance"]
    assert rows["hidden_size"][-1] == "default"
    assert "python-cpu" in proc.stdout
    assert not (home / "runs").exists()


def test_dry_run_prints_the_plan(tmp_path, instance_file):
    proc = cli(tmp_path / "home", "train", str(instance_file), "--dry-run", check=True)
    assert "backend  python-cpu" in proc.stdout and "reason" in proc.stdout


def test_a_gpu_request_without_cuda_is_refused_unless_cpu_is_asked(tmp_path, instance_file):
    from runtime.dispatch import detect_host

    if detect_host().cuda_devices:
        pytest.skip("this host has a CUDA device")
    doc = json.loads(instance_file.read_text())
    doc["tasks"][1]["specification"] = {"type": "ContainerTaskSpec", "gpus": "1"}
    instance_file.write_text(json.dumps(doc))
    proc = cli(tmp_path / "home", "train", str(instance_file), "--dry-run")
    assert proc.returncode == 1 and "--device cpu" in proc.stderr
    ok = cli(tmp_path / "home", "train", str(instance_file), "--dry-run", "--device", "cpu")
    assert ok.returncode == 0 and "python-cpu" in ok.stdout


def test_a_bad_override_names_key_value_and_layer(tmp_path, instance_file):
    proc = cli(tmp_path / "home", "train", str(instance_file), "-p", "learning_rate=fast")
    assert proc.returncode == 1
    assert "learning_rate" in proc.stderr and "'fast'" in proc.stderr and "cli" in proc.stderr


def test_a_failing_run_is_failed_with_its_reason(tmp_path, instance_file):
    home = tmp_path / "home"
    proc = cli(home, "train", str(instance_file), "-p", "trainingDataSetId=/no/such/file.csv",
               "--json")
    assert proc.returncode == 1
    summary = last_json(proc)
    assert summary["state"] == "FAILED" and "/no/such/file.csv" in summary["reason"]


def test_ctrl_c_aborts_the_run_and_kills_the_worker(tmp_path):
    home = tmp_path / "home"
    target = tmp_path / "noop.json"
    (tmp_path / "tiny.csv").write_text("a,b\n1,2\n")
    target.write_text(json.dumps({"name": "slow", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "sleep_ms", "value": "60000"},
                                         {"key": "trainingDataSetId",
                                          "value": str(tmp_path / "tiny.csv")}]}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "train", str(target),
                             "--json", "--home", str(home)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    started = deadline = time.time()
    deadline += 60
    runs = home / "runs"

    def engine_working() -> bool:   # the worker logged a stage: it is inside the engine's sleep
        return runs.exists() and any("stage " in log.read_text(errors="replace")
                                     for log in runs.glob("*/worker.log"))

    until(engine_working, timeout_s=deadline - time.time(), what="the worker's first stage")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    elapsed = time.time() - started
    assert proc.returncode != 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["state"] == "ABORTED", summary
    assert elapsed < 30          # the 60 s sleep was cut short
    status = json.loads(cli(home, "instances", "list", "--json").stdout)   # the store is intact
    assert status["_page"]["totalCount"] == 1
