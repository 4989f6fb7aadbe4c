"""Registry benchmark: seeding, in-process reads and listings, and HTTP reads, against baselines.

Seeds a fresh temporary home with N MLInstances per size, then measures `Registry.get` and
`Registry.list` beside the same SQL run on a raw `sqlite3` connection (the lower bound), and
`run serve` over HTTP beside a bare FastAPI app and a bare uvicorn ASGI app (the framework's own
cost and the ceiling on this machine), the loads in turn for a few rounds.

    python benchmarks/bench_registry.py [--sizes 10000,100000] [--quick] [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (LOOPBACK, Timing, run_load, runtime_server, table,  # noqa: E402
                     time_calls, uvicorn_server, wrk_path)

from runtime.home import Home  # noqa: E402
from runtime.listing import parse_list_query  # noqa: E402
from runtime.schemas import MLINSTANCE  # noqa: E402
from runtime.registry import DEFAULT_ORG, DEFAULT_SANDBOX, Caller, Registry  # noqa: E402
from runtime.store import Scope, open_store  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# The targets (2-core machine): see benchmarks/README.md.
TARGET_LIST_MS = 20.0            # p50 of the filtered, ordered page of 25, at 100k MLInstances
TARGET_LIST_SIZE = 100_000
TARGET_GET_RPS = 1000.0          # GET-by-id over HTTP
TARGET_GET_VS_FASTAPI = 0.8      # GET-by-id req/s over a bare FastAPI app's, same machine and load

ENGINES = 20
BATCH = 10_000                   # MLInstances per store transaction while seeding
DELETED_EVERY = 100              # 1% of MLInstances soft-deleted, so `deleted==false` filters
SECRET_EVERY = 10                # 10% carry a secret parameter, so GET masks something
SCOPE = Scope(DEFAULT_ORG, DEFAULT_SANDBOX)   # what `run serve` answers without scope headers
CALLER = Caller(SCOPE, "bench")
PAGE = 25


# --------------------------------------------------------------------------------------------
# Seeding

_ALGORITHMS = ["regression", "classification", "forecasting", "binaryClassification",
               "multiClassClassification"]
_TEAMS = ["retail", "marketing", "supply", "finance", "growth"]


def _engine_body(k: int) -> dict[str, Any]:
    algorithm = _ALGORITHMS[k % len(_ALGORITHMS)]
    return {
        "name": f"{_TEAMS[k % len(_TEAMS)]}-{algorithm}-engine-{k:02d}",
        "description": f"Benchmark engine {k}: {algorithm} on tabular data",
        "type": "Python", "algorithm": algorithm, "mlLibrary": "scikit-learn",
        "artifacts": {"default": {
            "image": {"name": f"bench/engine-{k}", "executionType": "Python",
                      "packagingType": "docker"},
            "defaultMLInstanceConfigs": [
                {"name": "train", "parameters": [{"key": "learning_rate", "value": "0.1"},
                                                 {"key": "n_estimators", "value": "100"}]},
                {"name": "score", "parameters": [{"key": "batch_size", "value": "1000"}]}]}},
        "tags": {"team": _TEAMS[k % len(_TEAMS)]},
    }


def _instance_body(i: int, engine_id: str, rng: random.Random) -> dict[str, Any]:
    train = [{"key": "learning_rate", "value": round(rng.uniform(0.01, 0.3), 3)},
             {"key": "n_estimators", "value": rng.choice([50, 100, 200, 400])},
             {"key": "max_depth", "value": rng.randint(3, 12)},
             {"key": "target", "value": "weeklySales"},
             {"key": "evaluation.metrics", "value": "MAPE,MAE,RMSE"}]
    if i % SECRET_EVERY == 0:
        train.append({"key": "warehouse.password", "value": f"s3cr3t-{i}", "secret": True})
    return {
        "name": instance_name(i),
        "description": f"Weekly sales forecast for store cluster {i % 997}",
        "engineId": engine_id,
        "tasks": [
            {"name": "fp", "parameters": [{"key": "dataset", "value": f"sales-{i % 53:02d}"},
                                          {"key": "timeframe_days", "value": 365}]},
            {"name": "train", "parameters": train},
            {"name": "score", "parameters": [{"key": "batch_size", "value": 1000},
                                             {"key": "output.dataset", "value": f"scores-{i}"}]},
        ],
        "tags": {"team": _TEAMS[i % len(_TEAMS)], "env": "bench"},
    }


def instance_name(i: int) -> str:
    return f"{_TEAMS[i % len(_TEAMS)]}-forecast-{i:07d}"


def seed(home: Path, n: int, rng: random.Random) -> dict[str, Any]:
    """N MLInstances through `Registry.create`, BATCH per transaction; 1% then soft-deleted."""
    root = home.resolve()
    registry = Registry(open_store(root / "registry.db"),
                        Home(root=root, store_url=f"sqlite:///{root / 'registry.db'}"))
    try:
        engine_ids = [registry.create_engine(CALLER, _engine_body(k))["id"] for k in range(ENGINES)]
        ids: list[str] = []
        t0 = time.perf_counter()
        for start in range(0, n, BATCH):
            with registry.store.transaction():
                for i in range(start, min(n, start + BATCH)):
                    doc = registry.create(MLINSTANCE, CALLER,
                                          _instance_body(i, engine_ids[i % ENGINES], rng))
                    ids.append(doc["id"])
        insert_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        deleted = ids[::DELETED_EVERY]
        with registry.store.transaction():
            for id in deleted:
                registry.delete(MLINSTANCE, CALLER, id)
        delete_s = time.perf_counter() - t1
    finally:
        registry.close()
    with sqlite3.connect(root / "registry.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size_mb = (root / "registry.db").stat().st_size / 2**20
    dead = set(deleted)
    live = [i for i in ids if i not in dead]
    return {"engine_ids": engine_ids, "live_ids": live, "n": n, "insert_s": insert_s,
            "insert_per_s": n / insert_s, "soft_deleted": len(deleted),
            "soft_delete_per_s": len(deleted) / delete_s, "db_mb": size_mb}


# --------------------------------------------------------------------------------------------
# In-process: Registry vs the same SQL on a raw sqlite3 connection

_T = '"mlInstances"'
_SCOPE_WHERE = "org=? AND sandbox=? AND \"deleted\" = ?"


def list_cases(seeded: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """Each case: query parameters per iteration, and the equivalent raw SQL and arguments."""
    engines = seeded["engine_ids"]
    names = [instance_name(i) for i in rng.sample(range(seeded["n"]), min(1000, seeded["n"]))]
    deep = min(5000, max(0, len(seeded["live_ids"]) - PAGE))
    scope = [SCOPE.org, SCOPE.sandbox, 0]
    return [
        {"key": "list_default", "label": "list default (created)",
         "params": lambda i: {"limit": str(PAGE)},
         "count": (f"SELECT count(*) FROM {_T} WHERE {_SCOPE_WHERE}", lambda i: scope),
         "page": (f'SELECT doc FROM {_T} WHERE {_SCOPE_WHERE} ORDER BY "created" ASC, rowid ASC '
                  "LIMIT ? OFFSET ?", lambda i: [*scope, PAGE, 0])},
        {"key": "list_engine_desc", "label": "engineId==X, -created",
         "params": lambda i: {"property": f"engineId=={engines[i % len(engines)]}",
                              "orderby": "-created", "limit": str(PAGE)},
         "count": (f'SELECT count(*) FROM {_T} WHERE {_SCOPE_WHERE} AND "engineId" = ?',
                   lambda i: [*scope, engines[i % len(engines)]]),
         "page": (f'SELECT doc FROM {_T} WHERE {_SCOPE_WHERE} AND "engineId" = ? '
                  'ORDER BY "created" DESC, rowid DESC LIMIT ? OFFSET ?',
                  lambda i: [*scope, engines[i % len(engines)], PAGE, 0])},
        {"key": "list_name_eq", "label": "name==X",
         "params": lambda i: {"property": f"name=={names[i % len(names)]}", "limit": str(PAGE)},
         "count": (f'SELECT count(*) FROM {_T} WHERE {_SCOPE_WHERE} AND "name" = ?',
                   lambda i: [*scope, names[i % len(names)]]),
         "page": (f'SELECT doc FROM {_T} WHERE {_SCOPE_WHERE} AND "name" = ? '
                  'ORDER BY "created" ASC, rowid ASC LIMIT ? OFFSET ?',
                  lambda i: [*scope, names[i % len(names)], PAGE, 0])},
        {"key": "list_deep_page", "label": f"deep page start={deep}",
         "params": lambda i: {"start": str(deep), "limit": str(PAGE)},
         "count": (f"SELECT count(*) FROM {_T} WHERE {_SCOPE_WHERE}", lambda i: scope),
         "page": (f'SELECT doc FROM {_T} WHERE {_SCOPE_WHERE} ORDER BY "created" ASC, rowid ASC '
                  "LIMIT ? OFFSET ?", lambda i: [*scope, PAGE, deep])},
        {"key": "list_orderby_name", "label": "orderby=name",
         "params": lambda i: {"orderby": "name", "limit": str(PAGE)},
         "count": (f"SELECT count(*) FROM {_T} WHERE {_SCOPE_WHERE}", lambda i: scope),
         "page": (f'SELECT doc FROM {_T} WHERE {_SCOPE_WHERE} ORDER BY "name" ASC, rowid ASC '
                  "LIMIT ? OFFSET ?", lambda i: [*scope, PAGE, 0])},
    ]


def _traced(conn: sqlite3.Connection, call: Callable[[], Any]) -> list[str]:
    """The statements (values expanded) that `call` runs on `conn`."""
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return seen


def bench_in_process(home: Path, seeded: dict[str, Any], rng: random.Random,
                     quick: bool) -> dict[str, Any]:
    root = home.resolve()
    registry = Registry(open_store(root / "registry.db"),
                        Home(root=root, store_url=f"sqlite:///{root / 'registry.db'}"))
    raw = sqlite3.connect(root / "registry.db", isolation_level=None)
    get_iters, list_iters = (500, 60) if quick else (4000, 400)
    max_s = 1.5 if quick else 6.0
    ids = seeded["live_ids"]
    sample_ids = [ids[rng.randrange(len(ids))] for _ in range(get_iters)]
    results: dict[str, Any] = {}
    drift: list[str] = []
    try:
        get_sql = f"SELECT doc FROM {_T} WHERE id=? AND org=? AND sandbox=?"
        results["get"] = {
            "label": "get by id",
            "runtime": time_calls(lambda i: registry.get(MLINSTANCE, CALLER, sample_ids[i]),
                                  iterations=get_iters, warmup=50, max_seconds=max_s),
            "raw": time_calls(lambda i: raw.execute(get_sql, (sample_ids[i], SCOPE.org,
                                                              SCOPE.sandbox)).fetchone(),
                              iterations=get_iters, warmup=50, max_seconds=max_s),
            "raw_page_only": None,
            "sql": [get_sql],
            "plan": _plan(raw, get_sql, (sample_ids[0], SCOPE.org, SCOPE.sandbox)),
        }
        for case in list_cases(seeded, rng):
            queries = [parse_list_query(MLINSTANCE, case["params"](i)) for i in range(list_iters)]
            (count_sql, count_args), (page_sql, page_args) = case["count"], case["page"]

            def runtime_call(i: int) -> Any:
                return registry.list(MLINSTANCE, CALLER, queries[i])

            def raw_call(i: int) -> Any:
                total = raw.execute(count_sql, count_args(i)).fetchone()[0]
                return raw.execute(page_sql, page_args(i)).fetchall(), total

            def raw_page(i: int) -> Any:
                return raw.execute(page_sql, page_args(i)).fetchall()

            # The baseline must run the store's own SQL: compare the statements both issue.
            store_conn = registry.store._conn()  # type: ignore[attr-defined]
            store_sql = _traced(store_conn, lambda: runtime_call(0))
            raw_sql = _traced(raw, lambda: raw_call(0))
            if store_sql != raw_sql:
                drift.append(case["key"])
                print(f"warning: {case['key']}: the store's SQL differs from the baseline's; "
                      f"update list_cases()\n  store: {store_sql}\n  raw:   {raw_sql}",
                      file=sys.stderr)
            page, (rows, total) = runtime_call(0), raw_call(0)
            if ([c["id"] for c in page.children] != [json.loads(r[0])["id"] for r in rows]
                    or page.total != total):
                raise RuntimeError(f"{case['key']}: Registry.list and the raw SQL disagree")
            results[case["key"]] = {
                "label": case["label"],
                "runtime": time_calls(runtime_call, iterations=list_iters, warmup=5,
                                      max_seconds=max_s),
                "raw": time_calls(raw_call, iterations=list_iters, warmup=5, max_seconds=max_s),
                "raw_page_only": time_calls(raw_page, iterations=list_iters, warmup=5,
                                            max_seconds=max_s),
                "sql": [count_sql, page_sql],
                "store_sql": store_sql,
                "baseline_sql_matches_store": store_sql == raw_sql,
                "plan": {"count": _plan(raw, count_sql, count_args(0)),
                         "page": _plan(raw, page_sql, page_args(0))},
                "total": page.total,
            }
    finally:
        raw.close()
        registry.close()
    return results


def _plan(conn: sqlite3.Connection, sql: str, args: Any) -> list[str]:
    return [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, tuple(args))]


def what_if_analyze(home: Path, seeded: dict[str, Any], before: dict[str, Any], seed_value: int,
                    quick: bool) -> dict[str, Any]:
    """The in-process cases again once the file has planner statistics (`ANALYZE`)."""
    with sqlite3.connect(home / "registry.db", isolation_level=None) as conn:
        t0 = time.perf_counter()
        conn.execute("ANALYZE")
        analyze_s = time.perf_counter() - t0
    conn.close()
    after = bench_in_process(home, seeded, random.Random(seed_value + 1), quick)
    rows = []
    for key, entry in after.items():
        old: Timing = before[key]["runtime"]
        new: Timing = entry["runtime"]
        plan = entry["plan"] if key == "get" else entry["plan"]["page"]
        rows.append([entry["label"], old.p50_ms, new.p50_ms, f"{old.p50_ms / new.p50_ms:.1f}x",
                     "; ".join(step.replace("SEARCH mlInstances USING ", "") for step in plan)])
    print(f"\nWhat-if: the same file after ANALYZE ({analyze_s * 1000:.0f} ms); runtime p50, ms")
    print(table(["operation (limit=25)", "as is", "after ANALYZE", "speed-up", "page query plan"],
                rows))
    return {"analyze_s": analyze_s, "in_process": after}


# --------------------------------------------------------------------------------------------
# HTTP: `run serve` vs a bare uvicorn ASGI app, same load generator and settings


def bench_http(home: Path, seeded: dict[str, Any], rng: random.Random, duration_s: float,
               connections: int, log_dir: Path, rounds: int = 1) -> dict[str, Any]:
    """The loads in turn, `rounds` times, all servers up (an idle one costs nothing): on a shared
    machine a neighbour's burst then falls on every server alike. Each entry is the round of
    median req/s, with every round's req/s and the server's CPU time per request beside it."""
    ids = seeded["live_ids"]
    get_paths = [f"/data/sensei/mlInstances/{ids[rng.randrange(len(ids))]}" for _ in range(1000)]
    list_paths = [f"/data/sensei/mlInstances?property=engineId=={e}&orderby=-created&limit={PAGE}"
                  for e in seeded["engine_ids"]]
    runs: dict[str, list[dict[str, Any]]] = {}

    def load(key: str, server: Any, paths: list[str]) -> None:
        cpu_before = _cpu_s(server)
        result = run_load(server.port, paths, duration_s=duration_s,
                          connections=connections).to_dict()
        cpu_after = _cpu_s(server)
        result["server_cpu_us_per_request"] = (
            round((cpu_after - cpu_before) / result["requests"] * 1e6, 1)
            if cpu_before is not None and cpu_after is not None and result["requests"] else None)
        runs.setdefault(key, []).append(result)

    with runtime_server(home, log_dir) as runtime, \
            uvicorn_server("raw-asgi", "_common:raw_asgi_app", log_dir) as raw, \
            uvicorn_server("fastapi-minimal", "_common:make_fastapi_minimal_app", log_dir,
                           factory=True) as fastapi:
        _check_ok(runtime.port, get_paths[0])
        _check_ok(runtime.port, list_paths[0])
        for _ in range(rounds):
            load("runtime_get", runtime, get_paths)
            load("fastapi_minimal_get", fastapi, get_paths)
            load("raw_asgi_get", raw, get_paths)
            load("runtime_list", runtime, list_paths)
    return {key: _median_round(results) for key, results in runs.items()}


def _cpu_s(server: Any) -> Optional[float]:
    """User + system CPU seconds of a server process so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, AttributeError, IndexError, ValueError):
        return None


def _median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(results, key=lambda r: r["requests_per_s"])
    entry = dict(ordered[(len(ordered) - 1) // 2])
    entry["rounds_requests_per_s"] = [r["requests_per_s"] for r in results]
    entry["rounds_server_cpu_us_per_request"] = [r["server_cpu_us_per_request"] for r in results]
    entry["errors"] = sum(r["errors"] for r in results)
    return entry


def _check_ok(port: int, path: str) -> None:
    import http.client

    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:300]!r}")


# --------------------------------------------------------------------------------------------
# Report


def _timing_row(label: str, entry: dict[str, Any]) -> list[Any]:
    rt: Timing = entry["runtime"]
    raw: Timing = entry["raw"]
    page: Timing | None = entry["raw_page_only"]
    return [label, rt.p50_ms, rt.p95_ms, rt.mean_ms, raw.p50_ms, raw.p95_ms, raw.mean_ms,
            f"{rt.p50_ms / raw.p50_ms:.1f}x" if raw.p50_ms else "-",
            page.p50_ms if page else float("nan"), rt.n]


def print_size(n: int, seeded: dict[str, Any], inproc: dict[str, Any],
               http: dict[str, Any] | None) -> None:
    print(f"\n=== N = {n:,} MLInstances ({seeded['soft_deleted']:,} soft-deleted, "
          f"{ENGINES} Engines, {seeded['db_mb']:.0f} MiB) ===")
    print(f"seeding: {seeded['insert_per_s']:,.0f} MLInstances/s through Registry.create "
          f"({seeded['insert_s']:.1f} s, {BATCH:,} per transaction); soft delete "
          f"{seeded['soft_delete_per_s']:,.0f}/s\n")
    print("In-process latency, ms (runtime = Registry.get/list; raw = same SQL on sqlite3: "
          "count + page)")
    print(table(["operation (limit=25)", "rt p50", "rt p95", "rt mean", "raw p50", "raw p95",
                 "raw mean", "rt/raw", "raw page-only p50", "n"],
                [_timing_row(e["label"], e) for e in inproc.values()]))
    if http:
        rounds = len(http["runtime_get"]["rounds_requests_per_s"])
        print(f"\nHTTP, loopback, {http['runtime_get']['tool']}, "
              f"{http['runtime_get']['connections']} connections, "
              f"{http['runtime_get']['duration_s']:.0f} s each, {rounds} round(s) in turn "
              "(the round of median req/s shown)")
        rows = []
        for key, label in [("runtime_get", "run serve: GET mlInstances/{id}"),
                           ("runtime_list", "run serve: list engineId==X,-created"),
                           ("fastapi_minimal_get", "baseline: FastAPI, fixed body"),
                           ("raw_asgi_get", "baseline: raw ASGI, fixed body")]:
            r = http[key]
            lat = r["latency_ms"]
            spread = r["rounds_requests_per_s"]
            rows.append([label, r["requests_per_s"],
                         f"{min(spread):,.0f}-{max(spread):,.0f}" if len(spread) > 1 else "-",
                         lat["p50"], lat["p95"], lat["p99"], r["errors"],
                         _median_or_nan(r["rounds_server_cpu_us_per_request"]),
                         f"{r['requests_per_s'] / http['fastapi_minimal_get']['requests_per_s']:.0%}",
                         f"{r['requests_per_s'] / http['raw_asgi_get']['requests_per_s']:.0%}"])
        print(table(["server: request", "req/s", "rounds' req/s", "p50 ms", "p95 ms", "p99 ms",
                     "errors", "server CPU us/req", "of FastAPI", "of raw ASGI"], rows))
        ratios = get_vs_fastapi(http)
        print(f"GET-by-id / bare FastAPI, round by round: {', '.join(f'{x:.2f}' for x in ratios)}"
              f" (median {statistics.median(ratios):.2f})")


def get_vs_fastapi(http: dict[str, Any]) -> list[float]:
    """run serve's GET-by-id req/s over bare FastAPI's, per round (the two ran back to back)."""
    return [rt / fa if fa else float("nan") for rt, fa in
            zip(http["runtime_get"]["rounds_requests_per_s"],
                http["fastapi_minimal_get"]["rounds_requests_per_s"])]


def _median_or_nan(values: list[Any]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def verdicts(per_size: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """PASS/FAIL against the targets. A listing passes only if every listing case does:
    a filter on `name` is as much "a filtered, ordered page" as one on `engineId`."""
    out: dict[str, Any] = {}
    entry = per_size.get(TARGET_LIST_SIZE)
    target = f"p50 <= {TARGET_LIST_MS:g} ms for every listing case at N={TARGET_LIST_SIZE:,}"
    if entry:
        cases = {k: v["runtime"].p50_ms for k, v in entry["in_process"].items()
                 if k.startswith("list_")}
        worst = max(cases, key=cases.__getitem__)
        out["filtered_page_ms"] = {
            "target": target,
            "measured_p50_ms": {k: round(v, 3) for k, v in cases.items()},
            "worst_case": worst, "worst_p50_ms": round(cases[worst], 3),
            "over_target": [k for k, v in cases.items() if v > TARGET_LIST_MS],
            "pass": cases[worst] <= TARGET_LIST_MS}
    else:
        out["filtered_page_ms"] = {"target": target, "pass": None,
                                   "note": f"size {TARGET_LIST_SIZE} not run"}
    with_http = [n for n in per_size if per_size[n].get("http")]
    if with_http:
        n = max(with_http)
        rps = per_size[n]["http"]["runtime_get"]["requests_per_s"]
        errors = per_size[n]["http"]["runtime_get"]["errors"]
        out["get_by_id_rps"] = {"target": f">= {TARGET_GET_RPS:,.0f} req/s GET-by-id over HTTP "
                                          f"at the largest N run",
                                "n": n, "measured_rps": rps, "errors": errors,
                                "pass": rps >= TARGET_GET_RPS and errors == 0}
        ratios = get_vs_fastapi(per_size[n]["http"])
        ratio = statistics.median(ratios)
        out["get_by_id_vs_fastapi"] = {
            "target": f">= {TARGET_GET_VS_FASTAPI:g}x bare FastAPI's req/s on GET-by-id (median of "
                      "the rounds' ratios) at the largest N run",
            "n": n, "measured_ratio": round(ratio, 3), "rounds": [round(x, 3) for x in ratios],
            "pass": ratio >= TARGET_GET_VS_FASTAPI and errors == 0}
    else:
        out["get_by_id_rps"] = {"target": f">= {TARGET_GET_RPS:,.0f} req/s", "pass": None,
                                "note": "HTTP skipped"}
        out["get_by_id_vs_fastapi"] = {"target": f">= {TARGET_GET_VS_FASTAPI:g}x bare FastAPI",
                                       "pass": None, "note": "HTTP skipped"}
    return out


def _print_verdicts(result: dict[str, Any]) -> None:
    print("\nTargets")
    for key, v in result.items():
        state = "n/a" if v["pass"] is None else "PASS" if v["pass"] else "FAIL"
        if "worst_case" in v:
            measured = f"worst {v['worst_case']} p50 {v['worst_p50_ms']} ms"
            if v["over_target"]:
                measured += f"; over target: {', '.join(v['over_target'])}"
        elif "measured_ratio" in v:
            measured = (f"{v['measured_ratio']:.2f}x at N={v['n']:,} (rounds "
                        f"{', '.join(f'{x:.2f}' for x in v['rounds'])})")
        elif "measured_rps" in v:
            measured = f"{v['measured_rps']:,.0f} req/s at N={v['n']:,}, {v['errors']} errors"
        else:
            measured = v.get("note", "")
        print(f"  {state:4}  {key}: {v['target']}; measured {measured}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Timing):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _environment() -> dict[str, Any]:
    import fastapi
    import uvicorn

    wrk = wrk_path()
    wrk_version = None
    if wrk:
        probe = subprocess.run([wrk, "--version"], capture_output=True, text=True)
        wrk_version = (probe.stdout or probe.stderr).splitlines()[0] if (probe.stdout or
                                                                         probe.stderr) else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "sqlite": sqlite3.sqlite_version,
            "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__,
            "load_generator": wrk_version or "python http.client (wrk not installed)",
            "git_commit": commit,
            "load_avg_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="comma-separated MLInstance counts "
                                        "(default 10000,100000; with --quick 10000)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer iterations and 2 s HTTP runs: a smoke test, not a measurement")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP part")
    parser.add_argument("--duration", type=float, help="seconds per HTTP load run (default 5)")
    parser.add_argument("--connections", type=int, default=4,
                        help="HTTP connections (default 4)")
    parser.add_argument("--rounds", type=int, help="HTTP loads run in turn this many times, "
                        "the median kept (default 3; with --quick 1)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded homes")
    parser.add_argument("--what-if-analyze", action="store_true",
                        help="after the measurements, run ANALYZE on the seeded file and measure "
                             "the in-process cases again (a proposed fix, not the product as is)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in
             (args.sizes or ("10000" if args.quick else "10000,100000")).split(",") if s.strip()]
    duration = args.duration or (2.0 if args.quick else 5.0)

    env = _environment()
    print(f"registry benchmark: sizes {sizes}, {env['cpus']} CPUs, Python {env['python']}, "
          f"SQLite {env['sqlite']}, load generator: {env['load_generator']}")
    started = time.perf_counter()
    per_size: dict[int, dict[str, Any]] = {}
    for n in sizes:
        rng = random.Random(args.seed)
        home = Path(tempfile.mkdtemp(prefix=f"bench-registry-{n}-"))
        try:
            seeded = seed(home, n, rng)
            inproc = bench_in_process(home, seeded, rng, args.quick)
            http = None if args.no_http else bench_http(
                home, seeded, rng, duration, args.connections, home,
                rounds=args.rounds or (1 if args.quick else 3))
            per_size[n] = {"seeding": {k: v for k, v in seeded.items()
                                       if k not in ("engine_ids", "live_ids")},
                           "in_process": inproc, "http": http}
            print_size(n, seeded, inproc, http)
            if args.what_if_analyze:
                per_size[n]["what_if_analyze"] = what_if_analyze(home, seeded, inproc,
                                                                 args.seed, args.quick)
        finally:
            if args.keep:
                print(f"(home kept at {home})")
            else:
                shutil.rmtree(home, ignore_errors=True)

    result = verdicts(per_size)
    _print_verdicts(result)
    elapsed = time.perf_counter() - started
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"registry-{stamp}.json"
    path.write_text(json.dumps(_jsonable({
        "benchmark": "registry", "timestamp": stamp, "args": vars(args), "sizes": sizes,
        "environment": env, "elapsed_s": round(elapsed, 1), "targets": result,
        "results": per_size}), indent=2))
    print(f"\n{elapsed:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
