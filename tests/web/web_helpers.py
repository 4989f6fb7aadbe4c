"""Helpers of the runs-page tests (imported by name: `from web_helpers import ...`, a unique module
name): a real `run serve` on a free loopback port, runs trained with the real `run train`."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
TRAINING_CSV = REPO.parent / "shared" / "data" / "retail" / "retail-training.csv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}


@dataclass
class Server:
    url: str
    home: Path
    process: subprocess.Popen


def start_server(home: Path, *args: str) -> Server:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(home.parent / f"{home.name}-server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli.main", "serve", "--port", str(port), "--home", str(home),
         "--log-level", "warning", *args], cwd=REPO, env=clean_env(), stdout=log,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"run serve exited: {(home.parent / f'{home.name}-server.log').read_text()}")
        try:
            httpx.get(url + "/ui/static/app.css", timeout=1.0)
            return Server(url, home, process)
        except httpx.TransportError:
            time.sleep(0.1)
    stop_server(process)
    raise RuntimeError("run serve did not come up within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def train(home: Path, instance: Path, *params: str, options: tuple[str, ...] = (),
          env: dict[str, str] | None = None) -> dict:
    """`run train --json` in `home` (more `options`, e.g. --org, and `env` added to the clean
    environment); the summary it prints last."""
    args = [sys.executable, "-m", "runtime.cli.main", "train", str(instance), "--home", str(home),
            "--json", *options]
    for p in params:
        args += ["-p", p]
    done = subprocess.run(args, cwd=REPO, env={**clean_env(), **(env or {})}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def noop_instance(folder: Path, name: str = "web noop") -> Path:
    path = folder / f"{name.replace(' ', '-')}.json"
    path.write_text(json.dumps({"name": name, "engineId": "noop", "tasks": [{
        "name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(TRAINING_CSV)}]}]}))
    return path
