"""retail-sales-spark, like retail-sales: a train run without validation rows keeps its Model,
ends DONE and says why there are no validation metrics."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_train_without_validation_rows_registers_the_model(retail_small, tmp_path):
    home = tmp_path / "home"
    target = tmp_path / "retail-spark.json"
    target.write_text(json.dumps({"name": "retail-spark", "engineId": "retail-sales-spark",
                                  "tasks": [{"name": "train", "parameters": [
        {"key": "trainingDataSetId", "value": str(retail_small["training.csv"])},
        {"key": "n_estimators", "value": "2"}, {"key": "max_depth", "value": "2"},
        {"key": "driverMemory", "value": "1152"}, {"key": "driverCores", "value": "2"},
        {"key": "validation_start", "value": "2030-01-01"}]}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    proc = subprocess.run([sys.executable, "-m", "runtime.cli.main", "train", str(target),
                           "--json", "--home", str(home)], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "DONE" and summary["modelId"]
    assert not {"MAPE", "MAE", "RMSE", "MASE"} & {m["name"] for m in summary["metrics"]}
    (warning,) = summary["warnings"]
    assert warning.startswith("No validation metrics: no row from validation_start 2030-01-01")
    assert "the labelled rows end at 20" in warning
