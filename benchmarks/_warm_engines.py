"""The retail-sales engine with time marks, for bench_warm.py: the wall-clock moment its first
stage (load_data) and its `train` begin, written to marks.json in the run folder."""
from __future__ import annotations

import json
import time
from pathlib import Path

from engines.retail_sales import RetailSalesEngine


class TimedRetail(RetailSalesEngine):
    name = "timed-retail"
    preload = RetailSalesEngine.preload

    def _mark(self, ctx, what: str) -> None:
        path = Path(ctx.artifact_dir) / "marks.json"
        marks = json.loads(path.read_text()) if path.exists() else {}
        marks[what] = time.time()
        path.write_text(json.dumps(marks))

    def load_data(self, ctx, uri):
        self._mark(ctx, "load_data")
        return super().load_data(ctx, uri)

    def train(self, ctx, features):
        self._mark(ctx, "train")
        return super().train(ctx, features)
