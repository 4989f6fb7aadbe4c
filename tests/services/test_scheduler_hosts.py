"""The scheduler's lease across hosts, with an injectable clock: a holder on another host is waited
out until its lease expires (its pid means nothing here), then taken over; each fire time after
the takeover still fires once, none twice."""
from __future__ import annotations

import pytest

from runtime.listing import Filter, ListQuery
from runtime.scheduler import LEASE_NAME, Scheduler
from runtime.schemas import ENGINE, EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE
from test_scheduler import Clock, at  # noqa: F401  (one injectable clock for the scheduler tests)

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL


def _every_ten_seconds(registry, caller) -> str:
    engine = registry.create(ENGINE, caller, {"name": "noop", "type": "Python", "artifacts": {
        "default": {"image": {"location": "noop"}}}})
    instance = registry.create(MLINSTANCE, caller, {"name": "i", "engineId": engine["id"]})
    return registry.create(EXPERIMENT, caller, {
        "name": "every ten seconds", "mlInstanceId": instance["id"],
        "template": {"schedule": {"cron": "* * * * * */10", "startTime": "2024-05-01T10:00:05Z",
                                  "endTime": "2024-05-01T10:00:45Z"}}})["id"]


def _dues(registry, caller) -> list[str]:
    page = registry.list(EXPERIMENT_RUN, caller, ListQuery(
        filters=(Filter("deleted", "==", False, "bool"),), order=(("created", False),), limit=100))
    return [run["description"].rpartition("(due ")[2].rstrip(")") for run in page.children]


def test_another_hosts_holder_is_waited_out_then_every_fire_after_it_comes_once(
        registry, caller, monkeypatch):
    clock = Clock("2024-05-01T10:00:00")
    _every_ten_seconds(registry, caller)
    monkeypatch.setenv("MLRUNTIME_HOST_ID", "host-a")
    a = Scheduler(registry, clock=clock, lease_ttl_s=15)
    monkeypatch.setenv("MLRUNTIME_HOST_ID", "host-b")
    b = Scheduler(registry, clock=clock, lease_ttl_s=15)
    assert a.tick() == 0 and b.tick() == 0 and a.leader and not b.leader
    clock.set("2024-05-01T10:00:10.200")
    assert a.tick() == 1
    # host-a stops answering here (SIGKILL): no release, its lease runs until 10:00:25.2
    assert registry.schedules.lease_holder(LEASE_NAME)[0].startswith("host-a:")
    clock.set("2024-05-01T10:00:25")
    assert b.tick() == 0 and not b.leader   # another host's live-looking pid is not judged here
    clock.set("2024-05-01T10:00:33")        # expired: 10:00:20 is late, 10:00:30 due too
    assert b.tick() == 1 and b.leader
    clock.set("2024-05-01T10:00:33.500")
    assert b.tick() == 1                    # 10:00:30, not lost behind the late one
    assert b.tick() == 0
    clock.set("2024-05-01T10:00:40.100")
    assert b.tick() == 1 and a.tick() == 0  # host-a back: the lease is b's now
    assert _dues(registry, caller) == [
        "2024-05-01T10:00:10.000Z", "2024-05-01T10:00:20.000Z", "2024-05-01T10:00:30.000Z",
        "2024-05-01T10:00:40.000Z"]
