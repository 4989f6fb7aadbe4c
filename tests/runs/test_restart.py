"""A run is RUNNING only once its worker exists: a server killed while a run's worker is still
starting (its warm parent importing) leaves the run PENDING, and the next server queues it again
and runs it, instead of failing it with "worker exited without a result" though nothing ran."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from waiting import run_task, until, wait_run

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
HEADERS = {"x-api-key": "test", "x-gw-ims-org-id": "local", "x-sandbox-name": "prod"}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(home: Path, gate: Path) -> tuple[subprocess.Popen, httpx.Client]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    env.update(GATE_FILE=str(gate), PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    log = open(home.parent / "server.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli.main", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--home", str(home), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/data/sensei", headers=HEADERS,
                          timeout=30)

    def up() -> bool:
        assert process.poll() is None, (home.parent / "server.log").read_text()[-3000:]
        try:
            return client.get("/engines").status_code == 200
        except httpx.TransportError:
            return False

    until(up, timeout_s=60, what="the server to answer")
    return process, client


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm parents are Linux-only")
def test_a_run_whose_worker_had_not_started_when_the_server_died_runs_after_restart(tmp_path):
    home, gate, data = tmp_path / "home", tmp_path / "gate", tmp_path / "tiny.csv"
    home.mkdir()
    gate.write_text("closed")
    data.write_text("a,b\n1,2\n3,4\n")
    first, client = _serve(home, gate)
    parents: list[int] = []
    try:
        engine = client.post("/engines", json={
            "name": "gated", "type": "Python",
            "artifacts": {"default": {"image": {"location": "gated_engines:GatedEngine"}}}})
        assert engine.status_code == 201, engine.text
        instance = client.post("/mlInstances", json={
            "name": "gated", "engineId": engine.json()["id"],
            "tasks": [{"name": "train", "parameters": [
                {"key": "trainingDataSetId", "value": str(data)}]}]})
        assert instance.status_code == 201, instance.text
        eid = client.post("/experiments", json={
            "name": "restart", "mlInstanceId": instance.json()["id"]}).json()["id"]
        run_id = client.post(f"/experiments/{eid}/runs", json={"mode": "train"}).json()["id"]

        # Granted, its worker starting: the warm parent waits at the gate. Not RUNNING yet.
        def starting() -> dict | None:
            task = run_task(client, run_id, experiment_id=eid)
            assert task["state"] in ("PENDING", "RUNNING"), task
            return task if (task.get("message") or "").startswith("starting its worker") else None

        task = until(starting, timeout_s=60, what="the run's worker to be starting")
        assert task["state"] == "PENDING", task
        parents = _warm_parents(home)
        first.send_signal(signal.SIGKILL)   # the server dies; nothing recorded a worker
        first.wait(10)
    finally:
        _stop(first)
        for pid in parents:   # the gated parent the dead server left: it never forked
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not (home / "runs" / run_id / "result.json").exists()
    gate.unlink()

    second, client = _serve(home, gate)
    try:
        done = wait_run(client, run_id, experiment_id=eid, states={"DONE"}, timeout_s=180)
        assert "without a result" not in (done.get("message") or "")
        models = client.get("/models", params={"experimentRunId": run_id}).json()
        assert any(m.get("experimentRunId") == run_id for m in models.get("children", [])), models
    finally:
        _stop(second)


def _warm_parents(home: Path) -> list[int]:
    """The warm parents listening for this home (`run warm list --json`)."""
    import json

    listed = subprocess.run([sys.executable, "-m", "runtime.cli.main", "warm", "list", "--json",
                             "--home", str(home)], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    if listed.returncode != 0:
        return []
    return [int(p["pid"]) for p in json.loads(listed.stdout or "[]") if p.get("pid")]
