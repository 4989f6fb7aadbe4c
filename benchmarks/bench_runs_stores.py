"""The runs table's JSON and the search language at 10,000 runs on both stores, in one run: the
embedded SQLite registry (the baseline) and a PostgreSQL one on a throwaway local server
(tests/pg_cluster.py: Debian's initdb and pg_ctl, fsync off as in the tests).

    python benchmarks/bench_runs_stores.py                 # 10,000 runs each, ~2-4 minutes
    python benchmarks/bench_runs_stores.py --runs 2000 --quick

The SQLite registry is seeded by bench_web.seed (runs created, annotated and transitioned through
the service layer, so the triggers keep the index as real runs do), then copied whole into the
PostgreSQL one by `run db copy` (runtime.store.copy: the same ids, documents and runs view rows;
its insert triggers fire), then VACUUM ANALYZEd as autovacuum would. Each case is RunViews.table,
the call behind /ui/api/runs, in-process, timed on both stores in alternation (one call on each,
round after round) so that the load of a shared machine weighs on both alike; the figure to
compare is PostgreSQL's p50 beside SQLite's. `--seed-postgres` seeds PostgreSQL through the
service layer too (slower; its seconds are reported).
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

from _common import summarize, table  # noqa: E402

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
    "search seed=42 (one run), sort metric.MAPE": {"filter": "params.seed = 42", "sort": "metric.MAPE"},
}


def measure(stores: dict[str, dict[str, Any]], quick: bool) -> dict[str, dict[str, Any]]:
    """{store: {case: timing and the page's total and first ids}}, the stores timed in turn."""
    from runtime.run_views import TableQuery

    out: dict[str, dict[str, Any]] = {name: {} for name in stores}
    rounds = 30 if quick else 100
    for label, query in CASES.items():
        samples: dict[str, list[int]] = {name: [] for name in stores}
        pages = {}
        for name, ctx in stores.items():
            parsed = TableQuery.parse({k: (ctx["engine_id"] if v is None else v)
                                       for k, v in query.items()})
            ctx["parsed"] = parsed
            pages[name] = ctx["views"].table(ctx["caller"], parsed)
            for _ in range(2):   # warm-up
                ctx["views"].table(ctx["caller"], parsed)
        deadline = time.monotonic() + 40
        for _ in range(rounds):
            for name, ctx in stores.items():
                t0 = time.perf_counter_ns()
                json.dumps(ctx["views"].table(ctx["caller"], ctx["parsed"]))
                samples[name].append(time.perf_counter_ns() - t0)
            if time.monotonic() > deadline and len(samples[name]) >= 10:
                break
        for name in stores:
            out[name][label] = {**summarize(samples[name]).to_dict(), "total": pages[name]["total"],
                                "first": [r["id"] for r in pages[name]["runs"][:5]]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seed-postgres", action="store_true",
                        help="seed PostgreSQL through the service layer instead of copying SQLite's")
    args = parser.parse_args()
    import pg_cluster
    from bench_web import seed

    from runtime.registry import Registry
    from runtime.run_views import RunViews
    from runtime.store import open_store
    from runtime.store.copy import copy_registry

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
    stores: dict[str, dict[str, Any]] = {}
    try:
        sqlite = seed(root / "sqlite", args.runs, random.Random(args.seed))
        stores["sqlite"] = sqlite
        print(f"sqlite: seeded {args.runs} runs in {sqlite['seed_s']:.1f} s")
        results["sqlite_seed_s"] = round(sqlite["seed_s"], 1)
        url = cluster.create_database("bench_runs")
        if args.seed_postgres:
            os.environ["MLRUNTIME_DB"] = url
            postgres = seed(root / "postgres", args.runs, random.Random(args.seed))
            os.environ.pop("MLRUNTIME_DB", None)
            print(f"postgres: seeded {args.runs} runs in {postgres['seed_s']:.1f} s")
            results["postgres_seed_s"] = round(postgres["seed_s"], 1)
        else:
            dest = open_store(url)
            started_copy = time.perf_counter()
            report = copy_registry(sqlite["registry"].store, dest)
            assert report.ok, report.counts
            results["postgres_copy_s"] = round(time.perf_counter() - started_copy, 1)
            print(f"postgres: copied {args.runs} runs in {results['postgres_copy_s']:.1f} s")
            registry = Registry(dest, sqlite["home"])
            postgres = {**sqlite, "registry": registry, "views": RunViews(registry)}
        with postgres["registry"].store.connection() as conn:
            conn.execute("VACUUM ANALYZE")   # what autovacuum does after a bulk load
        stores["postgres"] = postgres
        results["table"] = measure(stores, args.quick)
        rows = []
        for label in CASES:
            s, p = results["table"]["sqlite"][label], results["table"]["postgres"][label]
            same = "yes" if s["total"] == p["total"] else f"NO ({s['total']} vs {p['total']})"
            if not args.seed_postgres and s["first"] != p["first"]:
                same += ", other rows"
            rows.append([label, s["p50_ms"], p["p50_ms"], round(p["p50_ms"] / max(s["p50_ms"], 1e-6), 2),
                         s["p95_ms"], p["p95_ms"], same])
        print(f"\nRuns table JSON at {args.runs} runs, in-process, the stores timed in turn (ms)")
        print(table(["case", "SQLite p50", "PostgreSQL p50", "ratio", "SQLite p95", "PostgreSQL p95",
                     "same page"], rows))
    finally:
        if previous is not None:
            os.environ["MLRUNTIME_DB"] = previous
        for ctx in stores.values():
            ctx["registry"].close()
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
