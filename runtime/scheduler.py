"""The scheduler of `run serve`: MLServices' training and scoring schedules and Experiments'
`template.schedule` start runs through the same path as `POST /experiments/{id}/runs`.

Durable and single: each schedule's next fire time lives in the registry (store table
`schedules`); a fire is claimed by a compare-and-set on that time in the transaction that writes
its run, so a restart neither loses nor repeats a fire; a lease in the store lets one server of a
home fire. Fires missed while no server ran become one catch-up run, not a burst (an MLService's
tag `catchUp: skip` skips them instead). A scheduled training run that ends DONE publishes its
Model to its MLService (runtime.mlservices decides whether it is good enough).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .errors import MLRuntimeError
from .hosts import env_seconds, host_id
from .schedules import definitions, iso, next_fire, seconds

log = logging.getLogger("runtime.scheduler")

LEASE_NAME = "scheduler"
LEASE_TTL_S = 15.0      # another server takes over this long after the holder stops renewing
ENV_LEASE_TTL_S = "MLRUNTIME_SCHEDULER_TTL_S"   # ... unless this says otherwise
TICK_S = 1.0            # how often due schedules are looked for (fire latency is at most this)
MISSED_AFTER_S = 60.0   # a fire found this late was missed (the server was down)
FIRE_BATCH = 200        # due schedules fired per look-up


# -- the scheduler -----------------------------------------------------------------------------

class Scheduler:
    """Fires due schedules of one registry. A fire is a RunRequest handed to `runs.start` (a
    RunExecutor: the path of `POST .../runs`), with the fire's claim as the hook that commits in
    the transaction that writes its run. Without `runs` a fire only records its run (PENDING).
    `clock` (epoch seconds) is injectable for tests."""

    def __init__(self, registry: Any, *, runs: Any = None,
                 clock: Callable[[], float] = time.time, tick_s: float = TICK_S,
                 lease_ttl_s: Optional[float] = None) -> None:
        from .mlservices import ServiceDesk
        from .runs import RecordOnly

        self.registry = registry
        self.schedules = registry.schedules
        self.desk = ServiceDesk(registry)
        self.runs = runs if runs is not None else RecordOnly(registry)
        self.clock = clock
        self.tick_s = tick_s
        self.lease_ttl_s = (lease_ttl_s if lease_ttl_s is not None
                            else env_seconds(ENV_LEASE_TTL_S, LEASE_TTL_S))
        # The host is MLRUNTIME_HOST_ID's (runtime.hosts): a pid is judged only on its own host.
        self.holder = f"{host_id()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self._renewed_s = 0.0
        self.fired = 0
        self._fingerprint: Any = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- the loop -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        try:
            self.schedules.lease_release(LEASE_NAME, self.holder)
        except MLRuntimeError:
            pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:   # a bad schedule or a busy store must not end the scheduler
                log.exception("Scheduler tick failed")
            # Wake at the next whole tick, or at the next fire if it is sooner.
            self._stop.wait(self._sleep_s())

    def _sleep_s(self) -> float:
        if not self.leader:
            return self.tick_s
        upcoming = seconds(self.schedules.next_fire())
        if upcoming is None:
            return self.tick_s
        return max(0.01, min(self.tick_s, upcoming - self.clock()))

    def tick(self) -> int:
        """One pass: hold the lease, follow definition changes, fire what is due, publish what
        scheduled training runs produced. Returns the number of runs started."""
        schedules = self.schedules
        now = self.clock()
        if not self.leader or now - self._renewed_s >= self.lease_ttl_s / 3:
            self.leader = schedules.lease_acquire(LEASE_NAME, self.holder, self.lease_ttl_s, now) \
                or self._take_from_dead_holder(now)
            self._renewed_s = now
        if not self.leader:
            return 0
        fingerprint = schedules.fingerprint()
        if fingerprint != self._fingerprint:
            self.sync(now)
            self._fingerprint = fingerprint
        started = 0
        while not self._stop.is_set():
            due = schedules.due(iso(now), FIRE_BATCH)
            if not due:
                break
            for row in due:
                started += self.fire(row, now)
            if len(due) < FIRE_BATCH:
                break
        self.desk.settle_training_runs()
        self.fired += started
        return started

    def _take_from_dead_holder(self, now: float) -> bool:
        """A server of this host that died holding the lease (SIGKILL) does not make the next
        one wait for the lease to expire; another host's holder is waited out."""
        held = self.schedules.lease_holder(LEASE_NAME)
        if held is None:
            return False
        parts = held[0].rsplit(":", 2)   # host:pid:nonce (a host id may hold a colon)
        if len(parts) != 3:
            return False
        host, pid, _ = parts
        if host != host_id() or not pid.isdigit() or _alive(int(pid)):
            return False
        log.info("Taking the scheduler lease from %s (that process is gone)", held[0])
        return self.schedules.lease_take(LEASE_NAME, held[0], self.holder, self.lease_ttl_s, now)

    def sync(self, now: float) -> None:
        """Schedule rows follow their definitions: a new or changed schedule's next fire is the
        first after its document was written (never a fire for the time before); a removed one
        goes."""
        schedules = self.schedules
        existing = {row["id"]: row for row in schedules.rows()}
        seen = set()
        for scope, kind, doc in schedules.scheduled_documents():
            for schedule_id, task, spec in definitions(kind, doc):
                seen.add(schedule_id)
                row = existing.get(schedule_id)
                if row is not None and row["spec"] == spec:
                    continue
                extra = dict(row["doc"]) if row else {}
                # From when it was written: a fire due between the write and this sync (a server
                # stopped in between) is caught up, not lost.
                written = seconds(doc.get("updated")) or now
                try:
                    upcoming = next_fire(spec, min(written, now))
                    extra.pop("error", None)
                except (MLRuntimeError, ValueError, KeyError) as exc:   # stored before checks
                    upcoming, extra["error"] = None, getattr(exc, "detail", str(exc))
                schedules.put(scope, {
                    "id": schedule_id, "owner": kind, "owner_id": doc["id"], "task": task,
                    "spec": spec, "next_fire": None if upcoming is None else iso(upcoming),
                    "last_fire": row["last_fire"] if row else None,
                    "last_run_id": row["last_run_id"] if row else None, "doc": extra})
        gone = [i for i in existing if i not in seen]
        if gone:
            schedules.delete(gone)

    def fire(self, row: dict[str, Any], now: float) -> int:
        """Start the run of one due schedule (or skip it: paused, or a missed fire with
        `catchUp: skip`), and move its next fire on: to the one after it when it is only late
        (another server took the lease over, a busy store), so each of the fires after it still
        comes once; past now when it was missed (no server ran): missed fires become one run."""
        from .registry import Scope

        schedules = self.schedules
        scope = Scope(row["org"], row["sandbox"])
        due = row["next_fire"]
        run_now = bool(row["doc"].get("runNow"))
        late_s = 0.0 if run_now else now - (seconds(due) or now)
        missed = late_s > MISSED_AFTER_S
        try:
            upcoming = next_fire(row["spec"], now if run_now or missed else (seconds(due) or now))
        except (MLRuntimeError, ValueError, KeyError) as exc:
            schedules.advance(row["id"], due, next_fire=None,
                                   doc={**row["doc"], "error": getattr(exc, "detail", str(exc))})
            return 0
        following = None if upcoming is None else iso(upcoming)
        try:
            plan = self.desk.fire_plan(scope, row, due, missed)
        except MLRuntimeError as exc:   # its owner was deleted, or its Experiment cannot be made
            schedules.advance(row["id"], due, next_fire=following,
                                   doc={**row["doc"], "error": exc.detail, "skipped": due})
            return 0
        if plan.skip:
            schedules.advance(row["id"], due, next_fire=following,
                                   doc={**row["doc"], "skipped": due, "skipReason": plan.skip})
            return 0
        from .runs import RunRequest

        doc = {k: v for k, v in row["doc"].items() if k not in ("error", "runNow")}
        doc["fires"] = int(doc.get("fires") or 0) + 1
        if missed:
            doc["caughtUp"] = due
        claim = _FireClaim(self, scope, row, due, following, doc)
        try:
            run = self.runs.start(plan.caller, RunRequest.from_body(plan.experiment_id, plan.body),
                                  claim=claim)
        except MLRuntimeError as exc:   # it can never start on this host: say so, go on
            schedules.advance(row["id"], due, next_fire=following,
                              doc={**row["doc"], "error": exc.detail, "skipped": due})
            return 0
        if run is None:
            return 0   # another process fired it
        log.info("Schedule %s fired run %s (%s, due %s)", row["id"], run["id"], row["task"], due)
        return 1


@dataclass
class _FireClaim:
    """A fire's claim, committed with its run (runs.Claim): the compare-and-set on the
    schedule's next fire time, then the run it started."""

    scheduler: Scheduler
    scope: Any
    row: dict[str, Any]
    due: Optional[str]
    following: Optional[str]
    doc: dict[str, Any]

    def take(self) -> bool:
        return self.scheduler.schedules.advance(self.row["id"], self.due,
                                                next_fire=self.following, last_fire=self.due)

    def taken(self, run: dict[str, Any]) -> None:
        self.scheduler.schedules.update(self.row["id"], last_run_id=run["id"], doc=self.doc)
        self.scheduler.desk.fired(self.scope, self.row, run)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (a killed child its parent has not reaped yet) is gone for this purpose.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True

