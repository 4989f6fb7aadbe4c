"""Online scoring on this machine, loopback, the load generator (asyncio streams) sharing the cores
with the server and saying so: `run serve-model` of a noop and a retail-sales Model against a bare
FastAPI app answering the same body (the API's own overhead), retail with batching on and off.

    python benchmarks/bench_online.py --home HOME --noop MODEL_ID --retail MODEL_ID [--seconds 5]

mlflow is not installed by this benchmark (it is not in the project's environment and the issue
allows it only when quick to install); its comparison is skipped and said so.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(url: str, body: bytes, connections: int, seconds: float) -> dict:
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
    await asyncio.gather(*(loop() for _ in range(connections)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {"rps": round(len(latencies) / wall, 1), "errors": errors,
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)}


def start(command: list[str], port: int, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
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


def serve_model(home: str, model: str, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--noop", required=True)
    parser.add_argument("--retail")
    parser.add_argument("--retail-rows", default="/work/shared/data/retail/retail-scoring.csv")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores shared by server, host and load generator; loopback;"
          f" load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    results: dict[str, dict] = {}
    noop_body = json.dumps({"dataframe_records": [{"x": 1}]}).encode()

    port = free_port()
    bare = start([sys.executable, "-c", BARE, str(port)], port, dict(os.environ))
    url = f"http://127.0.0.1:{port}/invocations"
    results["bare FastAPI, 1 conn"] = asyncio.run(load(url, noop_body, 1, args.seconds))
    results["bare FastAPI, 4 conn"] = asyncio.run(load(url, noop_body, 4, args.seconds))
    results["bare FastAPI, 32 conn"] = asyncio.run(load(url, noop_body, 32, args.seconds))
    bare.terminate()
    bare.wait()

    proc, url = serve_model(args.home, args.noop)
    results["noop serve-model, 1 conn"] = asyncio.run(load(url, noop_body, 1, args.seconds))
    results["noop serve-model, 4 conn"] = asyncio.run(load(url, noop_body, 4, args.seconds))
    proc.terminate()
    proc.wait()

    if args.retail:
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
        for label, extra in (("batching on", ()), ("batching off", ("--no-batching",))):
            proc, url = serve_model(args.home, args.retail, *extra)
            if not extra:
                results["retail 1 row, 1 conn"] = asyncio.run(load(url, one, 1, args.seconds))
                results["retail 1,000 rows, 1 conn"] = asyncio.run(
                    load(url, many, 1, args.seconds))
            results[f"retail 1 row, 32 conn, {label}"] = asyncio.run(
                load(url, one, 32, args.seconds))
            proc.terminate()
            proc.wait()
    bare = results["bare FastAPI, 1 conn"]
    for name, result in results.items():
        ratio = result["rps"] / bare["rps"] if bare["rps"] else 0.0
        print(f"{name:40s} {result}  ({ratio:.2f}x bare FastAPI's 1-connection requests/s)")
    if args.retail:
        online = results["retail 1,000 rows, 1 conn"]["rps"] * 1000
        print(f"retail 1,000-row requests: {online:,.0f} rows/s online; run score of the same "
              f"rows: {score_rows_s['run']:,.0f} rows/s for the whole run, "
              f"{score_rows_s['stage']:,.0f} rows/s for its score stage alone "
              f"({online / score_rows_s['run']:.2f}x and {online / score_rows_s['stage']:.2f}x)")
    print(f"load average after the run: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("mlflow models serve: skipped (mlflow is not installed in this environment)")


if __name__ == "__main__":
    main()
