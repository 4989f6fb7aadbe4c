"""An MLService publishes a new Model while its online route is under load.

`run serve` on a free loopback port; its `POST /data/sensei/mlServices/{id}/invocations` loaded by
16 keep-alive connections (a minimal HTTP/1.1 client on asyncio streams, in this process, sharing
the machine's cores with the server and its model hosts) for 60 s; 20 s in, the MLService
publishes its second Model from this process (runtime.mlservices.ServiceDesk.publish, as `run
sweep --publish` or a scheduled training run does: another process than the server, which learns
of it from the registry). The goals (#30): no failed request; every answer names the old or the
new Model (`X-Model-Id`); the new one answers within 1 s of the publication; and once it has, the
old one answers no request sent after that. The exit status is 1 when a check of correctness
fails; the 1 s is a figure of this machine's load, reported with its verdict.

    python benchmarks/bench_publish.py [--engine noop|retail-sales ...] [--connections 16]
        [--seconds 60] [--publish-at 20] [--home DIR]

Each engine gets two Models trained by `run train` in a new home (or DIR): noop on a two-row
file, retail-sales (1 epoch) on the shared retail data, whose requests are single rows of its
scoring file.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
RETAIL = ROOT.parent / "shared" / "data" / "retail"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import percentile, runtime_server  # noqa: E402


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}


def run_cli(home: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home),
                          "--json"], env=cli_env(), capture_output=True, text=True, timeout=900,
                         cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"run {' '.join(args)} failed:\n{out.stderr[-2000:]}{out.stdout[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def two_models(home: Path, engine: str, folder: Path) -> tuple[str, str, str, bytes]:
    """(MLInstance id, first Model, second Model, a request body) for `engine`."""
    if engine == "noop":
        (folder / "train.csv").write_text("x,y\n1,2\n3,4\n")
        config = {"name": "noop publish", "engineId": "noop", "tasks": [
            {"name": "train", "parameters": [{"key": "trainingDataSetId",
                                              "value": str(folder / "train.csv")}]},
            {"name": "score", "parameters": []}]}
        (folder / "noop.json").write_text(json.dumps(config))
        source, extra = str(folder / "noop.json"), []
        body = {"dataframe_records": [{"x": 1}]}
    else:
        import pandas as pd

        source = str(ROOT / "configs" / "retail-sales.json")
        extra = ["-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}", "-p", "epochs=1"]
        row = pd.read_csv(RETAIL / "retail-scoring.csv").head(1)
        row["date"] = pd.to_datetime(row["date"], format="%m/%d/%y").dt.strftime("%Y-%m-%d")
        body = {"dataframe_records": json.loads(row.to_json(orient="records"))}
    first = run_cli(home, "train", source, *extra)
    from runtime.home import resolve_home
    from runtime.registry import Caller, Registry
    from runtime.schemas import EXPERIMENT

    registry = Registry.open(resolve_home(home))
    try:
        instance = registry.get(EXPERIMENT, Caller.local(), first["experimentId"])["mlInstanceId"]
    finally:
        registry.close()
    second = run_cli(home, "train", instance, *extra)
    return instance, first["modelId"], second["modelId"], json.dumps(body).encode()


class Answers:
    """(sent, received, status, model) of every request, monotonic seconds."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, int, str]] = []
        self.failures: list[str] = []


async def load(url: str, body: bytes, connections: int, seconds: float,
               answers: Answers) -> None:
    parts = urlsplit(url)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    stop_at = time.monotonic() + seconds

    async def one_connection() -> None:
        reader = writer = None
        while time.monotonic() < stop_at:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                sent = time.monotonic()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status, length, model = int(head[9:12]), 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"x-model-id":
                        model = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                answers.rows.append((sent, time.monotonic(), status, model))
                if b"connection: close" in head.lower():
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError) as exc:   # a dropped connection
                answers.failures.append(f"{type(exc).__name__}: {exc}")
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


def percentile_ms(values: list[float], q: float) -> float:
    return round(percentile(sorted(values), q) * 1000, 2) if values else 0.0


def bench(engine: str, home: Path, folder: Path, connections: int, seconds: float,
          publish_at: float) -> dict:
    instance, old, new, body = two_models(home, engine, folder)
    from runtime.home import resolve_home
    from runtime.mlservices import ServiceDesk
    from runtime.registry import Caller, Registry
    from runtime.schemas import MLSERVICE

    registry = Registry.open(resolve_home(home))
    caller = Caller.local()
    service = registry.create(MLSERVICE, caller, {
        "name": f"{engine} online", "mlInstanceId": instance,
        "scoringDataSetId": str(folder / "unused.csv"), "scoringTimeframe": 60,
        "scoringSchedule": {"cron": "0 0 1 1 *"}})["id"]
    desk = ServiceDesk(registry)
    desk.publish(caller, service, old, "bench_publish: the first Model")
    server = runtime_server(home, folder, env={**cli_env(), "MLRUNTIME_SCHEDULER": "off"})
    url = f"http://127.0.0.1:{server.port}/data/sensei/mlServices/{service}/invocations"
    server.start()
    try:
        deadline = time.monotonic() + 120
        while True:   # its published Model answering (prewarmed in the background)
            try:
                answer = httpx.post(url, content=body, timeout=30,
                                    headers={"Content-Type": "application/json"})
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"run serve's MLService did not answer (log: {server.log_path})")
            time.sleep(0.2)
        answers = Answers()
        published: dict[str, float] = {}

        async def scenario() -> None:
            async def publish() -> None:
                await asyncio.sleep(publish_at)
                start = time.monotonic()
                await asyncio.to_thread(desk.publish, caller, service, new,
                                        "bench_publish: the second Model")
                published["at"] = time.monotonic()
                published["call_s"] = published["at"] - start
            await asyncio.gather(load(url, body, connections, seconds, answers), publish())

        load_avg = os.getloadavg()[0]
        started = time.monotonic()
        asyncio.run(scenario())
        wall = time.monotonic() - started
    finally:
        server.stop()
        registry.close()
    rows = answers.rows
    at = published["at"]
    failed = [r for r in rows if r[2] != 200]
    models = {r[3] for r in rows}
    first_new = min((r[1] for r in rows if r[3] == new), default=None)
    old_after = [r for r in rows if first_new is not None and r[0] > first_new and r[3] == old]
    window = [r[1] - r[0] for r in rows if at - 1 <= r[0] <= at + 3]
    steady = [r[1] - r[0] for r in rows if r[0] < at - 1]
    return {
        "engine": engine, "connections": connections, "seconds": round(wall, 1),
        "requests": len(rows), "rps": round(len(rows) / wall, 1),
        "failed": len(failed) + len(answers.failures),
        "failures": sorted({str(r[2]) for r in failed} | set(answers.failures))[:5],
        "other_models": sorted(models - {old, new}),
        "old_answers": sum(r[3] == old for r in rows), "new_answers": sum(r[3] == new for r in rows),
        "new_answers_after_publish_s": None if first_new is None else round(first_new - at, 3),
        "old_answers_to_requests_sent_after_the_first_new": len(old_after),
        "publish_call_s": round(published["call_s"], 3),
        "p50_ms_before": percentile_ms(steady, 50), "p99_ms_before": percentile_ms(steady, 99),
        "p99_ms_swap_window": percentile_ms(window, 99),
        "max_ms_swap_window": round(max(window) * 1000, 2) if window else 0.0,
        "load_average_before": round(load_avg, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("noop", "retail-sales"), action="append")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--publish-at", type=float, default=20.0)
    parser.add_argument("--home", help="a folder for the benchmark's home (default: a new "
                                       "temporary one)")
    args = parser.parse_args()
    engines = args.engine or ["noop", "retail-sales"]
    print(f"machine: {os.cpu_count()} cores shared by run serve, its model hosts and the load "
          f"generator (this process); loopback; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        results = []
        for engine in engines:
            folder = Path(tmp) / engine
            folder.mkdir()
            home = Path(args.home) / engine if args.home else folder / "home"
            result = bench(engine, home, folder, args.connections, args.seconds, args.publish_at)
            results.append(result)
            print(json.dumps(result))
    ok = True   # the exit status: correctness (a timing's verdict is printed, not exited on)
    for r in results:
        new_s = r["new_answers_after_publish_s"]
        checks = {
            "no failed request": r["failed"] == 0,
            "every answer names the old or the new Model": not r["other_models"],
            "the new Model answers": new_s is not None,
            "no old answer after the first new one":
                r["old_answers_to_requests_sent_after_the_first_new"] == 0,
        }
        ok &= all(checks.values())
        checks["the new Model answers within 1 s of the publication (goal)"] = (
            new_s is not None and new_s <= 1.0)
        print(f"{r['engine']}: {r['requests']:,} requests in {r['seconds']} s at "
              f"{r['connections']} connections ({r['rps']:,.0f}/s), {r['failed']} failed; "
              f"{r['old_answers']:,} by the old Model, {r['new_answers']:,} by the new, the first "
              f"{r['new_answers_after_publish_s']} s after the publication; p99 "
              f"{r['p99_ms_before']} ms before it, {r['p99_ms_swap_window']} ms from 1 s before "
              f"to 3 s after (max {r['max_ms_swap_window']} ms)")
        for name, passed in checks.items():
            print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
