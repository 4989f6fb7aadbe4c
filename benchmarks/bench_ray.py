"""Ray benchmark: `run submit` of the no-op engine to DONE, beside a raw JobSubmissionClient
submission of the same entrypoint (same runtime_env) to SUCCEEDED, on a Ray head of our own.

`run submit` is timed as the user sees it (a fresh `run` process: start-up, resolve, submit, poll,
bring the model back, record Model, Insight and states). The raw client is timed in-process
(construct the client, submit, poll to SUCCEEDED) and, for a like-for-like process cost, as a
fresh `python -c` doing the same. The entrypoint's own time is the job's start->end on the cluster.

    python benchmarks/bench_ray.py [--iterations 5] [--address http://127.0.0.1:8265]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "ray"))

POLL_S = 0.1
RAW_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
from ray.job_submission import JobSubmissionClient
args = json.loads(sys.argv[1])
client = JobSubmissionClient(args["address"])
sid = client.submit_job(entrypoint=args["entrypoint"], runtime_env=args["runtime_env"])
while client.get_job_status(sid).value not in ("SUCCEEDED", "FAILED", "STOPPED"):
    time.sleep(%r)
print(json.dumps({"s": time.perf_counter() - t0, "state": client.get_job_status(sid).value}))
""" % POLL_S


def raw_in_process(address: str, entrypoint: str, runtime_env: dict) -> tuple[float, float]:
    from ray.job_submission import JobSubmissionClient

    t0 = time.perf_counter()
    client = JobSubmissionClient(address)
    sid = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    while client.get_job_status(sid).value not in ("SUCCEEDED", "FAILED", "STOPPED"):
        time.sleep(POLL_S)
    total = time.perf_counter() - t0
    info = client.get_job_info(sid)
    assert info.status.value == "SUCCEEDED", client.get_job_logs(sid)[-2000:]
    return total, (info.end_time - info.start_time) / 1000.0


def run_submit(address: str, work: Path, home: Path) -> tuple[float, dict]:
    env = {**os.environ, "MLRUNTIME_HOME": str(home)}
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("run")), "submit", "train",
                           str(work / "noop.json"), "--address", address, "--no-working-dir",
                           "--json"], cwd=work, env=env, capture_output=True, text=True)
    total = time.perf_counter() - t0
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "DONE", proc.stderr[-2000:]
    return total, summary


def job_time(address: str, submission_id: str) -> float:
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(address).get_job_info(submission_id)
    return (info.end_time - info.start_time) / 1000.0


def stats(values: list[float]) -> dict:
    return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--address", help="an existing head's Jobs API (default: start one)")
    args = parser.parse_args()

    head = None
    address = args.address
    if address is None:
        from ray_head import RayHead

        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        head = RayHead(num_cpus=2).start()
        address = head.address
    try:
        return measure(address, args.iterations)
    finally:
        if head is not None:
            head.stop()


def measure(address: str, iterations: int) -> int:
    import pandas as pd

    from runtime.backends import WorkerSpec
    from runtime.backends.ray import RayBackend, _stage
    from runtime.dispatch import HostInfo, plan as make_plan
    from runtime.resources import ResourceRequest

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    rows = work / "rows.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0]}).to_csv(rows, index=False)
    (work / "noop.json").write_text(json.dumps({"name": "bench noop", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(rows)}]}]}))
    # The raw client runs the very entrypoint and runtime_env `run submit` sends.
    spec = WorkerSpec(run_id="bench", engine="noop", mode="train",
                      values={"trainingDataSetId": str(rows)}, run_dir=work / "raw-run")
    stage = _stage(spec, "return", 256.0)
    plan = make_plan(engine_kind="python", resources=ResourceRequest(), host=HostInfo(cpu_count=2),
                     backend="ray")
    runtime_env = RayBackend(address=address).runtime_env(stage, plan)
    entrypoint = f"python -m runtime.backends.ray {stage.name}"
    trivial = "true"

    results: dict[str, list[float]] = {"run_submit": [], "raw_in_process": [], "raw_process": [],
                                       "entrypoint": [], "trivial_raw": []}
    raw_process = [sys.executable, "-c", RAW_SNIPPET]
    for i in range(iterations + 1):        # the first round warms the runtime_env caches
        total, _ = raw_in_process(address, trivial, {})
        t_raw, t_entry = raw_in_process(address, entrypoint, runtime_env)
        proc = subprocess.run(raw_process + [json.dumps({"address": address, "entrypoint": entrypoint,
                                                         "runtime_env": runtime_env})],
                              capture_output=True, text=True, check=True)
        t_raw_proc = json.loads(proc.stdout.strip().splitlines()[-1])["s"]
        t_ours, summary = run_submit(address, work, work / "home")
        if i == 0:
            continue
        results["trivial_raw"].append(total)
        results["raw_in_process"].append(t_raw)
        results["entrypoint"].append(t_entry)
        results["raw_process"].append(t_raw_proc)
        results["run_submit"].append(t_ours)
        results.setdefault("run_submit_entrypoint", []).append(
            job_time(address, summary["submissionId"]))

    table = {k: stats(v) for k, v in results.items()}
    ours, raw = table["run_submit"]["median_s"], table["raw_in_process"]["median_s"]
    entry = table["entrypoint"]["median_s"]
    report = {
        "machine": f"{os.cpu_count()} cores, shared", "iterations": iterations,
        "results": table,
        "ratio_run_submit_to_raw": round(ours / raw, 3),
        "ratio_run_submit_to_raw_process": round(ours / table["raw_process"]["median_s"], 3),
        "overhead_vs_raw_s": round(ours - raw, 3),
        "target_1_2x_raw_plus_entrypoint_s": round(1.2 * (raw - entry) + entry, 3),
        "meets_target": ours <= 1.2 * (raw - entry) + entry,
    }
    print(f"{'':24s}{'median s':>10s}{'min s':>8s}{'max s':>8s}")
    for name, row in table.items():
        print(f"{name:24s}{row['median_s']:>10.3f}{row['min_s']:>8.3f}{row['max_s']:>8.3f}")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    out = HERE / "results" / f"ray-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
