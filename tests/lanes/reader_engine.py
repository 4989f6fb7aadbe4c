"""A test engine that reads one more data set under a key of its own (`lookupDataSetId`), as a
recipe's configuration may: the server does not know that key, the run's data roots still apply."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from runtime.datasets import read_dataset, resolve_dataset
from runtime.engine import TRAIN, Engine, EngineParams, TaskContext


class ReaderParams(EngineParams):
    lookupDataSetId: str = ""
    trainingDataSetId: Optional[str] = None


class ReaderEngine(Engine):
    name = "lanes-reader"
    kind = "python"
    params = {TRAIN: ReaderParams}

    def train(self, ctx: TaskContext, features: Any) -> dict[str, Any]:
        lookup = read_dataset(resolve_dataset(ctx.params.lookupDataSetId))
        return {"rows": len(features), "lookup_rows": len(lookup)}

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.json").write_text(json.dumps(model))

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        return json.loads((directory / "model.json").read_text())

    def score(self, ctx: TaskContext, model: Any, data: Any) -> Any:
        return data
