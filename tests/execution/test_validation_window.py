"""A train run whose data ends before the validation window (the training file cut at 2012-02-03,
default `validation_start` 2012-02-03): the Model is registered, the run is DONE, and the reason
there are no validation metrics is in the log, the status message and the CLI's output;
`--explain` shows the split and the rows on each side before anything runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from runtime.engine import default_context
from runtime.home import resolve_home
from runtime.schemas import MODEL
from runtime.registry import Caller, Registry
from runtime.tasks import TRAIN

from engines.retail_sales import RetailSalesEngine

RETAIL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "retail"
pytestmark = pytest.mark.skipif(not (RETAIL / "retail-training.csv").exists(),
                                reason="the shared retail data set is not beside the checkout")
CUT = "2012-02-03"
TINY = {"epochs": "1", "n_estimators": "1", "hidden_size": "8", "max_depth": "1"}


@pytest.fixture(scope="module")
def cut_file(tmp_path_factory) -> Path:
    data = pd.read_csv(RETAIL / "retail-training.csv")
    dates = pd.to_datetime(data["date"], format="%m/%d/%y")
    assert dates.max() > pd.Timestamp(CUT)   # the full file does reach the window
    path = tmp_path_factory.mktemp("cut") / "retail-training-cut.csv"
    data[dates <= pd.Timestamp(CUT)].to_csv(path, index=False)
    return path


def _instance(tmp_path: Path, training: Path) -> Path:
    doc = {"name": "Retail cut", "engineId": "retail-sales", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(training)}] + [
            {"key": k, "value": v} for k, v in TINY.items()]}]}
    path = tmp_path / "instance.json"
    path.write_text(json.dumps(doc))
    return path


def _cli(home: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    env["COLUMNS"] = "400"   # --explain fits the terminal's width: wide enough that no line wraps
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *argv, "--home", str(home)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_explain_shows_the_split_and_the_rows_on_each_side(tmp_path, cut_file):
    proc = _cli(tmp_path / "home", "train", str(_instance(tmp_path, cut_file)), "--explain")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"trainingDataSetId {cut_file}:" in out
    assert "validate on rows from 2012-02-03 (validation_start)" in out
    train_rows = int(out.split("train rows: ")[1].split()[0])
    assert train_rows > 1000
    assert "validation rows: 0 " in out
    assert "the labelled rows end at 2012-01-27" in out
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())


def test_explain_counts_validation_rows_of_the_full_file(tmp_path):
    ctx = default_context(RetailSalesEngine, TRAIN, {})
    data = pd.read_csv(RETAIL / "retail-training.csv")
    lines = RetailSalesEngine().explain(ctx, data)
    validation = int(next(l for l in lines if l.startswith("validation rows:")).split()[2])
    # 45 stores, labelled weeks from 2012-02-03 up to the week before the file's last one
    dates = pd.to_datetime(data["date"], format="%m/%d/%y")
    weeks = ((dates >= pd.Timestamp(CUT)) & (dates < dates.max())).groupby(dates).any().sum()
    assert validation == 45 * weeks
    assert not any("No validation metrics" in l for l in lines)


def test_train_run_without_validation_rows_registers_the_model(tmp_path, cut_file):
    home = tmp_path / "home"
    proc = _cli(home, "train", str(_instance(tmp_path, cut_file)), "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "DONE" and summary["modelId"]
    assert [m["name"] for m in summary["metrics"]] == ["trainingLoss"]   # no validation metrics
    (warning,) = summary["warnings"]
    assert "No validation metrics" in warning and "2012-01-27" in warning

    registry = Registry.open(resolve_home(home))
    try:
        caller = Caller.local()
        model = registry.get(MODEL, caller, summary["modelId"])
        assert model["experimentRunId"] == summary["runId"]
        status = registry.run_status(caller, summary["experimentId"], summary["runId"])
        task = status["status"]["tasks"][0]
        assert task["state"] == "DONE"
        assert task["message"].startswith("Run completed with warnings: No validation metrics")
    finally:
        registry.close()
    log = Path(summary["log"]).read_text()
    assert "WARNING runtime.engine.retail-sales: No validation metrics" in log
