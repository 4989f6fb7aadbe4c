"""Run supervision: who owns each live run, the FIFO queue by capacity, cancels across processes,
and reconciliation of the runs a dead server or CLI left behind.

Every live run that a process starts has a row in the registry's run ledger: its owner (host, pid,
process start time, kind), its phase (preparing, queued, running), its demand and grant, and its
worker (pid, process group, start time). The rows are shared by the server and CLI processes
through the registry, so they share one capacity accounting. Comparing process start times
(from /proc) means a reused pid is never taken for the process that had it before.

Several hosts may share one registry (runtime.hosts): each owner names its host, capacity is
counted per host (only this host's rows count against its cores and GPUs), a process judges only
its own host's processes, and a server fails another host's runs only once that host's lease
has expired.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .capacity import Capacity, Demand, Grant, QueueEntry, admit
from .hosts import HostLease, host_id, on_host
from .procs import (proc_start_ticks, same_process_alive,
                    stop_worker, worker_group_alive)
from .errors import Conflict, NotFound
from .schemas import RunStatus
from .store import Scope

log = logging.getLogger("runtime.supervisor")

POLL_S = 0.02            # how often a process with waiting runs looks at the ledger
IDLE_POLL_S = 0.25       # ... and one without
LIVENESS_CACHE_S = 1.0
KEPT_ON_ABORT = ("worker.log",)   # what a cancelled run's folder keeps

# --- processes --------------------------------------------------------------------------------

def identity(kind: str) -> dict[str, Any]:
    pid = os.getpid()
    return {"kind": kind, "pid": pid, "start": proc_start_ticks(pid), "host": host_id()}


def remove_partial_artifacts(run_dir: Path) -> None:
    """A cancelled run keeps its log and nothing else it wrote in its folder."""
    if not run_dir.is_dir():
        return
    for child in run_dir.iterdir():
        if child.name in KEPT_ON_ABORT:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            try:
                child.unlink()
            except OSError:
                pass


# --- the local side of one run ------------------------------------------------------------------

@dataclass
class RunControl:
    """A run this process owns: how to stop it, and why it was stopped."""

    scope: Scope
    run_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    granted: threading.Event = field(default_factory=threading.Event)
    reason: Optional[str] = None
    grant: Optional[Grant] = None
    demand: Optional[Demand] = None
    handle: Any = None
    guard: Optional["SignalGuard"] = None

    def request_stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()
        self.granted.set()   # a queued waiter wakes up and sees the stop

    def stopping(self) -> bool:
        """Whether the run should stop; a signal caught by a SignalGuard counts."""
        if not self.stop.is_set() and self.guard is not None and self.guard.reason:
            self.request_stop(self.guard.reason)
        return self.stop.is_set()


class SignalGuard:
    """Turns SIGINT and SIGTERM into a stop request for one run, from before the run exists to
    after it is recorded.

    The handler only notes the signal (a handler that took locks could deadlock the thread it
    interrupts); the run's waits poll it. A signal that arrives before the run is bound (while it
    is created, or while its worker starts) is kept and stops the run as soon as it is bound, so
    the worker can never outlive an interrupted CLI."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _note(self, signum: int, frame: Any) -> None:
        if self.reason is None:
            self.reason = f"interrupted ({signal.Signals(signum).name})"
        elif signum == signal.SIGINT:
            # A second Ctrl-C while something slow and uninterruptible runs (an environment
            # build): give the user their KeyboardInterrupt; the run still ends ABORTED.
            raise KeyboardInterrupt

    def bind(self, control: "RunControl") -> None:
        control.guard = self
        control.stopping()


class Supervisor:
    """The ledger of one registry, as seen by one process (`kind` server or cli)."""

    def __init__(self, registry: Any, capacity: Capacity, *, kind: str) -> None:
        self.registry = registry
        self.ledger = registry.ledger
        self.capacity = capacity
        self.kind = kind
        self.me = identity(kind)
        self.host = self.me["host"]
        self.hosts = HostLease(registry, self.host)
        self._controls: dict[str, RunControl] = {}
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._alive_cache: dict[tuple, tuple[float, bool]] = {}
        self._kicked = False
        self._waiting_notes: dict[str, str] = {}
        self.on_dispatch: Optional[Callable[[str, float], None]] = None   # benchmarks listen

    # -- ownership ------------------------------------------------------------------------------

    def own(self, scope: Scope, run_id: str, *, phase: str = "preparing",
            demand: Optional[Demand] = None) -> RunControl:
        fields: dict[str, Any] = {"owner": self.me, "queued_at": time.time()}
        if demand is not None:
            fields["demand"] = demand.to_record()
        self.ledger.put(scope, run_id, phase, fields)
        with self._lock:
            control = self._controls.get(run_id) or RunControl(scope, run_id)
            control.demand = demand or control.demand
            self._controls[run_id] = control
        self._ensure_thread()
        return control

    def control(self, run_id: str) -> Optional[RunControl]:
        with self._lock:
            return self._controls.get(run_id)

    def controls(self) -> list[RunControl]:
        with self._lock:
            return list(self._controls.values())

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._controls.pop(run_id, None)
            self._wake.notify_all()

    def attach_worker(self, control: RunControl, handle: Any) -> None:
        """Record the worker of a started run (its pid is its process group's id)."""
        control.handle = handle
        pid = getattr(handle, "pid", None)
        worker: dict[str, Any] = {"backend": getattr(handle, "backend_name", None)}
        if isinstance(pid, int):
            worker.update(pid=pid, pgid=getattr(handle, "pgid", pid),
                          start=getattr(handle, "start_ticks", None) or proc_start_ticks(pid))
        if hasattr(handle, "record"):
            try:
                worker["job"] = handle.record()
            except Exception:  # a description only
                pass
        self.ledger.put(control.scope, control.run_id, "running",
                              {"worker": worker,
                               "spec": str(getattr(handle, "spec_path", "") or "")})

    # -- the queue ------------------------------------------------------------------------------

    def enqueue(self, control: RunControl, demand: Demand) -> None:
        """Put the run in the queue (its place is its ledger row's order) without waiting."""
        if control.demand is not None:
            return
        control.demand = demand
        self.ledger.put(control.scope, control.run_id, "queued",
                              {"demand": demand.to_record(), "owner": self.me})
        self._kick()

    def acquire(self, control: RunControl, demand: Demand,
                note: Callable[[str], None]) -> Optional[Grant]:
        """Queue the run (unless it is queued already) and block until it may start (its
        Grant) or is stopped (None)."""
        self.enqueue(control, demand)
        last_note = None
        while not control.granted.wait(0.1) and not control.stopping():
            message = self._position(control.run_id)
            if message and message != last_note:
                try:
                    note(message)
                except (NotFound, Conflict):
                    pass
                last_note = message
        if control.stop.is_set() or control.grant is None:
            return None
        return control.grant

    def _position(self, run_id: str) -> Optional[str]:
        with self._lock:
            return self._waiting_notes.get(run_id)

    def _kick(self) -> None:
        with self._lock:
            self._kicked = True
            self._wake.notify_all()

    def release(self, run_id: str) -> None:
        """The run ended (its terminal transition removed its row): wake the queue."""
        self.forget(run_id)
        self._kick()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._loop, name=f"supervisor-{self.kind}",
                                                daemon=True)
                self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def watch_hosts(self) -> None:
        """A server: renew this host's lease now, and from here on in the loop; fail the runs of
        hosts whose lease expired (runtime.hosts)."""
        self.hosts.beat(force=True)
        self._ensure_thread()

    def _host_duties(self) -> None:
        """Renew the host's lease while serving or running runs; a server, at each renewal, also
        fails the runs of hosts whose lease expired."""
        serving = self.kind == "server"
        if (serving or self._controls) and self.hosts.beat() and serving:
            self.hosts.reap()

    def _queued_here(self) -> bool:
        return any(c.demand is not None and not c.granted.is_set() for c in self._controls.values())

    def _loop(self) -> None:
        version, last_full = None, 0.0
        while True:
            with self._lock:
                if self._closed:
                    return
                if not self._kicked:
                    self._wake.wait(POLL_S if self._queued_here() else IDLE_POLL_S)
                kicked, self._kicked = self._kicked, False
                if self._closed:
                    return
                idle = not self._controls
            try:
                self._host_duties()
            except Exception:  # a busy store: the next pass renews
                log.exception("The host lease could not be renewed")
            if idle:
                continue
            try:
                current = self.ledger.data_version()
                now = time.monotonic()
                # Another process's commit, our own kick, or (for owners that died silently) time.
                if kicked or current != version or now - last_full >= LIVENESS_CACHE_S:
                    version, last_full = current, now
                    self.dispatch_once()
            except Exception:  # the loop must outlive a busy or briefly broken store
                log.exception("The run queue could not be dispatched")
                time.sleep(0.2)

    def _alive(self, who: Optional[dict[str, Any]]) -> bool:
        """Whether an owner or worker identity names a live process (cached briefly)."""
        if not who or not isinstance(who.get("pid"), int):
            return False
        if who.get("host") not in (None, self.host):
            return True   # another host's process: not ours to judge
        if who.get("pid") == self.me["pid"] and who.get("start") == self.me["start"]:
            return True
        key = (who.get("pid"), who.get("start"))
        now = time.monotonic()
        cached = self._alive_cache.get(key)
        if cached is not None and now - cached[0] < LIVENESS_CACHE_S:
            return cached[1]
        alive = same_process_alive(who["pid"], who.get("start"))
        self._alive_cache[key] = (now, alive)
        return alive

    def dispatch_once(self) -> None:
        """One pass: relay cancel requests, then grant what may start (FIFO) and note positions."""
        with self._lock:
            local = dict(self._controls)
        if not local:
            return
        rows = self.ledger.rows()
        present = {row["run_id"] for row in rows}
        for row in rows:   # cancels asked by other processes
            control = local.get(row["run_id"])
            if control is not None and row.get("cancel") and not control.stop.is_set():
                control.request_stop(row["cancel"])
        waiting = {run_id: c for run_id, c in local.items()
                   if c.demand is not None and not c.granted.is_set()}
        for run_id, control in waiting.items():
            if run_id not in present:   # ended while queued (cancelled by another process)
                control.request_stop(control.reason or "the run ended while it was queued")
        if not any(c.demand is not None and not c.granted.is_set() for c in waiting.values()):
            return
        with self.registry.transaction():
            # Capacity is per host: another host's runs take nothing of this one's.
            rows = [row for row in self.ledger.rows() if on_host(row, self.host)]
            grants, queued = [], []
            for row in rows:
                owner_alive = self._alive(row.get("owner"))
                if row["phase"] == "running":
                    # A lease is held until the worker's whole process group is gone.
                    if (owner_alive or self._alive(row.get("worker"))
                            or worker_group_alive(row.get("worker"))):
                        grants.append(Grant.from_record(row.get("grant") or {}))
                elif row["phase"] == "queued" and owner_alive and row.get("demand"):
                    queued.append(QueueEntry(row["run_id"], row["seq"],
                                             Demand.from_record(row["demand"])))
            granted, notes = admit(queued, grants, self.capacity)
            mine = {run_id: grant for run_id, grant in granted.items() if run_id in waiting}
            for run_id, grant in mine.items():
                self.ledger.put(waiting[run_id].scope, run_id, "running",
                                      {"grant": grant.to_record(), "granted_at": time.time()})
        with self._lock:
            self._waiting_notes = notes
        for run_id, grant in mine.items():
            control = waiting[run_id]
            control.grant = grant
            control.granted.set()
            if self.on_dispatch is not None:
                self.on_dispatch(run_id, time.perf_counter())

    # -- cancel ---------------------------------------------------------------------------------

    def request_cancel(self, scope: Scope, run_id: str, reason: str, *,
                       grace_s: float = 3.0) -> None:
        """Ask the owner of a live run to stop it; stop it here when its owner is gone. A run that
        already ended is a Conflict."""
        state = self.registry.run_state(scope, run_id)
        if state is None:
            raise NotFound(f"Experiment run {run_id!r} not found")
        if state.is_terminal():
            raise Conflict(f"Experiment run {run_id} already ended {state.value}; there is "
                           "nothing to cancel")
        control = self.control(run_id)
        if control is not None:   # ours: the thread that runs it records the outcome
            control.request_stop(reason)
            return
        row = self.ledger.get(run_id)
        if row is not None and self._alive(row.get("owner")):
            self.ledger.put(scope, run_id, row["phase"], {"cancel": reason})
            return
        # Nobody watches it: stop its worker and record it here.
        note = ""
        worker = (row or {}).get("worker") or {}
        if worker.get("pid"):
            note = "; " + stop_worker(worker, grace_s)
        elif worker.get("job"):   # a cluster's job: its backend stops it
            from .backends import stop_recorded_job

            note = "; " + stop_recorded_job(worker["job"])
        try:
            self.registry.transition_run(scope, run_id, RunStatus.ABORTED, message=reason + note)
        except Conflict:
            return   # it ended meanwhile
        remove_partial_artifacts(self.registry.home.runs / run_id)


def describe_owner(row: Optional[dict[str, Any]]) -> str:
    if not row:
        return "none recorded"
    owner = row.get("owner") or {}
    worker = row.get("worker") or {}
    here = on_host(row, host_id())
    if not here:   # another host's pids mean nothing here
        alive = "another host"
    else:
        alive = "alive" if same_process_alive(owner.get("pid"), owner.get("start")) else "gone"
    text = (f"{owner.get('kind', '?')} pid {owner.get('pid')} on {owner.get('host')} ({alive})"
            f", phase {row.get('phase')}")
    if worker.get("pid") and here:
        alive = same_process_alive(worker["pid"], worker.get("start"))
        text += (f"; worker pid {worker['pid']} (group {worker.get('pgid')}, "
                 f"{'alive' if alive else 'gone'})")
    if row.get("grant"):
        text += f"; holds {json.dumps(row['grant'])}"
    return text
