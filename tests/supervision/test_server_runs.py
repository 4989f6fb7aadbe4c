"""Runs through a real `run serve`: cancel, the FIFO queue, refusal of runs that never fit,
maxRuntime, retries, and a graceful stop on SIGTERM."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from support import (client_for, integrity, live_server, models_of_run, new_sandbox,
                     noop_experiment, post_run, task_of, wait_no_workers, worker_pids)
from waiting import TERMINAL, until, wait_run


@pytest.fixture
def server(tmp_path):
    with live_server(tmp_path / "home", "--max-concurrent-runs", "1") as server:
        yield server


def test_cancel_a_running_run_aborts_it_kills_its_worker_and_removes_partial_artifacts(
        server, tmp_path):
    client = client_for(server, new_sandbox())
    eid = noop_experiment(client, tmp_path / "tiny.csv", sleep_ms=60_000)
    run_id = post_run(client, eid)
    wait_run(client, run_id, experiment_id=eid, states={"RUNNING"})
    until(lambda: worker_pids(server.home), what="the run's worker")
    (server.home / "runs" / run_id / "partial.bin").write_bytes(b"half a model")

    started = time.monotonic()
    answer = client.post(f"/experiments/{eid}/runs/{run_id}/cancel")
    assert answer.status_code == 200, answer.text
    task = wait_run(client, run_id, experiment_id=eid, states={"ABORTED"}, timeout_s=5)
    assert time.monotonic() - started < 5
    assert "cancelled by" in task["message"] and "through the API" in task["message"]
    assert wait_no_workers(server.home, 5) == []
    assert sorted(p.name for p in (server.home / "runs" / run_id).iterdir()) == ["worker.log"]

    again = client.post(f"/experiments/{eid}/runs/{run_id}/cancel")
    assert again.status_code == 409 and "already ended ABORTED" in again.json()["detail"]
    missing = client.post(f"/experiments/{eid}/runs/no-such-run/cancel")
    assert missing.status_code == 404


def test_the_cancel_route_is_documented_in_the_served_openapi(server):
    spec = client_for(server, "prod").get("/openapi.json").json()
    path = "/data/sensei/experiments/{experiment_id}/runs/{run_id}/cancel"
    operation = spec["paths"][path]["post"]
    assert "ABORTED" in operation["description"]
    assert {"200", "404", "409"} <= set(operation["responses"])


def test_runs_beyond_capacity_wait_in_fifo_order_with_their_position(server, tmp_path):
    client = client_for(server, new_sandbox())
    eid = noop_experiment(client, tmp_path / "tiny.csv", sleep_ms=700)
    runs = [post_run(client, eid) for _ in range(3)]
    seen = []   # the last run's status messages while it waits

    def started() -> bool:
        task = task_of(client, eid, runs[2])
        if task["state"] == "PENDING" and task.get("message") and (
                not seen or seen[-1] != task["message"]):
            seen.append(task["message"])
        return task["state"] != "PENDING"

    until(started, what="the third run to leave the queue")
    queued = [m for m in seen if m.startswith("Queued: position")]
    assert queued and all("concurrent runs" in m for m in queued), seen
    positions = [int(m.split()[2]) for m in queued]
    assert positions == sorted(positions, reverse=True) and positions[-1] == 1, seen
    assert any(m.startswith("Queued: position 2 of 2") for m in queued) or len(queued) == 1, seen
    tasks = [wait_run(client, run_id, experiment_id=eid, states={"DONE"}, timeout_s=120)
             for run_id in runs]
    for earlier, later in zip(tasks, tasks[1:]):   # one at a time, first come first served
        assert earlier["ended"] <= later["started"]


def test_a_run_that_can_never_fit_is_refused_with_a_400_saying_why(server, tmp_path):
    client = client_for(server, new_sandbox())
    eid = noop_experiment(client, tmp_path / "tiny.csv")
    for task, why in (({"name": "train", "specification": {"type": "ContainerTaskSpec",
                                                         "gpus": "8"}}, "GPU"),
                      ({"name": "train", "parameters": [{"key": "driverMemory",
                                                         "value": "900000000"}]}, "memory")):
        answer = client.post(f"/experiments/{eid}/runs", json={"mode": "train", "tasks": [task]})
        assert answer.status_code == 400, answer.text
        assert why in answer.json()["detail"], answer.json()
    listing = client.get(f"/experiments/{eid}/runs").json()
    assert listing["_page"]["totalCount"] == 0      # nothing was written


def test_max_runtime_aborts_and_retries_rerun_a_failed_run(server, tmp_path):
    client = client_for(server, new_sandbox())
    eid = noop_experiment(client, tmp_path / "tiny.csv", sleep_ms=60_000)
    slow = post_run(client, eid, {"maxRuntime": "2"})
    task = wait_run(client, slow, experiment_id=eid, timeout_s=60)
    assert task["state"] == "ABORTED" and "maxRuntime of 2 s" in task["message"], task

    failing = post_run(client, eid, {"retries": "2", "sleep_ms": "0",
                                     "trainingDataSetId": str(tmp_path / "missing.csv")})
    seen = set()

    def ended() -> dict:
        task = task_of(client, eid, failing)
        seen.add(task["state"])
        return task if task["state"] in TERMINAL else None

    task = until(ended, timeout_s=90, what="the retried run to end")
    assert task["state"] == "FAILED" and "missing.csv" in task["message"], task
    assert "RETRY" in seen
    log = client.get(f"/experiments/{eid}/runs/{failing}/logs/worker.log").text
    assert "attempt 1 of 3 failed" in log and "attempt 2 of 3 failed" in log
    assert "attempt 3 of 3 failed" not in log      # two retries: three attempts, no fourth


def test_sigterm_lets_short_runs_finish_aborts_the_rest_and_exits_0(tmp_path):
    home = tmp_path / "home"
    with live_server(home, "--grace", "6") as server:
        client = client_for(server, new_sandbox())
        quick = noop_experiment(client, tmp_path / "tiny.csv", sleep_ms=100)
        slow = noop_experiment(client, tmp_path / "tiny.csv", sleep_ms=60_000)
        short_run, long_run = post_run(client, quick), post_run(client, slow)
        wait_run(client, long_run, experiment_id=slow, states={"RUNNING"})
        log = home / "runs" / short_run / "worker.log"
        until(lambda: log.exists() and "stage train" in log.read_text(errors="replace"),
              timeout_s=90, what="the quick run's train stage")   # the grace covers the rest
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0, server.output()
        assert "Stopped cleanly on SIGTERM" in server.output()
    assert wait_no_workers(home, 5) == []
    with live_server(home) as again:   # a fresh server reads what the stopped one recorded
        client = client_for(again, client.headers["x-sandbox-name"])
        assert task_of(client, quick, short_run)["state"] == "DONE"
        task = task_of(client, slow, long_run)
        assert task["state"] == "ABORTED" and "6 s grace period" in task["message"], task
    assert integrity(home) == "ok"


def test_after_a_server_sigkill_the_next_server_adopts_live_workers_and_fails_dead_ones(
        tmp_path):
    home = tmp_path / "home"
    with live_server(home) as server:
        sandbox = new_sandbox()
        client = client_for(server, sandbox)
        # Long enough to outlive the restart below on a loaded machine: the claim is that the
        # next server adopts a worker that still runs (one that ended is only recorded).
        quick = noop_experiment(client, tmp_path / "tiny.csv", sleep_ms=8000)
        slow = noop_experiment(client, tmp_path / "tiny.csv", sleep_ms=60_000)
        survivor, doomed = post_run(client, quick), post_run(client, slow)
        wait_run(client, survivor, experiment_id=quick, states={"RUNNING"})
        wait_run(client, doomed, experiment_id=slow, states={"RUNNING"})
        until(lambda: len(worker_pids(home)) == 2, what="both workers")
        server.process.send_signal(signal.SIGKILL)      # as the OOM killer would
        server.process.wait()
    doomed_worker = [pid for pid in worker_pids(home)
                     if doomed.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(doomed_worker) == 1 and len(worker_pids(home)) == 2   # both outlived the server
    os.killpg(doomed_worker[0], signal.SIGKILL)
    with live_server(home) as server:
        client = client_for(server, sandbox)
        task = wait_run(client, survivor, experiment_id=quick, timeout_s=90)
        assert task["state"] == "DONE", task
        assert models_of_run(home, survivor) == 1
        insights = client.get("/insights").json()["children"]
        assert any(i["context"].get("experimentRunId") == survivor for i in insights)
        task = task_of(client, slow, doomed)
        assert task["state"] == "FAILED", task
        assert task["message"] == ("the server stopped while the run was running; worker "
                                   "exited without a result")
        assert "1 adopted" in server.output() and "1 failed" in server.output()
    assert wait_no_workers(home, 5) == [] and integrity(home) == "ok"


def test_a_queued_run_deleted_while_no_server_ran_does_not_stop_the_next_server(tmp_path):
    """A server SIGKILLed with runs still queued; one of their Experiments deleted before the
    restart. The next server starts, drops the deleted run, and runs the one still queued."""
    from runtime.home import resolve_home
    from runtime.registry import Caller, Registry
    from runtime.schemas import EXPERIMENT

    home = tmp_path / "home"
    with live_server(home, "--max-concurrent-runs", "1") as server:
        sandbox = new_sandbox()
        client = client_for(server, sandbox)
        busy = noop_experiment(client, tmp_path / "tiny.csv", sleep_ms=60_000)
        gone = noop_experiment(client, tmp_path / "tiny.csv")
        kept = noop_experiment(client, tmp_path / "tiny.csv")
        running = post_run(client, busy)
        wait_run(client, running, experiment_id=busy, states={"RUNNING"})
        queued_gone, queued_kept = post_run(client, gone), post_run(client, kept)
        assert task_of(client, kept, queued_kept)["state"] == "PENDING"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    for pid in worker_pids(home):
        os.killpg(pid, signal.SIGKILL)
    registry = Registry.open(resolve_home(home))
    try:
        assert registry.delete(EXPERIMENT, Caller.local(org="TESTORG@AdobeOrg", sandbox=sandbox,
                                                         user_id="tester"), gone) >= 1
    finally:
        registry.close()
    with live_server(home) as server:
        client = client_for(server, sandbox)
        assert wait_run(client, queued_kept, experiment_id=kept, timeout_s=90)["state"] == "DONE"
        assert client.get(f"/experiments/{gone}/runs/{queued_gone}").status_code == 404
    assert wait_no_workers(home, 5) == [] and integrity(home) == "ok"
