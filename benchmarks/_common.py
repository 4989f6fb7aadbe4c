"""Helpers shared by the benchmarks: timing statistics, server subprocesses, load generators.

Nothing here starts at import: servers and load generators run only when a benchmark asks, and
every process a helper starts is stopped by that same helper (by its own Popen handle).
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

LOOPBACK = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# Timing


@dataclass
class Timing:
    """Latency statistics of one operation, in milliseconds."""

    n: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[rank]


def summarize(samples_ns: Sequence[int]) -> Timing:
    ms = sorted(s / 1e6 for s in samples_ns)
    return Timing(n=len(ms), p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95),
                  mean_ms=statistics.fmean(ms), max_ms=ms[-1])


def time_calls(call: Callable[[int], Any], *, iterations: int, warmup: int,
               max_seconds: float) -> Timing:
    """Latency of `call(i)`; stops after `iterations` calls or `max_seconds`, whichever is first."""
    for i in range(warmup):
        call(i)
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(max_seconds * 1e9)
    for i in range(iterations):
        t0 = clock()
        call(i)
        t1 = clock()
        samples.append(t1 - t0)
        if t1 > deadline and len(samples) >= 10:
            break
    return summarize(samples)


# --------------------------------------------------------------------------------------------
# Server subprocesses


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server subprocess on a loopback port: started, awaited until it answers, then stopped.

    Only the process this object started is ever signalled.
    """

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str,
                 log_dir: Path, env: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.ready_path = ready_path
        self.log_path = log_dir / f"{name}-{port}.log"
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env, cwd=BENCH_DIR.parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it "
                                   f"answered; log:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
                conn.request("GET", self.ready_path)
                status = conn.getresponse().status
                conn.close()
                if status < 500:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within {timeout_s}s; "
                           f"log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def runtime_server(home: Path, log_dir: Path,
                   env: Optional[dict[str, str]] = None) -> ServerProcess:
    """`run serve` on the given home, exactly as a user starts it (`env`: its environment)."""
    port = free_port()
    argv = [sys.executable, "-m", "runtime.cli.main", "serve", "--host", LOOPBACK,
            "--port", str(port), "--home", str(home), "--log-level", "warning"]
    return ServerProcess("runtime-serve", argv, port, "/data/sensei/mlInstances?limit=1", log_dir,
                         env=env)


def uvicorn_server(name: str, app: str, log_dir: Path, factory: bool = False) -> ServerProcess:
    """A baseline app from this folder under uvicorn, with `run serve`'s uvicorn settings."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--host", LOOPBACK, "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--app-dir", str(BENCH_DIR), app]
    if factory:
        argv.append("--factory")
    return ServerProcess(name, argv, port, "/", log_dir)


# Baseline apps, served by uvicorn from this module (`_common:raw_asgi_app`).

_RAW_BODY = json.dumps({"id": "00000000-0000-0000-0000-000000000000", "name": "baseline",
                        "engineId": "00000000-0000-0000-0000-000000000001",
                        "created": "2024-01-01T00:00:00.000Z"}, separators=(",", ":")).encode()


async def raw_asgi_app(scope: dict, receive: Callable, send: Callable) -> None:
    """The framework ceiling: plain ASGI answering a fixed small JSON body to any GET."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(_RAW_BODY)).encode())]})
    await send({"type": "http.response.body", "body": _RAW_BODY})


def make_fastapi_minimal_app() -> Any:
    """FastAPI with one path-parameter route and the same fixed body: the framework's own cost."""
    from fastapi import FastAPI
    from starlette.responses import Response

    app = FastAPI()

    # No annotations beyond `str`: this module's postponed annotations name no module-level
    # Request/Response, and FastAPI would read an unresolved one as a query parameter.
    @app.get("/data/sensei/mlInstances/{id}")
    async def get_(id: str):  # noqa: ANN202
        return Response(_RAW_BODY, media_type="application/json")

    @app.get("/")
    async def root():  # noqa: ANN202
        return Response(_RAW_BODY, media_type="application/json")

    return app


# --------------------------------------------------------------------------------------------
# Load generators


@dataclass
class LoadResult:
    tool: str
    path_sample: str
    duration_s: float
    connections: int
    requests: int
    requests_per_s: float
    errors: int                      # socket errors, timeouts and non-2xx answers
    latency_ms: dict[str, float] = field(default_factory=dict)   # p50, p95, p99, mean, max

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"errors":%%d,"p50":%%d,"p95":%%d,"p99":%%d,' ..
    '"mean":%%.1f,"max":%%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean,
    latency.max))
end
"""


def wrk_path() -> Optional[str]:
    return shutil.which("wrk")


def run_wrk(port: int, paths: Sequence[str], *, duration_s: float, connections: int,
            threads: int = 1) -> LoadResult:
    """wrk on one thread (the server keeps the other core), cycling through `paths`."""
    lua = ",".join(json.dumps(p) for p in paths)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % lua)
    try:
        out = subprocess.run(
            [wrk_path() or "wrk", f"-t{threads}", f"-c{connections}",
             f"-d{int(round(duration_s))}s", "--timeout", "5s", "-s", script.name, f"http://{LOOPBACK}:{port}"],
            capture_output=True, text=True, timeout=duration_s + 60, check=True).stdout
    finally:
        os.unlink(script.name)
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = json.loads(line[len("WRKJSON "):])
    duration = data["duration_us"] / 1e6
    return LoadResult(
        tool="wrk", path_sample=paths[0], duration_s=round(duration, 3), connections=connections,
        requests=data["requests"], requests_per_s=round(data["requests"] / duration, 1),
        errors=data["errors"],
        latency_ms={k: round(data[k] / 1000, 3) for k in ("p50", "p95", "p99", "mean", "max")})


def run_python_load(port: int, paths: Sequence[str], *, duration_s: float,
                    connections: int) -> LoadResult:
    """Fallback when wrk is absent: keep-alive http.client connections, one thread each.

    Slower than wrk (the GIL caps it), so its requests/s is a lower bound on the server's.
    """
    lock = threading.Lock()
    samples: list[int] = []
    errors = [0]
    stop_at = time.perf_counter() + duration_s

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
        local: list[int] = []
        bad = 0
        i = offset
        while time.perf_counter() < stop_at:
            path = paths[i % len(paths)]
            i += connections
            t0 = time.perf_counter_ns()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status >= 300:
                    bad += 1
            except OSError:
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
                continue
            local.append(time.perf_counter_ns() - t0)
        conn.close()
        with lock:
            samples.extend(local)
            errors[0] += bad

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    t = summarize(samples) if samples else Timing(0, float("nan"), float("nan"), float("nan"),
                                                   float("nan"))
    ms = sorted(s / 1e6 for s in samples)
    return LoadResult(
        tool="python-http.client", path_sample=paths[0], duration_s=round(elapsed, 3),
        connections=connections, requests=len(samples),
        requests_per_s=round(len(samples) / elapsed, 1), errors=errors[0],
        latency_ms={"p50": round(t.p50_ms, 3), "p95": round(t.p95_ms, 3),
                    "p99": round(percentile(ms, 99), 3), "mean": round(t.mean_ms, 3),
                    "max": round(t.max_ms, 3)})


def run_load(port: int, paths: Sequence[str], *, duration_s: float, connections: int,
             prefer_wrk: bool = True) -> LoadResult:
    if prefer_wrk and wrk_path():
        return run_wrk(port, paths, duration_s=duration_s, connections=connections)
    return run_python_load(port, paths, duration_s=duration_s, connections=connections)


# --------------------------------------------------------------------------------------------
# Output


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 or i == len(widths) - 1 and w > 40
                               else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     .rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    return str(value)
