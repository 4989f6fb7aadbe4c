"""One retail-sales stage in a fresh process: its peak RSS above the RSS before it, for
bench_memory.py --row-bytes.

    python benchmarks/_row_bytes_probe.py MODE DATA MODEL_DIR WORK_DIR WARMUP_DATA

MODE is score-whole, score-chunked, train-whole or train-chunked (chunked: one chunk holding every
row). The stage runs once on WARMUP_DATA first (so the modules it imports lazily are in), then the
peak (VmHWM) is reset and it runs on DATA. Prints one JSON line: {"base": bytes, "peak": bytes}.
"""
from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _stage(mode: str, data: str, model_dir: str, work: Path) -> None:
    from engines.retail_sales import RetailSalesEngine
    from runtime.engine import default_context

    task, path = mode.split("-")
    params: dict = {"chunk_rows": 0 if path == "whole" else 10 ** 9}
    if task == "train":
        params.update(epochs=1, batch_size=4096)
    else:
        params["scoringResultsDataSetId"] = str(work / "scores.parquet")
    engine = RetailSalesEngine()
    ctx = default_context(engine, task, params, threads=2, artifact_dir=work)
    if task == "score":
        model = engine.load_model(ctx, Path(model_dir))
        loaded = engine.load_data(ctx, data)
        scores = engine.score(ctx, model, loaded)
        if engine.saves_output:
            engine.save_output(ctx, scores)
        return
    loaded = engine.load_data(ctx, data)
    model = engine.train(ctx, engine.feature_pipeline(ctx, loaded))
    engine.evaluate(ctx, model, loaded)   # as the worker does after train


def main(argv: list[str]) -> int:
    mode, data, model_dir, work, warmup = argv
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import torch

    torch.set_num_threads(2)
    (Path(work) / "warm").mkdir(parents=True, exist_ok=True)
    _stage(mode, warmup, model_dir, Path(work) / "warm")
    gc.collect()
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")   # VmHWM := VmRSS
    _stage(mode, data, model_dir, Path(work))
    print(json.dumps({"base": base, "peak": _status("VmHWM")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
