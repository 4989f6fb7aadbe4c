"""Hosts on one registry, in one process (their clocks given): capacity counted per host, and the
host lease: another host's runs fail only once its lease has expired, never those of a host that
renewed it or never held one."""
from __future__ import annotations

import threading

import pytest

from runtime.capacity import Capacity, Demand
from runtime.hosts import HostLease
from runtime.schemas import ENGINE, EXPERIMENT, MLINSTANCE, RunStatus
from runtime.supervisor import Supervisor

from waiting import run_task

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL


def _runs(registry, caller, count: int) -> list[str]:
    engine = registry.create(ENGINE, caller, {"name": "noop", "artifacts": {"default": {
        "image": {"location": "noop"}}}})
    instance = registry.create(MLINSTANCE, caller, {"name": "i", "engineId": engine["id"]})
    experiment = registry.create(EXPERIMENT, caller, {"name": "e",
                                                      "mlInstanceId": instance["id"]})
    return [registry.create_run(caller, experiment["id"], {"mode": "train"})["id"]
            for _ in range(count)]


def _supervisor(registry, host: str, monkeypatch) -> Supervisor:
    monkeypatch.setenv("MLRUNTIME_HOST_ID", host)
    return Supervisor(registry, Capacity(cpus=1), kind="cli")


def test_each_host_counts_only_its_own_runs_against_its_capacity(registry, caller, monkeypatch):
    first, second, third = _runs(registry, caller, 3)
    a, b = _supervisor(registry, "host-a", monkeypatch), _supervisor(registry, "host-b", monkeypatch)
    try:
        grant = a.acquire(a.own(caller.scope, first), Demand(cpus=1), lambda message: None)
        assert grant is not None and grant.cpus == 1
        # host-a's one slot is taken; host-b's is free
        assert b.acquire(b.own(caller.scope, second), Demand(cpus=1), lambda m: None) is not None
        # a second run on host-b waits for host-b's slot, whatever host-a does
        waiting = b.own(caller.scope, third)
        waiter = threading.Thread(target=b.acquire, args=(waiting, Demand(cpus=1), lambda m: None))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not waiting.granted.is_set()
        hosts = {row["run_id"]: row["owner"]["host"] for row in registry.ledger.rows()}
        assert hosts == {first: "host-a", second: "host-b", third: "host-b"}
        registry.transition_run(caller.scope, second, RunStatus.ABORTED, message="test")
        b.release(second)
        waiter.join(10)
        assert waiting.granted.is_set()
    finally:
        a.close()
        b.close()


def test_a_hosts_runs_fail_once_its_lease_expired_and_not_before(registry, caller):
    running, queued, renewed, leaseless = _runs(registry, caller, 4)
    owners = {running: "host-a", queued: "host-a", renewed: "host-r", leaseless: "host-c"}
    registry.transition_run(caller.scope, running, RunStatus.RUNNING)
    for run_id, host in owners.items():
        registry.ledger.put(caller.scope, run_id, "queued" if run_id == queued else "running",
                            {"owner": {"kind": "server", "pid": 1, "start": 1, "host": host}})
    HostLease(registry, "host-a", ttl_s=10).beat(1000.0, force=True)
    HostLease(registry, "host-r", ttl_s=10).beat(1000.0, force=True)
    watcher = HostLease(registry, "host-b", ttl_s=10)

    assert watcher.reap(1009.9) == []          # host-a's lease still holds
    HostLease(registry, "host-r", ttl_s=10).beat(1009.0, force=True)
    assert sorted(watcher.reap(1010.5)) == sorted([running, queued])
    for run_id in (running, queued):
        task = run_task(registry, run_id, scope=caller.scope)
        assert task["state"] == "FAILED"
        assert task["message"].startswith("host host-a stopped answering: its host lease "
                                          "expired at "), task
        assert task["message"].endswith("host host-b failed the run")
    left = {row["run_id"] for row in registry.ledger.rows()}
    assert left == {renewed, leaseless}        # host-a's rows are freed, the others kept
    for run_id in (renewed, leaseless):
        assert run_task(registry, run_id, scope=caller.scope)["state"] == "PENDING"
    assert watcher.reap(1030.0) == [renewed]   # host-r stopped renewing too; host-c never leased
    # A watcher never fails its own host's runs, expired lease or not.
    assert HostLease(registry, "host-c", ttl_s=10).reap(5000.0) == []
