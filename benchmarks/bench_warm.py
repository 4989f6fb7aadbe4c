"""Warm python workers (issue 14), cold vs warm side by side in one run:

1. dispatch -> the engine, retail-sales: from `PythonBackend.submit` to the engine's first stage
   (its load_data) and to the first line of its `train`; the runtime's part of the latter is it
   less the engine's own load_data and feature_pipeline stages. Target: warm <= 50 ms.
2. the noop engine through a server: `run train` in the home of a running `run serve` (the CLI
   run forks from the server's warm parent; baseline: `run train --cold`), and API runs
   (POST .../runs until DONE) on a warm server vs a `run serve --cold` one. Wall times.
3. a 10-run `run sweep` of retail-sales with 10 epochs (seeds 0..9), warm (the default) vs
   `--cold`. Target: >= 1.5x faster warm.

    python benchmarks/bench_warm.py [--rounds 7] [--api-runs 10] [--skip-sweep]
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
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import LOOPBACK, runtime_server, table  # noqa: E402

RETAIL = REPO.parent / "shared" / "data" / "retail"
HEADERS = {"Content-Type": "application/json", "x-api-key": "bench", "x-gw-ims-org-id": "local",
           "x-sandbox-name": "prod", "Authorization": "Bearer local"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "benchmarks"), str(REPO),
                                                    env.get("PYTHONPATH")) if p)
    return {**env, **extra}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"run {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


# --- 1. dispatch -> engine ---------------------------------------------------------------------

def dispatch_to_engine(rounds: int, work: Path) -> dict[str, dict[str, float]]:
    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]   # the worker imports _warm_engines
    from runtime.backends import WorkerSpec
    from runtime.backends.python import PythonBackend
    from runtime.dispatch import detect_host, plan as make_plan
    from runtime.resources import ResourceRequest
    from runtime.warm import WarmPools

    plan = make_plan(engine_kind="python", resources=ResourceRequest(), host=detect_host())
    plan = plan.model_copy(update={"env": {**plan.env, "PYTHONPATH": os.environ["PYTHONPATH"]}})
    pools = WarmPools(work / "home-dispatch", start=True, owned=True)
    backends = {"cold": PythonBackend(), "warm": PythonBackend(warm=pools)}
    values = {"trainingDataSetId": str(RETAIL / "retail-training.csv"), "epochs": 1,
              "n_estimators": 1}
    samples: dict[str, dict[str, list[float]]] = {k: {"engine": [], "train": [], "runtime": []}
                                                  for k in backends}
    try:
        for i in range(rounds + 1):   # round 0 starts the warm parent: not counted
            for name in (("cold", "warm") if i % 2 else ("warm", "cold")):
                run_dir = work / f"dispatch-{name}-{i}"
                spec = WorkerSpec(run_id=f"d-{name}-{i}", engine="_warm_engines:TimedRetail",
                                  mode="train", values=values, run_dir=run_dir, seed=0)
                t0 = time.time()
                handle = backends[name].submit(spec=spec, plan=plan, log_path=run_dir / "worker.log")
                outcome = handle.wait(600)
                if outcome.state.value != "DONE":
                    raise SystemExit(f"{name} run failed: {outcome.reason}\n{outcome.log_tail}")
                if name == "warm" and handle.warm_parent is None:
                    raise SystemExit(f"the warm run started cold:\n{outcome.log_tail}")
                if i == 0:
                    continue
                marks = json.loads((run_dir / "marks.json").read_text())
                own = outcome.result["durations_s"]
                samples[name]["engine"].append((marks["load_data"] - t0) * 1000)
                samples[name]["train"].append((marks["train"] - t0) * 1000)
                samples[name]["runtime"].append(
                    (marks["train"] - t0 - own["load_data"] - own["feature_pipeline"]) * 1000)
    finally:
        pools.close()
    return {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}


# --- 2. the noop engine through a server -------------------------------------------------------

def _noop_instance(work: Path) -> Path:
    data = work / "tiny.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    target = work / "noop.json"
    target.write_text(json.dumps({"name": "noop", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(data)}]}]}))
    return target


def _api(method: str, url: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url, method=method, headers=HEADERS,
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def _api_run(base: str, experiment_id: str) -> float:
    url = f"{base}/data/sensei/experiments/{experiment_id}/runs"
    start = time.perf_counter()
    run_id = _api("POST", url, {"mode": "train"})["id"]
    while True:
        status = _api("GET", f"{url}/{run_id}/status")
        state = ((status.get("status") or status).get("tasks") or [{}])[0].get("state")
        if state in ("DONE", "FAILED", "ABORTED"):
            if state != "DONE":
                raise SystemExit(f"API run {run_id} ended {state}")
            return time.perf_counter() - start
        time.sleep(0.005)


def through_server(rounds: int, api_runs: int, work: Path) -> dict[str, dict[str, float]]:
    target = _noop_instance(work)
    out: dict[str, dict[str, float]] = {}
    for mode in ("warm", "cold"):
        home = work / f"home-server-{mode}"
        env = _env(MLRUNTIME_HOME=str(home))
        first = json.loads(_cli("train", str(target), "--json", "--quiet", env=env)
                           .stdout.strip().splitlines()[-1])
        server = runtime_server(home, work)
        if mode == "cold":
            server.argv.append("--cold")
        server.env = env
        with server:
            base = f"http://{LOOPBACK}:{server.port}"
            _api_run(base, first["experimentId"])   # the first run starts the warm parent
            api = [_api_run(base, first["experimentId"]) for _ in range(api_runs)]
            cli = []
            for _ in range(rounds):
                start = time.perf_counter()
                _cli("train", str(target), "--quiet", "--json",
                     *(["--cold"] if mode == "cold" else []), env=env)
                cli.append(time.perf_counter() - start)
        out[mode] = {"api_run_s": statistics.median(api), "cli_run_s": statistics.median(cli)}
    return out


# --- 3. a 10-run retail sweep --------------------------------------------------------------------

def sweep(work: Path, epochs: int, runs: int) -> dict[str, float]:
    out = {}
    for mode in ("cold", "warm"):
        env = _env(MLRUNTIME_HOME=str(work / f"home-sweep-{mode}"))
        args = ["sweep", "train", str(REPO / "configs" / "retail-sales.json"),
                "-p", f"seed=range(0,{runs})", "-p", f"epochs={epochs}",
                "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}", "--json"]
        start = time.perf_counter()
        done = _cli(*args, *(["--cold"] if mode == "cold" else []), env=env)
        out[mode] = time.perf_counter() - start
        rows = json.loads(done.stdout.strip().splitlines()[-1])["rows"]
        if [r["state"] for r in rows] != ["DONE"] * runs:
            raise SystemExit(f"the {mode} sweep did not finish every trial: {rows}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--api-runs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sweep-runs", type=int, default=10)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--parts", default="dispatch,server,sweep",
                        help="which figures to measure, comma-separated (default: all three)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_warm.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    load = os.getloadavg()[0]
    report: dict = {"cpus": len(os.sched_getaffinity(0)), "load_at_start": load}

    parts = set(args.parts.split(","))
    if args.skip_sweep:
        parts.discard("sweep")
    if "dispatch" in parts:
        report["dispatch_ms"] = d = dispatch_to_engine(args.rounds, work)
        print(table(["retail-sales, median ms", "cold", "warm", "cold/warm"], [
            [label, d["cold"][k], d["warm"][k], d["cold"][k] / d["warm"][k]] for label, k in (
                ("dispatch -> engine's first stage", "engine"),
                ("dispatch -> first line of train", "train"),
                ("  of which the runtime's (less load/features)", "runtime"))]), flush=True)

    if "server" in parts:
        report["server_s"] = s = through_server(args.rounds, args.api_runs, work)
        print(table(["noop through a server, median s", "cold", "warm", "cold/warm"], [
            [label, s["cold"][k], s["warm"][k], s["cold"][k] / s["warm"][k]] for label, k in (
                ("run train (CLI) in the server's home", "cli_run_s"),
                ("API run, POST to DONE", "api_run_s"))]), flush=True)

    if "sweep" in parts:
        report["sweep_s"] = w = sweep(work, args.epochs, args.sweep_runs)
        print(table([f"{args.sweep_runs}-run retail sweep, {args.epochs} epochs", "cold", "warm",
                     "cold/warm"], [["total wall time, s", w["cold"], w["warm"],
                                     w["cold"] / w["warm"]]]), flush=True)
    report["targets"] = {"dispatch_to_engine_warm_ms": 50, "sweep_speedup": 1.5}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"load average at start {load:.2f}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
