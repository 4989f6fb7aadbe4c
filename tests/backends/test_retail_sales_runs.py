"""The retail-sales engine through the python backend: train, then score with the trained model."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from engines.retail_sales import write_retail_dataset
from runtime.backends import WorkerSpec, load_backend
from runtime.dispatch import detect_host, plan as make_plan
from runtime.resources import ResourceRequest
from runtime.schemas import RunStatus

SMALL_TRAINING = {"epochs": 3, "n_estimators": 2, "hidden_size": 8, "batch_size": 128, "seed": 7}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_retail_dataset(tmp_path_factory.mktemp("retail"), seed=3, stores=4)


def _run(spec: WorkerSpec):
    plan = make_plan(engine_kind="python", resources=ResourceRequest(cpus=2), host=detect_host())
    backend = load_backend(plan.backend)
    return backend.submit(spec=spec, plan=plan, log_path=Path(spec.run_dir) / "run.log").wait(timeout=120)


def test_train_then_score(dataset, tmp_path):
    train = WorkerSpec(run_id="train-1", engine="retail-sales", mode="train", seed=7, threads=2,
                       values={"trainingDataSetId": str(dataset["training.parquet"]), **SMALL_TRAINING},
                       run_dir=tmp_path / "train-1")
    trained = _run(train)
    assert trained.state is RunStatus.DONE, trained.log_tail
    model_dir = Path(trained.result["model_dir"])
    assert model_dir == tmp_path / "train-1" / "model" and any(model_dir.iterdir())
    metrics = {m["name"]: m["value"] for m in trained.result["metrics"]}
    assert {"MAPE", "MAE", "RMSE", "MASE", "trainingLoss"} <= set(metrics)
    assert 0 <= metrics["MAPE"] < 1
    assert "epochs: 3/3" in trained.log_tail  # progress lines (with the latest metrics) reach the log
    # chunk_rows unset: the engine chose the whole file (it fits the memory budget) and said so
    assert "whole file: 460 rows need about" in (tmp_path / "train-1" / "run.log").read_text()

    scores = tmp_path / "out" / "scores.parquet"
    score = WorkerSpec(run_id="score-1", engine="retail-sales", mode="score", model_dir=model_dir,
                       values={"scoringDataSetId": str(dataset["scoring.csv"]),
                               "scoringResultsDataSetId": str(scores)},
                       run_dir=tmp_path / "score-1")
    scored = _run(score)
    assert scored.state is RunStatus.DONE, scored.log_tail
    frame = pd.read_parquet(scores)
    assert list(frame.columns) == ["date", "store", "prediction"]
    assert len(frame) == scored.result["rows"] == 4 * 30
    assert frame["prediction"].notna().mean() > 0.9
    assert "whole file: " in (tmp_path / "score-1" / "run.log").read_text()


def test_feature_pipeline_writes_csv(dataset, tmp_path):
    out = tmp_path / "features.csv"
    spec = WorkerSpec(run_id="fp-1", engine="retail-sales", mode="featurePipeline",
                      values={"trainingDataSetId": str(dataset["training.csv"]), "featuresDataSetId": str(out)},
                      run_dir=tmp_path / "fp-1")
    outcome = _run(spec)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    header = out.read_text().splitlines()[0].split(",")
    assert {"date", "store", "weeklySalesAhead", "yoyRatio"} <= set(header)
