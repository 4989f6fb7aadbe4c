"""Run supervision: who owns each live run, the FIFO queue by capacity, cancels across processes,
and reconciliation of the runs a dead server or CLI left behind.

Every live run that a process starts has a row in the registry's run ledger: its owner (host, pid,
process start time, kind), its phase (preparing, queued, running), its demand and grant, and its
worker (pid, process group, start time). The rows are shared by the server and CLI processes
through the registry file, so they share one capacity accounting. Comparing process start times
(from /proc) means a reused pid is never taken for the process that had it before.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .capacity import Capacity, Demand, Grant, QueueEntry, admit
from .procs import proc_start_ticks
from .errors import Conflict, NotFound
from .schemas import RunStatus
from .store import Scope

log = logging.getLogger("runtime.supervisor")

POLL_S = 0.02            # how often a process with waiting runs looks at the ledger
IDLE_POLL_S = 0.25       # ... and one without
LIVENESS_CACHE_S = 1.0
KEPT_ON_ABORT = ("worker.log",)   # what a cancelled run's folder keeps

SERVER_GONE = "the server stopped while the run was running; worker exited without a result"


def _cli_gone(pid: Any) -> str:
    return (f"the CLI process (pid {pid}) that ran it stopped while the run was running; worker "
            "exited without a result")


# --- processes --------------------------------------------------------------------------------

HOST = socket.gethostname()


def identity(kind: str) -> dict[str, Any]:
    pid = os.getpid()
    return {"kind": kind, "pid": pid, "start": proc_start_ticks(pid), "host": HOST}


def same_process_alive(pid: Any, start: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    now = proc_start_ticks(pid)
    return now is not None and (start is None or now == start)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, read from /proc."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                data = fh.read()
            fields = data[data.rindex(b")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != b"Z":
                members.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return members


def worker_group_alive(worker: Optional[dict[str, Any]]) -> bool:
    """Whether anything of a recorded worker's process group still runs (the worker itself, or
    children it left, which may hold GPU memory). A pid now naming another process means the
    old group is gone: Linux never reuses an id while a group of that id exists."""
    if not worker or not isinstance(worker.get("pid"), int):
        return False
    pid, pgid = worker["pid"], worker.get("pgid") or worker["pid"]
    now = proc_start_ticks(pid)
    if now is not None and worker.get("start") is not None and now != worker["start"]:
        return False
    return group_alive(pgid) and bool(group_members(pgid))


def kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_worker(worker: dict[str, Any], grace_s: float) -> str:
    """SIGTERM to a recorded worker's group, SIGKILL after `grace_s`; says what it did. Does
    nothing to a pid that now names another process (start times differ)."""
    pid, pgid = worker.get("pid"), worker.get("pgid") or worker.get("pid")
    if not same_process_alive(pid, worker.get("start")):
        if pgid and group_alive(pgid) and worker.get("start") is not None:
            # The leader is gone but its group lives on: the engine's children.
            kill_group(pgid, signal.SIGKILL)
            return "worker's leftover process group killed"
        return "worker already gone"
    kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (group_alive(pgid)
                                           and proc_start_ticks(pid) is not None):
        time.sleep(0.02)
    if group_alive(pgid):
        kill_group(pgid, signal.SIGKILL)
        return f"worker group killed (SIGKILL) after a {grace_s:g} s grace period"
    return "worker group stopped (SIGTERM)"


def find_worker(spec_path: Path) -> Optional[dict[str, Any]]:
    """A live worker process started on `spec_path` (its command line names it), for a run whose
    owner died between starting the worker and recording it. A worker forked from a warm parent
    (whose command line is the parent's) is found by the pid file it writes beside the spec."""
    from .forkserver import WORKER_PID_FILE

    try:
        pid_text, _, start_text = (Path(spec_path).parent / WORKER_PID_FILE).read_text().partition(" ")
        pid, start = int(pid_text), int(start_text)
    except (OSError, ValueError):
        pass
    else:
        if same_process_alive(pid, start):
            return {"pid": pid, "pgid": pid, "start": start}
    needle = str(spec_path).encode()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if needle in cmdline and b"runtime.worker" in cmdline:
            pid = int(entry)
            try:
                pgid = os.getpgid(pid)
            except OSError:
                continue
            return {"pid": pid, "pgid": pgid, "start": proc_start_ticks(pid)}
    return None


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
        self.store = registry.store
        self.capacity = capacity
        self.kind = kind
        self.me = identity(kind)
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
        self.store.ledger_put(scope, run_id, phase, fields)
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
        self.store.ledger_put(control.scope, control.run_id, "running",
                              {"worker": worker,
                               "spec": str(getattr(handle, "spec_path", "") or "")})

    # -- the queue ------------------------------------------------------------------------------

    def enqueue(self, control: RunControl, demand: Demand) -> None:
        """Put the run in the queue (its place is its ledger row's order) without waiting."""
        if control.demand is not None:
            return
        control.demand = demand
        self.store.ledger_put(control.scope, control.run_id, "queued",
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
            if idle:
                continue
            try:
                current = self.store.data_version()
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
        if who.get("host") not in (None, HOST):
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
        rows = self.store.ledger_rows()
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
        with self.store.transaction():
            rows = self.store.ledger_rows()
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
                self.store.ledger_put(waiting[run_id].scope, run_id, "running",
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
        status = self.store.get_run_status(scope, run_id)
        if status is None:
            raise NotFound(f"Experiment run {run_id!r} not found")
        state = RunStatus(status["status"]["tasks"][0]["state"])
        if state.is_terminal():
            raise Conflict(f"Experiment run {run_id} already ended {state.value}; there is "
                           "nothing to cancel")
        control = self.control(run_id)
        if control is not None:   # ours: the thread that runs it records the outcome
            control.request_stop(reason)
            return
        row = self.store.ledger_get(run_id)
        if row is not None and self._alive(row.get("owner")):
            self.store.ledger_put(scope, run_id, row["phase"], {"cancel": reason})
            return
        # Nobody watches it: stop its worker and record it here.
        note = ""
        worker = (row or {}).get("worker") or {}
        if worker.get("pid"):
            note = "; " + stop_worker(worker, grace_s)
        elif worker.get("job", {}).get("name") == "ray":
            note = "; " + _stop_ray_job(worker["job"])
        try:
            self.registry.transition_run(scope, run_id, RunStatus.ABORTED, message=reason + note)
        except Conflict:
            return   # it ended meanwhile
        remove_partial_artifacts(self.registry.home.runs / run_id)


def _stop_ray_job(job: dict[str, Any]) -> str:
    try:
        from .backends.ray import stop_job

        stop_job(job["address"], job["submissionId"])
        return f"Ray job {job['submissionId']} stopped"
    except Exception as exc:  # the cluster may be gone: the run still ends
        return f"Ray job {job.get('submissionId')} could not be stopped: {exc}"


class AdoptedWorker:
    """A run handle for a worker this process did not start (it cannot wait on it): its process
    is polled through /proc, its outcome read from the run folder when it is gone."""

    def __init__(self, run_id: str, worker: dict[str, Any], run_dir: Path,
                 grace_s: float = 3.0) -> None:
        self.run_id = run_id
        self.pid = worker["pid"]
        self.pgid = worker.get("pgid") or worker["pid"]
        self.start_ticks = worker.get("start")
        self._worker = worker
        self._run_dir = run_dir
        self._grace_s = grace_s
        self._cancelled: Optional[str] = None

    def _alive(self) -> bool:
        return same_process_alive(self.pid, self.start_ticks)

    def wait(self, timeout: Optional[float] = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._alive():
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} still running after {timeout} s")
            time.sleep(0.05)
        return self._judge()

    def status(self) -> RunStatus:
        return RunStatus.RUNNING if self._alive() else self._judge().state

    def cancel(self) -> None:
        if self._cancelled is None:
            self._cancelled = stop_worker(self._worker, self._grace_s)

    def _judge(self) -> Any:
        from .backends import RESULT_FILE, Outcome, log_tail, read_result

        result = read_result(self._run_dir / RESULT_FILE)
        tail = log_tail(self._run_dir / "worker.log", 40)
        if self._cancelled is not None:
            return Outcome(RunStatus.ABORTED, result, self._cancelled, tail, None)
        if result is not None and result.get("state") == RunStatus.DONE.value:
            return Outcome(RunStatus.DONE, result, None, tail, None)
        if result is not None and result.get("error"):
            error = result["error"]
            return Outcome(RunStatus.FAILED, result, f"{error.get('type')}: {error.get('message')}",
                           tail, None)
        return Outcome(RunStatus.FAILED, result, "the adopted worker exited without a result",
                       tail, None)


# --- reconciliation -----------------------------------------------------------------------------

@dataclass
class Reconciliation:
    adopted: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)    # results found on disk
    failed: list[str] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)        # owned by a live process

    def total(self) -> int:
        return (len(self.adopted) + len(self.recorded) + len(self.failed) + len(self.resubmitted)
                + len(self.left))

    def summary(self) -> str:
        return (f"reconciled runs: {len(self.adopted)} adopted, {len(self.recorded)} recorded "
                f"from their result file, {len(self.failed)} failed, {len(self.resubmitted)} "
                f"queued again, {len(self.left)} left to their live owner")


def reconcile(executor: Any, *, resubmit: bool = True) -> Reconciliation:
    """Settle every live run that no live process owns (see the module's docstring)."""
    from .backends import RESULT_FILE

    registry = executor.registry
    store = registry.store
    sup = executor.supervisor
    result = Reconciliation()
    rows = {row["run_id"]: row for row in store.ledger_rows()}
    runs_dir = str(registry.home.runs)
    to_fail: list[tuple[Scope, str, str]] = []
    to_record: list[tuple[Scope, str]] = []
    to_adopt: list[tuple[Scope, str, dict[str, Any]]] = []
    to_resubmit: list[tuple[Scope, str]] = []
    for run_id, org, sandbox, state_text in store.live_run_states():
        scope, state = Scope(org, sandbox), RunStatus(state_text)
        row = rows.get(run_id)
        owner = (row or {}).get("owner") or {}
        if owner.get("pid") == sup.me["pid"] and owner.get("start") == sup.me["start"]:
            continue   # ours already
        if owner and (owner.get("host") not in (None, HOST) or sup._alive(owner)):
            result.left.append(run_id)
            continue
        gone = _cli_gone(owner.get("pid")) if owner.get("kind") == "cli" else SERVER_GONE
        has_result = os.path.isfile(os.path.join(runs_dir, run_id, RESULT_FILE))
        worker = (row or {}).get("worker") or {}
        if row is not None and row["phase"] == "running":
            if not worker.get("pid") and row.get("spec"):
                worker = find_worker(Path(row["spec"])) or worker
            if (worker.get("pid") and not same_process_alive(worker["pid"], worker.get("start"))
                    and worker_group_alive(worker)):
                # The worker died but left children (which may hold GPU memory): they go
                # before the run's lease is freed.
                kill_group(worker.get("pgid") or worker["pid"], signal.SIGKILL)
                _wait_gone(worker, 5.0)
            if worker.get("pid") and same_process_alive(worker["pid"], worker.get("start")):
                to_adopt.append((scope, run_id, worker))
            elif has_result:
                to_record.append((scope, run_id))
            elif worker.get("job", {}).get("name") == "ray":
                # Its artifacts come back only to the process that waited on the job: stop it.
                to_fail.append((scope, run_id, f"{gone.split(';')[0]}; "
                                               + _stop_ray_job(worker["job"])))
            else:
                to_fail.append((scope, run_id, gone))
        elif state is RunStatus.RUNNING:
            if has_result:
                to_record.append((scope, run_id))
            else:
                to_fail.append((scope, run_id, gone if row else
                                "no process owns this run any more (its owner left no record); "
                                "worker exited without a result"))
        elif row is None and _just_created(store, scope, run_id):
            # A process created it a moment ago and is about to claim it: not ours to take.
            result.left.append(run_id)
        elif resubmit and owner.get("kind") != "cli":
            to_resubmit.append((scope, run_id))
        else:
            to_fail.append((scope, run_id, f"the CLI process (pid {owner.get('pid')}) that queued "
                                            "the run stopped before it started"))
    if to_fail:
        with store.transaction():   # one write for all: a thousand stale runs in milliseconds
            for scope, run_id, reason in to_fail:
                try:
                    registry.transition_run(scope, run_id, RunStatus.FAILED, message=reason,
                                            scrub=False)
                except (Conflict, NotFound):
                    continue
                result.failed.append(run_id)
    for scope, run_id in to_record:
        executor.record_unwatched(scope, run_id, worker=None)
        result.recorded.append(run_id)
    for scope, run_id, worker in to_adopt:
        executor.adopt(scope, run_id, worker)
        result.adopted.append(run_id)
    for scope, run_id in to_resubmit:
        executor.resubmit(scope, run_id)
        result.resubmitted.append(run_id)
    # Rows of runs that ended without clearing them (nothing live refers to them) go.
    live = {run_id for run_id, *_ in store.live_run_states()}
    stale = [run_id for run_id in rows if run_id not in live]
    if stale:
        store.ledger_delete(stale)
    return result


def _wait_gone(worker: dict[str, Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while worker_group_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.01)


UNCLAIMED_GRACE_S = 30.0


def _just_created(store: Any, scope: Scope, run_id: str) -> bool:
    from datetime import datetime, timezone

    from .schemas import EXPERIMENT_RUN

    run = store.get(EXPERIMENT_RUN, scope, run_id)
    if run is None:
        return False
    created = datetime.strptime(run["created"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - created).total_seconds() < UNCLAIMED_GRACE_S


def describe_owner(row: Optional[dict[str, Any]]) -> str:
    if not row:
        return "none recorded"
    owner = row.get("owner") or {}
    worker = row.get("worker") or {}
    text = (f"{owner.get('kind', '?')} pid {owner.get('pid')} on {owner.get('host')} "
            f"({'alive' if same_process_alive(owner.get('pid'), owner.get('start')) else 'gone'})"
            f", phase {row.get('phase')}")
    if worker.get("pid"):
        alive = same_process_alive(worker["pid"], worker.get("start"))
        text += (f"; worker pid {worker['pid']} (group {worker.get('pgid')}, "
                 f"{'alive' if alive else 'gone'})")
    if row.get("grant"):
        text += f"; holds {json.dumps(row['grant'])}"
    return text
