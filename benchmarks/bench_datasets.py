"""Writing a recipe's scored output through platform_sdk's DatasetWriter vs pandas directly.

    python benchmarks/bench_datasets.py            # 1,000,000 scored rows, 5 rounds
    python benchmarks/bench_datasets.py --quick    # 100,000 rows, 3 rounds: a smoke test

Cases (same frame, same folder, rounds alternate the two sides so load drifts hit both):

- scored, Parquet: `DatasetWriter(ctx, Dataset(ctx).get_by_id(path)).write(frame,
  file_format="parquet")` vs `frame.to_parquet(path, index=False)`. Target: the writer's speed
  >= 0.9x pandas' (ratio = pandas' median time / the writer's).
- scored XDM, Parquet (reported, not judged): the same rows with tenant-prefixed columns plus
  `_id`, `eventType`, `timestamp`, which the writer nests into a `_tenant` struct column, vs
  `to_parquet` of that flat frame (which writes dotted column names, not XDM).
- scored, JSON lines (reported, not judged): `file_format="json"` vs
  `frame.to_json(path, orient="records", lines=True)`.

The writer runs here as recipe code would, with runtime/compat put on this script's sys.path (a
benchmark process, never the test suite's).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "runtime" / "compat"))

from _common import table  # noqa: E402

TARGET = 0.9


def scored_frame(rows: int, seed: int) -> Any:
    """What a retail scoring pipeline returns: date (text), store, prediction."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    dates = pd.date_range("2012-04-06", periods=max(1, rows // 45 + 1), freq="7D").strftime("%Y-%m-%d")
    return pd.DataFrame({
        "date": np.resize(np.asarray(dates), rows),
        "store": np.resize(np.arange(1, 46, dtype="int64"), rows),
        "prediction": rng.normal(1.5e6, 2e5, rows),
    })


def xdm_frame(frame: Any) -> Any:
    out = frame.add_prefix("_tenant.")
    out["_id"] = ""
    out["timestamp"] = "2019-01-01T00:00:00"
    out["eventType"] = ""
    return out


def measure(rounds: int, writer: Callable[[int], Path], baseline: Callable[[int], Path]) -> dict:
    times: dict[str, list[float]] = {"writer": [], "baseline": []}
    sizes: dict[str, int] = {}
    writer(-1)
    baseline(-1)   # warm both (imports, page cache)
    for i in range(rounds):
        order = (("writer", writer), ("baseline", baseline)) if i % 2 == 0 else \
            (("baseline", baseline), ("writer", writer))
        for name, call in order:
            t0 = time.perf_counter()
            path = call(i)
            times[name].append(time.perf_counter() - t0)
            sizes[name] = path.stat().st_size
            path.unlink()
    writer_s, baseline_s = statistics.median(times["writer"]), statistics.median(times["baseline"])
    return {"writer_s": round(writer_s, 4), "baseline_s": round(baseline_s, 4),
            "ratio": round(baseline_s / writer_s, 3), "writer_bytes": sizes["writer"],
            "baseline_bytes": sizes["baseline"], "all_s": {k: [round(t, 4) for t in v]
                                                           for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="rows (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per side (5)")
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 3 rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    rounds = args.rounds or (3 if args.quick else 5)

    import pandas as pd
    import pyarrow
    from platform_sdk.client_context import ClientContext
    from platform_sdk.dataset_writer import DatasetWriter
    from platform_sdk.models import Dataset

    load = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    print(f"bench_datasets: {rows:,} rows, {rounds} rounds, pandas {pd.__version__}, pyarrow "
          f"{pyarrow.__version__}, load average {load[0]:.2f}, commit {commit}\n")
    ctx = ClientContext(api_key="bench", org_id="bench", sandbox_name="prod")
    frame = scored_frame(rows, args.seed)
    xdm = xdm_frame(frame)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as tmp:
        folder = Path(tmp)

        def through_writer(data: Any, name: str, fmt: str) -> Callable[[int], Path]:
            def call(i: int) -> Path:
                dataset = Dataset(ctx).get_by_id(str(folder / f"{name}-{i}"))
                return Path(DatasetWriter(ctx, dataset).write(data, file_format=fmt))
            return call

        def parquet_baseline(data: Any, name: str) -> Callable[[int], Path]:
            def call(i: int) -> Path:
                path = folder / f"{name}-base-{i}.parquet"
                data.to_parquet(path, index=False)
                return path
            return call

        def json_baseline(data: Any, name: str) -> Callable[[int], Path]:
            def call(i: int) -> Path:
                path = folder / f"{name}-base-{i}.jsonl"
                data.to_json(path, orient="records", lines=True, date_format="iso")
                return path
            return call

        cases = [
            ("scored, Parquet", True, through_writer(frame, "pq", "parquet"),
             parquet_baseline(frame, "pq")),
            ("scored XDM, Parquet (nested)", False, through_writer(xdm, "xdm", "parquet"),
             parquet_baseline(xdm, "xdm")),
            ("scored, JSON lines", False, through_writer(frame, "js", "json"),
             json_baseline(frame, "js")),
        ]
        for name, judged, writer, baseline in cases:
            result = {"name": name, "judged": judged, **measure(rounds, writer, baseline)}
            result["verdict"] = ("PASS" if result["ratio"] >= TARGET else "FAIL") if judged else "-"
            results.append(result)
            print(f"  ... {name}: writer {result['writer_s']:.3f} s, pandas "
                  f"{result['baseline_s']:.3f} s", file=sys.stderr, flush=True)

    print(table(["case", "DatasetWriter s", "pandas s", "ratio (pandas/writer)", "target",
                 "verdict"],
                [[r["name"], f"{r['writer_s']:.3f}", f"{r['baseline_s']:.3f}", f"{r['ratio']:.2f}x",
                  f">= {TARGET}x" if r["judged"] else "report", r["verdict"]] for r in results]))
    failed = [r["name"] for r in results if r["judged"] and r["verdict"] != "PASS"]
    print(f"\n{sum(r['judged'] for r in results) - len(failed)}/"
          f"{sum(r['judged'] for r in results)} targets PASS" + (f"; FAIL: {', '.join(failed)}"
                                                                 if failed else ""))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"datasets-{stamp}.json"
    path.write_text(json.dumps({"benchmark": "datasets", "timestamp": stamp, "rows": rows,
                                "rounds": rounds, "machine": platform.platform(),
                                "python": platform.python_version(), "pandas": pd.__version__,
                                "pyarrow": pyarrow.__version__, "load_avg_at_start": load,
                                "git_commit": commit, "results": results}, indent=2))
    print(f"results: {path.relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
