"""The built-in `noop` engine: stages that do next to nothing, to measure the runtime's own overhead."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from pydantic import Field

from runtime.engine import (FEATURE_PIPELINE, SCORE, TRAIN, Engine, EngineParams, Metric,
                            OnlinePredictor, TaskContext)

if TYPE_CHECKING:  # the stages only pass frames through; loading the class must stay cheap
    import pandas as pd


class NoopParams(EngineParams):
    sleep_ms: int = Field(0, ge=0, le=600_000, description="Pause per stage, to simulate work")
    echo: str = Field("", description="Stored in the model, to check that parameters arrive")
    steps: int = Field(0, ge=0, le=1_000_000,
                       description="Train: report a synthetic loss curve (loss = 1/step) over this "
                                   "many steps, to exercise per-step metrics")
    trainingDataSetId: Optional[str] = None
    scoringDataSetId: Optional[str] = None
    scoringResultsDataSetId: Optional[str] = None
    featuresDataSetId: Optional[str] = None


class NoopEngine(Engine):
    name = "noop"
    kind = "python"
    description = "Does nothing: returns its input, saves a tiny JSON model, emits one metric."
    params = {TRAIN: NoopParams, SCORE: NoopParams, FEATURE_PIPELINE: NoopParams}
    preload = ("pandas", "pyarrow.parquet")   # what its runs read and write data sets with
    online_preload = ()   # online, rows stay columns: a model host needs neither

    def feature_pipeline(self, ctx: TaskContext, data: pd.DataFrame) -> pd.DataFrame:
        _pause(ctx)
        return data

    def train(self, ctx: TaskContext, features: pd.DataFrame) -> dict[str, Any]:
        _pause(ctx)
        steps = getattr(ctx.params, "steps", 0)
        if steps:
            progress = ctx.progress(steps, "noop steps")
            for step in range(1, steps + 1):
                ctx.log_metric("loss", 1.0 / step, step)
                progress.update(1)
            progress.close()
            ctx.log_metric("loss", 1.0 / steps)
        ctx.log_metric("rows", float(len(features)), "double")
        return {"rows": len(features), "echo": getattr(ctx.params, "echo", "")}

    def save_model(self, ctx: TaskContext, model: dict[str, Any], directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.json").write_text(json.dumps(model, sort_keys=True))

    def load_model(self, ctx: TaskContext, directory: Path) -> dict[str, Any]:
        return json.loads((Path(directory) / "model.json").read_text())

    def score(self, ctx: TaskContext, model: dict[str, Any], data: pd.DataFrame) -> pd.DataFrame:
        _pause(ctx)
        return data

    def evaluate(self, ctx: TaskContext, model: dict[str, Any], data: pd.DataFrame) -> list[Metric]:
        return [Metric(name="rows", value=float(len(data)), valueType="double")]

    def online(self, ctx: TaskContext, model: dict[str, Any]) -> OnlinePredictor:
        """Online, rows come back as they were sent, as columns (never a pandas frame): what a
        request costs is the serving path's own overhead. The pauses are the batch path's
        (feature_pipeline, then score)."""
        def predict_many(parts: list[Any]) -> list[Any]:
            _pause(ctx)
            _pause(ctx)
            return parts

        return OnlinePredictor(predict=lambda part: predict_many([part])[0],
                               predict_many=predict_many, takes_columns=True)


def _pause(ctx: TaskContext) -> None:
    sleep_ms = getattr(ctx.params, "sleep_ms", 0)
    if sleep_ms:
        import time
        time.sleep(sleep_ms / 1000.0)
