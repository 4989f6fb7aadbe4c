"""Engines for the runs-page tests, loaded as `web_engines:<Class>` (the tests put this folder on
the PYTHONPATH of `run train`, whose worker inherits it)."""
from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from engines.noop import NoopEngine, NoopParams
from runtime.engine import FEATURE_PIPELINE, SCORE, TRAIN, TaskContext


class CurveParams(NoopParams):
    first: float = Field(42_000.0, description="The curve's value at step 1")
    drop: float = Field(1_000.0, description="How much the value falls at each step")
    hold_s: float = Field(0.0, ge=0, description="Seconds to wait after the curve, before ending")


class CurveEngine(NoopEngine):
    """Reports `sales_error` = first - drop * (step - 1) over `steps` steps (values in the
    tens of thousands by default), then waits `hold_s` seconds: time for a test to cancel it."""

    name = "web-curve"
    params = {TRAIN: CurveParams, SCORE: CurveParams, FEATURE_PIPELINE: CurveParams}
    preload = ()

    def train(self, ctx: TaskContext, features: Any) -> dict[str, Any]:
        p = ctx.params
        value = p.first
        for step in range(1, p.steps + 1):
            value = p.first - p.drop * (step - 1)
            ctx.log_metric("sales_error", value, step)
        if p.hold_s:
            time.sleep(p.hold_s)
        ctx.log_metric("sales_error", value)
        return {"rows": len(features), "echo": p.echo}
