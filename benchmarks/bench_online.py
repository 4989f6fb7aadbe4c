"""Online scoring on this machine, loopback, the load generator (asyncio streams) sharing the cores
with the server and saying so: `run serve-model` of a noop and a retail-sales Model against a bare
FastAPI app answering the same body (the API's own overhead), retail with batching on and off, and
(with --mlflow-python) the same pickled scikit-learn model under `run serve-model` and under
`mlflow models serve --env-manager local`.

    python benchmarks/bench_online.py --home HOME --noop MODEL_ID --retail MODEL_ID [--seconds 5]
        [--mlflow-python /tmp/mlflow-venv/bin/python]

Each figure comes with the CPU time a request cost the server (its process and every process
under it: the model host, the warm parent; `server_cpu_us`), split into the process that speaks
HTTP (`api_cpu_us`) and those under it (`host_cpu_us`), and the load generator's, in
microseconds: on a machine whose other work takes a changing share of the cores, requests/s move
with that share, CPU per request much less.

mlflow is never part of the project's environment: install it, for this benchmark only, into a
separate virtual environment with the libraries the recipes' `python` profile pins, so that both
servers run the model on the same scikit-learn, pandas and numpy, e.g.

    python3.11 -m venv /tmp/mlflow-venv
    /tmp/mlflow-venv/bin/pip install mlflow
    /tmp/mlflow-venv/bin/pip install scikit-learn==1.3.2 numpy==1.26.4 scipy==1.11.4 \\
        pandas==1.5.3 'pyarrow<19'

The scikit-learn model is benchmarks/online_sklearn (a function recipe: a scaled ridge regression
on the retail data), trained here by `run train` into HOME (its environment built on first use);
its pickle, as the runtime wrote it, is saved as an MLflow model by mlflow.sklearn.save_model.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(url: str, body: bytes, connections: int, seconds: float,
               server_pid: Optional[int] = None, raw: bool = False) -> Any:
    """`connections` keep-alive HTTP/1.1 connections, each posting `body` in a loop: a minimal
    client on asyncio streams (httpx costs about a millisecond of this machine's CPU per request,
    which at 32 connections made the load generator the limit, not the server)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    started = time.perf_counter()
    (server_cpu, api_cpu), own_cpu = tree_cpu_s(server_pid, split=True), _own_cpu_s()
    await asyncio.gather(*(loop() for _ in range(connections)))
    wall = time.perf_counter() - started
    (server_end, api_end), own_end = tree_cpu_s(server_pid, split=True), _own_cpu_s()
    server_cpu, api_cpu, own_cpu = server_end - server_cpu, api_end - api_cpu, own_end - own_cpu
    if raw:
        return latencies, errors, wall, server_cpu, own_cpu, api_cpu
    return summarise([(latencies, errors, wall, server_cpu, own_cpu, api_cpu)], bool(server_pid))


def summarise(slices: list[tuple], server: bool = True) -> dict:
    """One figure from (latencies, errors, wall seconds, server CPU s, own CPU s, the server's
    own process's CPU s) slices."""
    latencies = sorted(v for s in slices for v in s[0])
    wall = sum(s[2] for s in slices)
    count = max(1, len(latencies))
    out = {"rps": round(len(latencies) / wall, 1), "errors": sum(s[1] for s in slices),
           "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
           "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)}
    if server:
        out["server_cpu_us"] = round(sum(s[3] for s in slices) / count * 1e6)
        # of which the HTTP face (the process the load generator talks to) and, the rest, the
        # processes under it (the model host)
        out["api_cpu_us"] = round(sum(s[5] for s in slices) / count * 1e6)
        out["host_cpu_us"] = out["server_cpu_us"] - out["api_cpu_us"]
    out["loadgen_cpu_us"] = round(sum(s[4] for s in slices) / count * 1e6)
    return out


async def alternate(targets: dict[str, tuple[str, int]], body: bytes, connections: int,
                    seconds: float, rounds: int = 5) -> dict[str, dict]:
    """Each target (name -> url, server pid) loaded in turn, `rounds` slices of
    seconds / rounds each, so that a change in the machine's other load falls on all of them
    alike; one figure per target from its slices."""
    slices: dict[str, list[tuple]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, (url, pid) in targets.items():
            part = await load(url, body, connections, seconds / rounds, pid, raw=True)
            slices[name].append(part)
    return {name: summarise(parts) for name, parts in slices.items()}


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def tree_cpu_s(pid: Optional[int], split: bool = False) -> Any:
    """CPU seconds (user + system) of `pid` and every process under it, as /proc has them;
    `split`: (that, and `pid`'s own alone)."""
    if not pid:
        return (0.0, 0.0) if split else 0.0
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats.get(current, (0, 0.0))[1]
        todo.extend(child for child, (parent, _) in stats.items() if parent == current)
    return (total, stats.get(pid, (0, 0.0))[1]) if split else total


def start(command: list[str], port: int, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"{command} did not start")


BARE = """
import sys, uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response
app = FastAPI()
@app.get("/ping")
async def ping(): return Response(b"")
@app.post("/invocations")
async def inv(request: Request):
    await request.body()
    return Response(b'{"predictions":[{"x":1}]}', media_type="application/json")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def serve_model(home: str, model: str, *extra: str,
                cold: bool = False) -> tuple[subprocess.Popen, str]:
    """`run serve-model` on a free port; `cold`: its host starts as its own child, not forked
    from a warm parent (which a second server of the same home would share with the first, and
    its CPU be counted as the first one's)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    if cold:
        env["MLRUNTIME_WARM"] = "0"
    proc = start([sys.executable, "-m", "runtime.cli.main", "serve-model", model, "--port",
                  str(port), "--home", home, *extra], port, env)
    return proc, f"http://127.0.0.1:{port}/invocations"


def batch_score_rows_s(home: str, model_id: str, rows) -> dict[str, float]:
    """`run score` of the same rows with the same Model (its MLInstance's latest score task):
    rows/s of the whole run, and of its score stage alone (read, features, predict)."""
    import tempfile

    sys.path.insert(0, str(ROOT))
    from runtime.home import resolve_home
    from runtime.registry import Caller, Registry
    from runtime.schemas import EXPERIMENT, MODEL

    registry = Registry.open(resolve_home(Path(home)))
    try:
        caller = Caller.local()
        model = registry.get(MODEL, caller, model_id)
        instance = registry.get(EXPERIMENT, caller, model["experimentId"])["mlInstanceId"] \
            if model.get("experimentId") else None
    finally:
        registry.close()
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "rows.csv", Path(folder) / "scores.parquet"
        rows.to_csv(source, index=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
        done = subprocess.run([sys.executable, "-m", "runtime.cli.main", "score", instance,
                               "--model", model_id, "--home", home, "--json",
                               "-p", f"scoringDataSetId={source}",
                               "-p", f"scoringResultsDataSetId={target}"],
                              env=env, capture_output=True, text=True, timeout=600)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    durations = summary["durations_s"]
    return {"run": len(rows) / sum(durations.values()),
            "stage": len(rows) / (durations["load_data"] + durations["score"])}


SKLEARN_RECIPE = ROOT / "benchmarks" / "online_sklearn"
SKLEARN_COLUMNS = ["temperature", "regionalFuelPrice", "markDown", "cpi", "unemployment",
                   "storeSize"]
SAVE_MLFLOW_MODEL = """
import pickle, sys
import mlflow.sklearn
with open(sys.argv[1], "rb") as f:
    model = pickle.load(f)
mlflow.sklearn.save_model(model, sys.argv[2], serialization_format="pickle")
"""


def sklearn_model(home: str, training_csv: str) -> str:
    """The benchmark's scikit-learn recipe trained by `run train` into `home`: its Model id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    done = subprocess.run([sys.executable, "-m", "runtime.cli.main", "train",
                           str(SKLEARN_RECIPE / "sklearn.config.json"), "--engine",
                           str(SKLEARN_RECIPE), "-p", f"trainingDataSetId={training_csv}",
                           "--home", home, "--json"], env=env, capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"run train of {SKLEARN_RECIPE} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["modelId"]


def mlflow_serve(mlflow_python: str, home: str, model_id: str,
                 folder: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve --env-manager local` of the Model's own pickle, saved as an MLflow
    model by the separate environment's mlflow."""
    sys.path.insert(0, str(ROOT))
    from runtime.home import resolve_home
    from runtime.registry import Caller, Registry

    registry = Registry.open(resolve_home(Path(home)))
    try:
        pickled = registry.model_artifact_dir(Caller.local(), model_id) / "model.pkl"
    finally:
        registry.close()
    target = folder / "mlflow-model"
    subprocess.run([mlflow_python, "-c", SAVE_MLFLOW_MODEL, str(pickled), str(target)],
                   check=True, capture_output=True, timeout=300)
    shutil.copyfile(pickled, target / "model.pkl")   # the very bytes the runtime serves
    port = free_port()
    bin_dir = str(Path(mlflow_python).parent)   # its CLI starts `uvicorn` from PATH
    proc = start([str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", str(target),
                  "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], port,
                 {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                  "MLFLOW_TRACKING_URI": f"file://{folder / 'mlruns'}"})
    return proc, f"http://127.0.0.1:{port}/invocations"


def measure(results: dict, label: str, url: str, body: bytes, connections: int,
            seconds: float, proc: Optional[subprocess.Popen] = None) -> dict:
    result = asyncio.run(load(url, body, connections, seconds, proc.pid if proc else None))
    results[label] = result
    return result


def cpu(result: dict) -> int:
    """CPU microseconds a request cost, server and load generator together."""
    return result.get("server_cpu_us", 0) + result["loadgen_cpu_us"]


def stop(proc: subprocess.Popen) -> None:
    """Stop the process and its group (mlflow's CLI leaves its uvicorn behind otherwise)."""
    import signal

    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--noop", required=True)
    parser.add_argument("--retail")
    parser.add_argument("--retail-rows", default="/work/shared/data/retail/retail-scoring.csv")
    parser.add_argument("--training-rows",
                        default="/work/shared/data/retail/retail-training.csv")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mlflow-python", metavar="PYTHON",
                        help="the python of a separate environment with mlflow and "
                             "scikit-learn: compare `mlflow models serve` with it")
    parser.add_argument("--sklearn", metavar="MODEL_ID",
                        help="the scikit-learn Model to compare (default: train one)")
    parser.add_argument("--only", choices=("noop", "retail", "mlflow"), action="append",
                        help="run only these parts (repeatable; the bare FastAPI baseline "
                             "always runs)")
    args = parser.parse_args()
    parts = set(args.only or ("noop", "retail", "mlflow"))
    print(f"machine: {os.cpu_count()} cores shared by server, host and load generator; loopback;"
          f" load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    results: dict[str, dict] = {}
    noop_body = json.dumps({"dataframe_records": [{"x": 1}]}).encode()
    seconds = args.seconds

    port = free_port()
    bare = start([sys.executable, "-c", BARE, str(port)], port, dict(os.environ))
    url = f"http://127.0.0.1:{port}/invocations"
    for conns in (1, 4, 32):
        measure(results, f"bare FastAPI, {conns} conn", url, noop_body, conns, seconds, bare)
    stop(bare)

    if "noop" in parts:
        proc, url = serve_model(args.home, args.noop)
        measure(results, "noop serve-model, 1 conn", url, noop_body, 1, seconds, proc)
        measure(results, "noop serve-model, 4 conn", url, noop_body, 4, seconds, proc)
        stop(proc)

    score_rows_s = None
    if args.retail and "retail" in parts:
        import pandas as pd

        all_rows = pd.read_csv(args.retail_rows)
        # ISO dates, as a JSON client writes them (the file's M/D/YY takes pandas' slower path)
        all_rows["date"] = pd.to_datetime(all_rows["date"], format="%m/%d/%y").dt.strftime(
            "%Y-%m-%d")
        one = json.dumps({"dataframe_records": json.loads(all_rows.head(1).to_json(
            orient="records"))}).encode()
        thousand = all_rows.head(1000)
        many = json.dumps({"dataframe_split": json.loads(thousand.to_json(
            orient="split", index=False))}).encode()
        score_rows_s = batch_score_rows_s(args.home, args.retail, thousand)
        on, on_url = serve_model(args.home, args.retail)
        off, off_url = serve_model(args.home, args.retail, "--no-batching", cold=True)
        try:
            measure(results, "retail 1 row, 1 conn", on_url, one, 1, seconds, on)
            measure(results, "retail 1,000 rows, 1 conn", on_url, many, 1, seconds, on)
            # in turns: the machine's other load falls on both alike
            both = asyncio.run(alternate({"on": (on_url, on.pid), "off": (off_url, off.pid)},
                                         one, 32, 2 * seconds))
            for label in ("on", "off"):
                results[f"retail 1 row, 32 conn, batching {label}"] = both[label]
        finally:
            stop(on)
            stop(off)

    mlflow_skipped = "mlflow models serve: skipped (give --mlflow-python)"
    if args.mlflow_python and "mlflow" in parts:
        import tempfile

        import pandas as pd

        model_id = args.sklearn or sklearn_model(args.home, args.training_rows)
        rows = pd.read_csv(args.retail_rows)[SKLEARN_COLUMNS]
        body = json.dumps({"dataframe_split": json.loads(rows.head(1).to_json(
            orient="split", index=False))}).encode()
        with tempfile.TemporaryDirectory() as folder:
            ours, ours_url = serve_model(args.home, model_id)
            theirs, theirs_url = mlflow_serve(args.mlflow_python, args.home, model_id,
                                              Path(folder))
            try:
                targets = {"sklearn serve-model": (ours_url, ours.pid),
                           "sklearn mlflow serve": (theirs_url, theirs.pid)}
                for name, (url, _pid) in targets.items():
                    answer = httpx.post(url, content=body, timeout=30,
                                        headers={"Content-Type": "application/json"})
                    print(f"{name}: {answer.text.strip()[:120]}")
                for conns in (1, 16):   # in turns: the machine's other load falls on both alike
                    for name, result in asyncio.run(alternate(targets, body, conns,
                                                              seconds)).items():
                        results[f"{name}, {conns} conn"] = result
            finally:
                stop(ours)
                stop(theirs)
        mlflow_skipped = ""

    bare_1 = results["bare FastAPI, 1 conn"]
    for name, result in results.items():
        ratio = result["rps"] / bare_1["rps"] if bare_1["rps"] else 0.0
        print(f"{name:40s} {result}  ({ratio:.2f}x bare FastAPI's 1-connection requests/s)")
    if "noop serve-model, 4 conn" in results:
        noop = results["noop serve-model, 4 conn"]
        print(f"noop 1 row: {noop['rps']:,.0f} requests/s at 4 connections (goal >= 3,000; bare "
              f"FastAPI {results['bare FastAPI, 4 conn']['rps']:,.0f} in this run), p50 "
              f"{results['noop serve-model, 1 conn']['p50_ms']} ms at 1 connection (goal <= 1); "
              f"CPU a request: serve-model {noop['api_cpu_us']} us, model host "
              f"{noop['host_cpu_us']} us, load generator {noop['loadgen_cpu_us']} us")
    if "retail 1 row, 32 conn, batching on" in results:
        on = results["retail 1 row, 32 conn, batching on"]
        off = results["retail 1 row, 32 conn, batching off"]
        print(f"retail 32 connections of single rows: {on['rps']:,.0f} rows/s, p99 "
              f"{on['p99_ms']} ms (goal >= 2,500 with p99 <= 50 ms); batching off "
              f"{off['rps']:,.0f}: {on['rps'] / off['rps']:.1f}x (goal >= 4x); CPU a request "
              f"{cpu(on)} us against {cpu(off)} us ({cpu(off) / max(1, cpu(on)):.1f}x)")
    if score_rows_s is not None:
        online = results["retail 1,000 rows, 1 conn"]["rps"] * 1000
        print(f"retail 1,000-row requests: {online:,.0f} rows/s online; run score of the same "
              f"rows: {score_rows_s['run']:,.0f} rows/s for the whole run, "
              f"{score_rows_s['stage']:,.0f} rows/s for its score stage alone "
              f"({online / score_rows_s['run']:.2f}x and {online / score_rows_s['stage']:.2f}x)")
    if "sklearn mlflow serve, 16 conn" in results:
        ours = results["sklearn serve-model, 16 conn"]
        theirs = results["sklearn mlflow serve, 16 conn"]
        print(f"scikit-learn model at 16 connections: serve-model {ours['rps']:,.0f} requests/s, "
              f"mlflow models serve {theirs['rps']:,.0f} ({ours['rps'] / theirs['rps']:.2f}x, "
              f"goal >= 1.5x; CPU a request {cpu(ours)} us against {cpu(theirs)} us); p50 at 1 "
              f"connection {results['sklearn serve-model, 1 conn']['p50_ms']} ms against "
              f"{results['sklearn mlflow serve, 1 conn']['p50_ms']} ms (goal: no worse)")
    print(f"load average after the run: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if mlflow_skipped:
        print(mlflow_skipped)


if __name__ == "__main__":
    main()
