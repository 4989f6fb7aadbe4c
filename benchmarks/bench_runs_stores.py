"""The runs table's JSON and the search language at 10,000 runs on both stores, in one run: the
embedded SQLite registry (the baseline) and a PostgreSQL one on a throwaway local server
(tests/pg_cluster.py: Debian's initdb and pg_ctl, fsync off as in the tests).

    python benchmarks/bench_runs_stores.py                 # 10,000 runs each, ~2-4 minutes
    python benchmarks/bench_runs_stores.py --runs 2000 --quick

Both stores are seeded alike (bench_web.seed: runs created, annotated and transitioned through the
service layer, so the triggers keep each index as real runs do). Each case is RunViews.table, the
call behind /ui/api/runs, in-process; the figure to compare is PostgreSQL's p50 beside SQLite's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import table, time_calls  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"

CASES = {
    "newest first": {},
    "sort metric.MAPE": {"sort": "metric.MAPE"},
    "sort -param.learning_rate": {"sort": "-param.learning_rate"},
    "engine filter, sort metric.MAPE": {"engineId": None, "sort": "metric.MAPE"},
    "page 100 (start 4950), sort metric.MAPE": {"sort": "metric.MAPE", "start": "4950"},
    "search MAPE<0.05 & lr<0.05 & DONE, sort metric.MAPE": {
        "filter": "metrics.MAPE < 0.05 and params.learning_rate < 0.05 and attributes.state = 'DONE'",
        "sort": "metric.MAPE"},
    "search batch_size='128' & DONE, newest first": {
        "filter": "params.batch_size = '128' and attributes.state = 'DONE'"},
    "search epochs IN (10,20) & RMSE>1e5, sort -metric.RMSE": {
        "filter": "params.epochs IN ('10', '20') and metrics.RMSE > 100000", "sort": "-metric.RMSE"},
    "search peak_memory_mb>3500, sort -system.peak_memory_mb": {
        "filter": "system.peak_memory_mb > 3500", "sort": "-system.peak_memory_mb"},
    "search state ILIKE or MAE<2000, sort metric.MAPE": {
        "filter": "attributes.state ILIKE 'fail%' or metrics.MAE < 2000", "sort": "metric.MAPE"},
}


def measure(ctx: dict[str, Any], quick: bool) -> dict[str, Any]:
    from runtime.run_views import TableQuery

    views, caller = ctx["views"], ctx["caller"]
    out = {}
    for label, query in CASES.items():
        query = {k: (ctx["engine_id"] if v is None else v) for k, v in query.items()}
        parsed = TableQuery.parse(query)
        page = views.table(caller, parsed)
        timing = time_calls(lambda i: json.dumps(views.table(caller, parsed)),
                            iterations=30 if quick else 100, warmup=3, max_seconds=20)
        out[label] = {**timing.to_dict(), "total": page["total"],
                      "first": [r["id"] for r in page["runs"][:3]]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    import pg_cluster
    from bench_web import seed

    why = pg_cluster.missing()
    if why:
        print(f"needs a PostgreSQL server: {why}")
        return 2
    started = time.time()
    root = Path(tempfile.mkdtemp(prefix="bench-runs-stores-"))
    cluster = pg_cluster.PgCluster().start()
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                           "load_avg_at_start": os.getloadavg()}, "runs": args.runs}
    previous = os.environ.pop("MLRUNTIME_DB", None)
    try:
        for store in ("sqlite", "postgres"):
            if store == "postgres":
                os.environ["MLRUNTIME_DB"] = cluster.create_database("bench_runs")
            ctx = seed(root / store, args.runs, random.Random(args.seed))
            print(f"{store}: seeded {args.runs} runs in {ctx['seed_s']:.1f} s")
            results[store] = {"seed_s": round(ctx["seed_s"], 1), "table": measure(ctx, args.quick)}
            ctx["registry"].close()
        os.environ.pop("MLRUNTIME_DB", None)
        rows = []
        for label in CASES:
            s, p = results["sqlite"]["table"][label], results["postgres"]["table"][label]
            same = "yes" if s["total"] == p["total"] else f"NO ({s['total']} vs {p['total']})"
            rows.append([label, s["p50_ms"], p["p50_ms"], round(p["p50_ms"] / max(s["p50_ms"], 1e-6), 2),
                         p["p95_ms"], same])
        print(f"\nRuns table JSON at {args.runs} runs, in-process (p50 ms; PostgreSQL beside SQLite)")
        print(table(["case", "SQLite p50", "PostgreSQL p50", "ratio", "PostgreSQL p95", "same total"], rows))
    finally:
        if previous is not None:
            os.environ["MLRUNTIME_DB"] = previous
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"runs-stores-{time.strftime('%Y%m%d-%H%M%S')}.json"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    path.write_text(json.dumps({**results, "commit": commit}, indent=2, default=str))
    print(f"\n{time.time() - started:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
