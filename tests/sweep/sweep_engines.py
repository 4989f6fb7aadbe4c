"""A small engine for sweep tests: `loss = (x - 3)^2`, reported per epoch and at the end; it can
sleep, and it fails while the file `fail_if_exists` exists (only for x == fail_x when given)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from runtime.engine import TRAIN, Engine, EngineParams, Metric, TaskContext


class QuadParams(EngineParams):
    x: float = 0.0
    epochs: int = Field(3, ge=1)
    sleep_ms: int = Field(0, ge=0)
    fail_if_exists: str = ""
    fail_x: Optional[float] = None     # only a trial with this x fails (while the file exists)
    trainingDataSetId: Optional[str] = None


class Quadratic(Engine):
    name = "quadratic"
    kind = "python"
    description = "loss = (x - 3)^2 (sweep tests)"
    params = {TRAIN: QuadParams}

    def train(self, ctx: TaskContext, features: Any) -> dict[str, Any]:
        p = ctx.params
        if (p.fail_if_exists and os.path.exists(p.fail_if_exists)
                and (p.fail_x is None or p.fail_x == p.x)):
            raise RuntimeError(f"failing on purpose: {p.fail_if_exists} exists")
        loss = (p.x - 3.0) ** 2
        for epoch in range(1, p.epochs + 1):
            time.sleep(p.sleep_ms / 1000.0 / p.epochs)
            ctx.log_metric("loss", loss * (1 + 1.0 / epoch), epoch)
        ctx.log_metric("loss", loss)
        return {"x": p.x, "loss": loss}

    def evaluate(self, ctx: TaskContext, model: Any, data: Any) -> list[Metric]:
        return [Metric(name="loss", value=model["loss"], valueType="double")]

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "model.json").write_text(json.dumps(model))

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        return json.loads((Path(directory) / "model.json").read_text())
