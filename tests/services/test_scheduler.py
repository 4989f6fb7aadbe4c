"""The scheduler against a real registry file with an injectable clock: when schedules fire, that
a restart or a second scheduler never fires twice, missed fires, pause and resume, run now."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from runtime.errors import ValidationFailed
from runtime.listing import Filter, ListQuery
from runtime.mlservices import ServiceDesk
from runtime.scheduler import Scheduler, iso, next_fire
from runtime.schemas import ENGINE, EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE, MLSERVICE

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, text: str) -> None:
        self.now = at(text)

    def __call__(self) -> float:
        return self.now

    def set(self, text: str) -> None:
        self.now = at(text)


@pytest.fixture
def instance(registry, caller):
    engine = registry.create(ENGINE, caller, {"name": "noop", "type": "Python",
                                              "artifacts": {"default": {"image": {"location": "noop"}}}})
    return registry.create(MLINSTANCE, caller, {"name": "noop instance", "engineId": engine["id"]})


def service(registry, caller, instance, **fields):
    body = {"name": "nightly", "mlInstanceId": instance["id"], "trainingDataSetId": "train.csv",
            "trainingTimeframe": 60, "scoringDataSetId": "score.csv", "scoringTimeframe": 30,
            "trainingSchedule": {"cron": "0 * * * *"}, "scoringSchedule": {"cron": "30 * * * *"},
            **fields}
    return registry.create(MLSERVICE, caller, body)


def runs(registry, caller):
    page = registry.list(EXPERIMENT_RUN, caller, ListQuery(
        filters=(Filter("deleted", "==", False, "bool"),), order=(("created", False),), limit=100))
    return page.children


def test_cron_times_are_utc_unless_the_schedule_names_a_zone():
    after = at("2024-05-01T10:15:00")
    assert iso(next_fire({"cron": "0 * * * *"}, after)) == "2024-05-01T11:00:00.000Z"
    # 02:00 in Paris (summer time, UTC+2) is midnight UTC
    paris = next_fire({"cron": "0 2 * * *", "timezone": "Europe/Paris"}, after)
    assert iso(paris) == "2024-05-02T00:00:00.000Z"
    assert iso(next_fire({"cron": "0 * * * *", "startTime": "2024-06-01T00:00:00Z"}, after)) \
        == "2024-06-01T00:00:00.000Z"
    assert next_fire({"cron": "0 * * * *", "endTime": "2024-05-01T10:30:00Z"}, after) is None


def test_a_schedule_fires_at_its_next_time_only_and_starts_the_runs_it_names(
        registry, caller, instance):
    clock = Clock("2024-05-01T10:15:00")
    svc = service(registry, caller, instance)
    scheduler = Scheduler(registry, clock=clock)
    assert scheduler.tick() == 0   # created at 10:15: nothing for the hours before
    status = ServiceDesk(registry).status(caller.scope, svc)
    assert status["schedules"]["trainingSchedule"]["nextFire"] == "2024-05-01T11:00:00.000Z"
    assert status["schedules"]["scoringSchedule"]["nextFire"] == "2024-05-01T10:30:00.000Z"

    clock.set("2024-05-01T10:30:00.400")
    assert scheduler.tick() == 1
    assert scheduler.tick() == 0   # the same fire never twice
    clock.set("2024-05-01T11:00:00.200")
    assert scheduler.tick() == 1
    score, train = runs(registry, caller)
    assert (score["mode"], train["mode"]) == ("score", "train")
    tasks = registry.get(EXPERIMENT_RUN, caller, train["id"])["tasks"]
    params = {p["key"]: p["value"] for p in tasks[0]["parameters"]}
    assert params == {"trainingDataSetId": "train.csv", "timeframe": "60", "mlServiceId": svc["id"]}
    experiment = registry.get(EXPERIMENT, caller, train["experimentId"])
    assert experiment["createdByService"] is True and experiment["mlInstanceId"] == instance["id"]
    status = ServiceDesk(registry).status(caller.scope, svc)
    assert status["schedules"]["trainingSchedule"]["lastRunId"] == train["id"]
    assert status["schedules"]["trainingSchedule"]["nextFire"] == "2024-05-01T12:00:00.000Z"
    assert [r["runId"] for r in status["recentRuns"]] == [train["id"], score["id"]]


def test_a_restarted_scheduler_neither_repeats_nor_loses_a_fire(registry, caller, instance):
    clock = Clock("2024-05-01T10:15:00")
    service(registry, caller, instance, scoringSchedule={})
    first = Scheduler(registry, clock=clock)
    first.tick()
    clock.set("2024-05-01T11:00:00.100")
    assert first.tick() == 1
    first.stop()   # a restart: a new scheduler on the same store
    again = Scheduler(registry, clock=clock)
    clock.set("2024-05-01T11:00:00.900")
    assert again.tick() == 0
    clock.set("2024-05-01T12:00:00.300")   # the next fire is not lost
    assert again.tick() == 1
    assert len(runs(registry, caller)) == 2


def test_fires_missed_while_no_server_ran_are_one_catch_up_run_or_skipped(
        registry, caller, instance):
    clock = Clock("2024-05-01T10:15:00")
    one = service(registry, caller, instance, scoringSchedule={})
    skip = service(registry, caller, instance, name="skips", scoringSchedule={},
                   tags={"catchUp": "skip"})
    Scheduler(registry, clock=clock).tick()
    clock.set("2024-05-01T15:20:00")   # five fires missed (11:00 to 15:00)
    later = Scheduler(registry, clock=clock)
    assert later.tick() == 1
    desk = ServiceDesk(registry)
    caught = desk.status(caller.scope, one)["schedules"]["trainingSchedule"]
    assert caught["caughtUp"] == "2024-05-01T11:00:00.000Z" and caught["fires"] == 1
    assert caught["nextFire"] == "2024-05-01T16:00:00.000Z"
    skipped = desk.status(caller.scope, skip)["schedules"]["trainingSchedule"]
    assert skipped["fires"] == 0 and "catchUp: skip" in skipped["skipReason"]
    assert later.tick() == 0


def test_two_schedulers_on_one_store_fire_once(registry, caller, instance):
    clock = Clock("2024-05-01T10:15:00")
    service(registry, caller, instance, scoringSchedule={})
    a, b = Scheduler(registry, clock=clock), Scheduler(registry, clock=clock)
    a.tick()
    b.tick()
    assert a.leader and not b.leader
    clock.set("2024-05-01T11:00:00.500")
    assert b.tick() + a.tick() == 1
    # Even if both believed they led (a lease expired mid-tick), the claim is a compare-and-set.
    b.leader, b._renewed_s = True, clock.now
    clock.set("2024-05-01T12:00:00.500")
    due = registry.store.schedule_due(iso(clock.now))
    assert sum(s.fire(row, clock.now) for row in due for s in (a, b)) == 1


def test_pause_skips_fires_and_resume_goes_on_from_the_next_one(registry, caller, instance):
    clock = Clock("2024-05-01T10:15:00")
    svc = service(registry, caller, instance, scoringSchedule={})
    scheduler = Scheduler(registry, clock=clock)
    scheduler.tick()
    desk = ServiceDesk(registry)
    assert desk.pause(caller, svc["id"])["status"]["paused"] is True
    clock.set("2024-05-01T11:00:00.100")
    assert scheduler.tick() == 0
    assert desk.status(caller.scope, svc)["schedules"]["trainingSchedule"]["skipReason"] == "paused"
    desk.resume(caller, svc["id"])
    clock.set("2024-05-01T11:30:00")
    assert scheduler.tick() == 0   # 11:00 is not made up
    clock.set("2024-05-01T12:00:00.100")
    assert scheduler.tick() == 1


def test_run_now_fires_at_the_next_tick_and_keeps_the_regular_fire(registry, caller, instance):
    clock = Clock("2024-05-01T10:15:00")
    svc = service(registry, caller, instance)
    scheduler = Scheduler(registry, clock=clock)
    desk = ServiceDesk(registry)
    desk.run_now(caller, svc["id"], "score")   # before any tick saw the service: still works
    clock.set("2024-05-01T10:20:00")
    assert scheduler.tick() == 1
    assert runs(registry, caller)[0]["mode"] == "score"
    assert "(run now)" in runs(registry, caller)[0]["description"]
    status = desk.status(caller.scope, svc)["schedules"]["scoringSchedule"]
    assert status["nextFire"] == "2024-05-01T10:30:00.000Z"
    with pytest.raises(ValidationFailed, match="train or score"):
        desk.run_now(caller, svc["id"], "evaluate")


def test_changed_and_deleted_schedules_are_followed(registry, caller, instance):
    clock = Clock("2024-05-01T10:15:00")
    svc = service(registry, caller, instance, scoringSchedule={})
    scheduler = Scheduler(registry, clock=clock)
    scheduler.tick()
    body = {k: v for k, v in svc.items() if k not in ("id", "created", "updated", "createdBy")}
    registry.replace(MLSERVICE, caller, svc["id"], {**body, "trainingSchedule": {"cron": "*/5 * * * *"}})
    clock.set("2024-05-01T10:16:00")
    scheduler.tick()
    assert registry.store.schedule_rows()[0]["next_fire"] == "2024-05-01T10:20:00.000Z"
    registry.delete(MLSERVICE, caller, svc["id"])
    clock.set("2024-05-01T10:20:00.100")
    assert scheduler.tick() == 0 and registry.store.schedule_rows() == []


def test_an_experiment_template_schedule_starts_its_runs(registry, caller, instance):
    clock = Clock("2024-05-01T10:15:00")
    experiment = registry.create(EXPERIMENT, caller, {
        "name": "weekly", "mlInstanceId": instance["id"],
        "template": {"schedule": {"cron": "0 3 * * 1"}}})   # Mondays 03:00 UTC
    scheduler = Scheduler(registry, clock=clock)
    scheduler.tick()
    clock.set("2024-05-06T03:00:00.500")
    assert scheduler.tick() == 1
    (run,) = runs(registry, caller)
    assert (run["experimentId"], run["mode"]) == (experiment["id"], "train")


def test_bad_schedules_are_refused_when_written(registry, caller, instance):
    with pytest.raises(ValidationFailed, match="trainingSchedule: cron 'every day' is not a cron"):
        service(registry, caller, instance, trainingSchedule={"cron": "every day"})
    with pytest.raises(ValidationFailed, match="endTime .* is not after its startTime"):
        service(registry, caller, instance, scoringSchedule={
            "cron": "@daily", "startTime": "2024-02-01T00:00:00Z", "endTime": "2024-01-01T00:00:00Z"})
    assert runs(registry, caller) == [] and registry.store.schedule_rows() == []
