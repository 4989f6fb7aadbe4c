"""Cold vs warm start of a Spark run, side by side.

Part 1 (raw Spark, in a fresh subprocess): a cold `local[2]` session, its first action, reusing
the live session (getOrCreate), a new session on the warm JVM (newSession; and stop + getOrCreate).
Part 2 (the runtime): the pyspark backend on one pool, a cold run then warm runs of the same shape;
"dispatch -> engine" is from `backend.submit` to the engine's first stage (the worker records it).

    .venv/bin/python benchmarks/bench_spark.py [--runs 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, table  # noqa: E402

RAW = r"""
import json, time
t0 = time.perf_counter()
from pyspark.sql import SparkSession
t_import = time.perf_counter() - t0
b = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "1024m")
     .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
     .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1"))
t = time.perf_counter(); s = b.getOrCreate(); cold = time.perf_counter() - t
s.sparkContext.setLogLevel("ERROR")
t = time.perf_counter(); s.range(1000).count(); first = time.perf_counter() - t
t = time.perf_counter(); s.range(1000).count(); second = time.perf_counter() - t
t = time.perf_counter(); SparkSession.builder.getOrCreate(); reuse = time.perf_counter() - t
t = time.perf_counter(); s.newSession(); new_session = time.perf_counter() - t
s.stop()
t = time.perf_counter(); s2 = b.getOrCreate(); restart = time.perf_counter() - t
s2.stop()
print(json.dumps({"import_s": t_import, "cold_session_s": cold, "first_action_s": first,
                  "second_action_s": second, "reuse_live_session_s": reuse,
                  "new_session_warm_jvm_s": new_session, "stop_then_new_context_s": restart}))
"""


def raw_spark() -> dict:
    out = subprocess.run([sys.executable, "-c", RAW], capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def runtime_runs(runs: int) -> list[dict]:
    from runtime.backends import WorkerSpec
    from runtime.backends.pyspark import PySparkBackend
    from runtime.dispatch import detect_host, plan as make_plan
    from runtime.resources import ResourceRequest
    from runtime.spark.pool import SparkWorkerPool

    resources = ResourceRequest(driver_memory_mb=1024, driver_cores=2)
    plan = make_plan(engine_kind="pyspark", resources=resources, host=detect_host())
    pool = SparkWorkerPool()
    backend = PySparkBackend(pool=pool)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.csv"
        data.write_text("x,y\n1,2\n3,4\n")
        try:
            for i in range(runs):
                spec = WorkerSpec(run_id=f"bench-{i}", engine="noop", mode="train",
                                  values={"trainingDataSetId": str(data)}, run_dir=Path(tmp) / f"r{i}")
                started = time.perf_counter()
                outcome = backend.submit(spec=spec, plan=plan, log_path=Path(tmp) / f"r{i}.log",
                                         resources=resources).wait(600)
                wall = time.perf_counter() - started
                spark = (outcome.result or {}).get("spark") or {}
                rows.append({"run": i, "state": outcome.state.value, "warm": spark.get("reusedSession"),
                             "dispatch_to_engine_s": spark.get("dispatchToEngineS"),
                             "session_start_s": spark.get("sessionStartS") if i == 0 else 0.0,
                             "new_session_s": spark.get("newSessionS"), "run_wall_s": wall,
                             "jvm_pid": spark.get("jvmPid"), "application_id": spark.get("applicationId")})
        finally:
            pool.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    raw = raw_spark()
    runs = runtime_runs(args.runs)
    report = {"raw_spark": raw, "runtime_runs": runs}
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"spark-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report))
        return 0
    print("Raw Spark, local[2] (seconds)")
    print(table(["cold session", "first action", "second action", "reuse live session",
                 "newSession (warm JVM)", "stop + new context (warm JVM)"],
                [[f"{raw['cold_session_s']:.3f}", f"{raw['first_action_s']:.3f}",
                  f"{raw['second_action_s']:.3f}", f"{raw['reuse_live_session_s'] * 1000:.2f} ms",
                  f"{raw['new_session_warm_jvm_s']:.4f}", f"{raw['stop_then_new_context_s']:.3f}"]]))
    print("\npyspark backend, one pool, same shape (seconds)")
    print(table(["run", "warm", "session start", "dispatch -> engine", "run wall", "JVM pid"],
                [[r["run"], r["warm"], f"{r['session_start_s']:.3f}", f"{r['dispatch_to_engine_s']:.4f}",
                  f"{r['run_wall_s']:.3f}", r["jvm_pid"]] for r in runs]))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
