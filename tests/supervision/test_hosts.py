"""Several hosts on one registry: two real `run serve` processes with their own homes and
MLRUNTIME_HOST_ID, sharing one store through `--db URL`. Each host owns, counts and adopts only its
own runs; a host that stops answering has its runs failed by another host once its lease expires,
not before; a schedule fires once per fire time whichever server holds the scheduler's lease,
one of them SIGKILLed midway. The hosts test runs on SQLite and on a real PostgreSQL server."""
from __future__ import annotations

import math
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from support import (client_for, kill_workers, live_server, new_sandbox, noop_experiment,
                     post_run, task_of, wait_no_workers, worker_pids)
from waiting import until, wait_run

from runtime.schedules import iso
from runtime.store import open_store

RESTART_TTL_S = 15.0   # host A's lease outlives its restart on a loaded machine
HOST_TTL_S = 5.0       # then a short one (a loaded machine may stall a server a second or two)
SCHEDULER_TTL_S = 2.0
EVERY_S = 2            # the schedule's period: shorter than a takeover, whose late fires still come


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """One registry for both hosts: a SQLite file neither home holds, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared' / 'registry.db'}"
    pg_server = request.getfixturevalue("pg_server")
    return pg_server.create_database(f"hosts_{uuid.uuid4().hex[:10]}")


def _serve(home: Path, db_url: str, host: str, *args: str, ttl_s: float = HOST_TTL_S,
           **env: str):
    (home.parent / "shared").mkdir(exist_ok=True)
    return live_server(home, "--db", db_url, "--cold", *args,
                       env={"MLRUNTIME_HOST_ID": host, "MLRUNTIME_HOST_TTL_S": str(ttl_s), **env})


class Ledger:
    """The shared store as the test reads it: ledger owners and host leases."""

    def __init__(self, url: str) -> None:
        self.store = open_store(url)

    def owners(self) -> dict[str, str]:
        return {row["run_id"]: (row.get("owner") or {}).get("host")
                for row in self.store.ledger_rows()}

    def lease(self, name: str) -> Any:
        return self.store.lease_holder(name)


@pytest.fixture
def ledger(db_url) -> Iterator[Ledger]:
    reader = Ledger(db_url)
    yield reader
    reader.store.close()


def _start(stack: ExitStack, *servers: Any) -> list[Any]:
    """Start the servers at once (each start imports the whole runtime: seconds on 2 cores);
    `stack` stops them."""
    with ThreadPoolExecutor(len(servers)) as starting:
        entered = [starting.submit(server.__enter__) for server in servers]
        for server in servers:
            stack.push(server.__exit__)
        return [future.result() for future in entered]


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


def test_hosts_own_count_and_adopt_their_runs_and_a_silent_hosts_runs_fail_after_its_lease(
        tmp_path, db_url, ledger):
    home_a, home_b, data = tmp_path / "host-a", tmp_path / "host-b", tmp_path / "tiny.csv"
    sandbox = new_sandbox()
    with ExitStack() as stack:
        # One run at a time on each host: were the other host's run counted here, B's would queue.
        a, b = _start(stack, _serve(home_a, db_url, "host-a", "--max-concurrent-runs", "1",
                                    ttl_s=RESTART_TTL_S),
                      _serve(home_b, db_url, "host-b", "--max-concurrent-runs", "1",
                             "--grace", "1"))
        client_a, client_b = client_for(a, sandbox), client_for(b, sandbox)
        experiment = noop_experiment(client_a, data, sleep_ms=120_000)
        run_a, run_b = post_run(client_a, experiment), post_run(client_b, experiment)
        wait_run(client_a, run_a, experiment_id=experiment, states={"RUNNING"}, timeout_s=60)
        wait_run(client_b, run_b, experiment_id=experiment, states={"RUNNING"}, timeout_s=60)
        assert ledger.owners() == {run_a: "host-a", run_b: "host-b"}
        until(lambda: len(worker_pids(home_a)) == 1 == len(worker_pids(home_b)),
              what="one worker on each host")
        assert ledger.lease("host:host-a")[0] == "host-a"
        assert ledger.lease("host:host-b")[0] == "host-b"

        # A dies and comes back at once: it adopts its own run; B took nothing meanwhile.
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)
        with _serve(home_a, db_url, "host-a", "--max-concurrent-runs", "1") as again:
            assert "1 adopted" in again.output() and "1 left to their live owner" in again.output()
            assert ledger.owners() == {run_a: "host-a", run_b: "host-b"}
            owner = ledger.store.ledger_get(run_a)["owner"]
            assert owner["pid"] == again.process.pid
            again.process.send_signal(signal.SIGKILL)   # now for good
            again.process.wait(10)
        expires_s = ledger.lease("host:host-a")[1]
        # B keeps serving and leaves A's run alone while A's lease holds.
        while time.time() < expires_s - 1.0:
            assert task_of(client_b, experiment, run_a)["state"] == "RUNNING"
            assert task_of(client_b, experiment, run_b)["state"] == "RUNNING"
            time.sleep(0.5)
        task = wait_run(client_b, run_a, experiment_id=experiment, states={"FAILED"},
                        timeout_s=HOST_TTL_S + 20)
        assert _seconds(task["ended"]) >= expires_s, (task, expires_s)
        assert task["message"].startswith("host host-a stopped answering"), task
        assert "host host-b failed the run" in task["message"]
        assert ledger.owners() == {run_b: "host-b"}      # A's row is freed
        assert task_of(client_b, experiment, run_b)["state"] == "RUNNING"
        listing = client_b.get(f"/experiments/{experiment}/runs").json()
        assert listing["_page"]["totalCount"] == 2
        # Only A's server died, not its machine: its worker still runs, and A, back after its
        # lease expired, stops it (the run ended FAILED; nobody would record it).
        assert len(worker_pids(home_a)) == 1
        with _serve(home_a, db_url, "host-a") as back:
            assert "1 worker(s) of runs another host failed while this host was silent " \
                   "stopped" in back.output(), back.output()
            assert worker_pids(home_a) == []
            assert task_of(client_b, experiment, run_a)["state"] == "FAILED"
    assert wait_no_workers(home_a, 5) == [] and wait_no_workers(home_b, 10) == []


def _scheduled_experiment(client: httpx.Client, data: Path, start_s: float,
                          end_s: float) -> str:
    engine = client.post("/engines", json={
        "name": "noop", "type": "Python",
        "artifacts": {"default": {"image": {"location": "noop", "name": "noop"}}}})
    data.write_text("a,b\n1,2\n3,4\n")
    instance = client.post("/mlInstances", json={
        "name": "noop", "engineId": engine.json()["id"], "tasks": [{"name": "train",
        "parameters": [{"key": "trainingDataSetId", "value": str(data)}]}]})
    assert instance.status_code == 201, instance.text
    experiment = client.post("/experiments", json={
        "name": "every few seconds", "mlInstanceId": instance.json()["id"],
        "template": {"schedule": {"cron": f"* * * * * */{EVERY_S}", "mode": "train",
                                  "startTime": iso(start_s), "endTime": iso(end_s)}}})
    assert experiment.status_code == 201, experiment.text
    return experiment.json()["id"]


def _dues(client: httpx.Client, experiment: str) -> list[str]:
    runs = client.get(f"/experiments/{experiment}/runs", params={"limit": 100}).json()["children"]
    return sorted(r["description"].rpartition("(due ")[2].rstrip(")") for r in runs)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_schedule_fires_once_per_fire_time_when_its_leader_is_sigkilled(tmp_path, db_url,
                                                                           ledger):
    # SQLite only here: the same takeover on PostgreSQL is tests/services/test_scheduler_hosts.py
    # (both stores, a given clock) and the team benchmark's two-minute run.
    sandbox = new_sandbox()
    fast = {"MLRUNTIME_SCHEDULER_TTL_S": str(SCHEDULER_TTL_S)}
    with ExitStack() as stack:
        servers = _start(stack, *(_serve(tmp_path / f"host-{name}", db_url, f"host-{name}",
                                         **fast) for name in ("a", "b")))
        client = client_for(servers[0], sandbox)
        start_s = math.ceil((time.time() + 1) / EVERY_S) * EVERY_S
        end_s = start_s + 3 * EVERY_S + 0.5    # four fire times
        expected = [iso(start_s + i * EVERY_S) for i in range(4)]
        experiment = _scheduled_experiment(client, tmp_path / "tiny.csv", start_s, end_s)
        until(lambda: len(_dues(client, experiment)) >= 2, timeout_s=2 * EVERY_S + 10,
              what="the first two fires")
        holder = ledger.lease("scheduler")[0]
        leader = next(s for s in servers if f":{s.process.pid}:" in holder)
        leader.process.send_signal(signal.SIGKILL)   # between two fires, lease held
        leader.process.wait(10)
        survivor = client_for(next(s for s in servers if s is not leader), sandbox)
        dues = until(lambda: (d := _dues(survivor, experiment)) and len(d) >= 4 and d,
                     timeout_s=end_s - time.time() + SCHEDULER_TTL_S + 15, interval_s=0.2,
                     what=lambda: f"four fires, got {_dues(survivor, experiment)}")
        time.sleep(1.5)   # a repeated fire would show by now
        assert _dues(survivor, experiment) == dues == expected
        assert ledger.lease("scheduler")[0] != holder   # the survivor took the lease over
    kill_workers(tmp_path / "host-a")   # a worker the killed server left (its host "died")
    kill_workers(tmp_path / "host-b")
