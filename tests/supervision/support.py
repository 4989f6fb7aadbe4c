"""Helpers for the supervision tests: a noop Engine, MLInstance and Experiment on a live server,
runs posted and awaited, and the checks every test ends with (no worker left, store intact)."""
from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, Optional

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # waiting (benchmarks/bench_soak too)

from live_server import live_server, new_sandbox, sensei_client  # noqa: E402,F401
from waiting import run_task, until  # noqa: E402


def client_for(server: Any, sandbox: str) -> httpx.Client:
    return sensei_client(server.api_url, sandbox, token=None)


def noop_experiment(client: httpx.Client, data: Path, *, sleep_ms: int = 0,
                    extra: Optional[list[dict[str, str]]] = None) -> str:
    """An Experiment whose train task runs the noop engine for `sleep_ms` per stage."""
    if not data.exists():
        data.write_text("a,b\n1,2\n3,4\n")
    engine = client.post("/engines", json={
        "name": "noop", "type": "Python",
        "artifacts": {"default": {"image": {"location": "noop", "name": "noop"}}}})
    assert engine.status_code == 201, engine.text
    params = [{"key": "sleep_ms", "value": str(sleep_ms)},
              {"key": "trainingDataSetId", "value": str(data)}, *(extra or [])]
    instance = client.post("/mlInstances", json={
        "name": "noop", "engineId": engine.json()["id"],
        "tasks": [{"name": "train", "parameters": params}]})
    assert instance.status_code == 201, instance.text
    experiment = client.post("/experiments", json={"name": "soak",
                                                   "mlInstanceId": instance.json()["id"]})
    assert experiment.status_code == 201, experiment.text
    return experiment.json()["id"]


def post_run(client: httpx.Client, experiment_id: str,
             params: Optional[dict[str, str]] = None) -> str:
    body: dict[str, Any] = {"mode": "train"}
    if params:
        body["tasks"] = [{"name": "train", "parameters": [
            {"key": k, "value": v} for k, v in params.items()]}]
    response = client.post(f"/experiments/{experiment_id}/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def task_of(client: httpx.Client, experiment_id: str, run_id: str) -> dict[str, Any]:
    return run_task(client, run_id, experiment_id=experiment_id)


def worker_pids(home: Path) -> list[int]:
    """Live worker processes of this home's runs (their command line names its run folders)."""
    needle = str(home / "runs").encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        zombie = stat[stat.rindex(b")") + 2:].startswith(b"Z")
        if needle in cmdline and b"runtime.worker" in cmdline and not zombie:
            pids.append(int(entry))
    return pids


def wait_no_workers(home: Path, timeout_s: float = 15.0) -> list[int]:
    """The home's live workers once there are none, or those left after `timeout_s`."""
    try:
        until(lambda: not worker_pids(home), timeout_s=timeout_s, what="no worker left")
    except AssertionError:
        pass   # the caller asserts the list, which names the survivors
    return worker_pids(home)


def integrity(home: Path) -> str:
    with sqlite3.connect(home / "registry.db") as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def models_of_run(home: Path, run_id: str) -> int:
    with sqlite3.connect(home / "registry.db") as conn:
        return conn.execute("SELECT count(*) FROM models WHERE experimentRunId=? AND deleted=0",
                            (run_id,)).fetchone()[0]


def kill_workers(home: Path) -> None:
    import signal

    for pid in worker_pids(home):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
