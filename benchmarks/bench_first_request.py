"""The first online request of a Model not yet loaded, on a fresh `run serve`: a noop and a
retail-sales Model, each published by an MLService, with MLRUNTIME_ONLINE_PREWARM at each of its
settings (off: the first request starts the warm parent of the Model's environment, forks the
host and loads the Model; parents: the server started that parent in the background after it
began listening; models: it also loaded the published Models).

    flock /tmp/bench.lock python benchmarks/bench_first_request.py [--home HOME] [--settle-s 10]
        [--repeat 2] [--modes off,parents,models] [--baseline DIR]

--baseline DIR adds, in the same turns, servers run from the code in DIR (e.g. an earlier
commit's `git archive` unpacked there), with no MLRUNTIME_ONLINE_PREWARM set.

Each measurement starts its own server on the home (the parents a server started end with it),
waits until it answers, then `--settle-s` seconds ("a server up for a few seconds"), and times
one request to the MLService's invocations. Without --home, one is made in a temporary folder:
a noop Model and a retail-sales Model (1 epoch on the shared retail data) trained by `run train`
and published. Every figure is printed beside the load average, since the other work on this
2-core machine moves it.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

RETAIL = Path("/work/shared/data/retail")
ROOT = Path(__file__).resolve().parents[1]
ROW = {"noop": {"dataframe_records": [{"x": 1, "y": 2}]},
       "retail": {"dataframe_records": [{"date": "2012-10-26", "store": 1,
                                         "weeklySales": 1600000}]}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")},
            "MLRUNTIME_SCHEDULER": "off", **extra}


def train(home: Path, config: Path, *extra: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "runtime.cli.main", "train", str(config),
                          *extra, "--home", str(home), "--json"], env=env(),
                         capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_home(work: Path) -> dict[str, str]:
    """A home with a noop and a retail-sales Model, each published by its own MLService."""
    from runtime.home import resolve_home
    from runtime.mlservices import ServiceDesk
    from runtime.registry import Caller, Registry
    from runtime.schemas import EXPERIMENT, MLSERVICE

    home = work / "home"
    (work / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (work / "noop.json").write_text(json.dumps({"name": "noop first", "engineId": "noop",
        "tasks": [{"name": "train", "parameters": [
            {"key": "trainingDataSetId", "value": str(work / "train.csv")}]},
            {"name": "score", "parameters": []}]}))
    retail = json.loads((ROOT / "configs" / "retail-sales.json").read_text())
    for task in retail["tasks"]:
        for p in task["parameters"]:
            if p["value"].startswith("data/retail/"):
                p["value"] = str(RETAIL / p["value"][len("data/retail/"):])
            elif p["value"].startswith("out/"):
                p["value"] = str(work / p["value"])
    (work / "retail.json").write_text(json.dumps(retail))
    runs = {"noop": train(home, work / "noop.json"),
            "retail": train(home, work / "retail.json", "-p", "epochs=1")}
    registry = Registry.open(resolve_home(home))
    caller = Caller.local()
    services = {}
    try:
        for name, run in runs.items():
            experiment = registry.get(EXPERIMENT, caller, run["experimentId"])
            service = registry.create(MLSERVICE, caller, {
                "name": f"first request {name}", "mlInstanceId": experiment["mlInstanceId"],
                "scoringDataSetId": str(work / "train.csv"), "scoringTimeframe": 60,
                "scoringSchedule": {"cron": "0 0 1 1 *"}})
            ServiceDesk(registry).publish(caller, service["id"], run["modelId"], "benchmark")
            services[name] = service["id"]
    finally:
        registry.close()
    (work / "services.json").write_text(json.dumps(services))
    return services


def first_request(home: Path, service: str, target: str, mode: str, settle_s: float,
                  log: Path, code: Path = ROOT) -> dict:
    """`code`: where the server's `python -m runtime.cli.main` finds the runtime (its cwd)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "serve", "--port",
                                 str(port), "--home", str(home)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=code,
                                env=env() if mode == "baseline"
                                else env(MLRUNTIME_ONLINE_PREWARM=mode))
    try:
        started = time.monotonic()
        while True:
            try:
                if httpx.get(base + "/v2/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - started > 120:
                raise SystemExit(f"the server did not start (log: {log})")
            time.sleep(0.05)
        ready_s = time.monotonic() - started
        time.sleep(settle_s)
        load = os.getloadavg()[0]
        url = f"{base}/data/sensei/mlServices/{service}/invocations"
        body = json.dumps(ROW[target]).encode()
        headers = {"Content-Type": "application/json"}
        with httpx.Client(timeout=120) as client:   # its connection open before the timing
            client.get(base + "/v2/health/live")
            sent = time.perf_counter()
            answer = client.post(url, content=body, headers=headers)
            took_ms = (time.perf_counter() - sent) * 1000
            assert answer.status_code == 200, answer.text
            second = time.perf_counter()
            client.post(url, content=body, headers=headers)
            second_ms = (time.perf_counter() - second) * 1000
        return {"target": target, "mode": mode, "first_ms": round(took_ms, 1),
                "second_ms": round(second_ms, 1), "ready_s": round(ready_s, 2),
                "load": round(load, 2)}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", help="a home made by an earlier run (its services.json beside "
                                       "it); default: a new one in a temporary folder")
    parser.add_argument("--settle-s", type=float, default=10.0,
                        help="seconds between the server answering and the first request")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--modes", default="off,parents,models")
    parser.add_argument("--targets", default="noop,retail")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also servers run from the code in DIR, in the same turns")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "bench_first_request.json")
    args = parser.parse_args()
    if args.home:
        home = Path(args.home)
        services = json.loads((home.parent / "services.json").read_text())
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-first-request-"))
        services = make_home(work)
        home = work / "home"
    print(f"machine: {os.cpu_count()} cores, shared with the other work on it; load average "
          f"before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; home {home}; "
          f"first request {args.settle_s:g} s after the server answered", flush=True)
    results = []
    for _ in range(args.repeat):   # in turns, so that a change in the other load falls on all
        for target in args.targets.split(","):
            for mode in (["baseline"] if args.baseline else []) + args.modes.split(","):
                result = first_request(home, services[target], target, mode, args.settle_s,
                                       home.parent / "serve.log",
                                       Path(args.baseline) if mode == "baseline" else ROOT)
                results.append(result)
                print(f"{target:7} prewarm={mode:8} first request {result['first_ms']:8.1f} ms"
                      f"  (second {result['second_ms']:.1f} ms; server answered after "
                      f"{result['ready_s']:.2f} s; load average {result['load']:.2f})",
                      flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": commit, "cores": os.cpu_count(),
                                    "settle_s": args.settle_s, "baseline": args.baseline,
                                    "results": results}, indent=1))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
