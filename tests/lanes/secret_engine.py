"""A test engine that handles a secret carelessly: it prints and logs it, and may fail quoting it.

The runtime must mask it anyway in everything it serves (tests/lanes/test_lanes_secrets.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from runtime.engine import TRAIN, Engine, EngineParams, Metric, TaskContext


class SecretParams(EngineParams):
    apiKey: str = ""
    batchSize: int = 32
    fail: bool = False
    trainingDataSetId: Optional[str] = None


class SecretEngine(Engine):
    name = "lanes-secret"
    kind = "python"
    params = {TRAIN: SecretParams}

    def train(self, ctx: TaskContext, features: Any) -> dict[str, Any]:
        key = ctx.params.apiKey
        print(f"connecting with apiKey={key}", flush=True)
        print(f"stderr also sees {key}", file=sys.stderr, flush=True)
        ctx.logger.info("the key is %s", key)
        if ctx.params.fail:
            raise RuntimeError(f"the service refused key {key}")
        return {"rows": len(features)}

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.json").write_text(json.dumps(model))

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        return json.loads((directory / "model.json").read_text())

    def score(self, ctx: TaskContext, model: Any, data: Any) -> Any:
        return data

    def evaluate(self, ctx: TaskContext, model: Any, data: Any) -> list[Metric]:
        return [Metric(name="rows", value=float(len(data)), valueType="double")]
