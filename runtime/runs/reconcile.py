"""Reconciliation: when a server (or a CLI run) starts, every live run that no live process owns is
settled. A worker still running is adopted (followed until it ends, then recorded); a worker that
ended left its result file, which is recorded; a run that never got a worker (still PENDING: it is
RUNNING only once its worker exists) is queued again by a server; the rest FAIL, saying why. Runs another host owns are left to it
(runtime.hosts fails them once that host's lease expires). When this host's own lease had expired,
workers still running in its home for runs another host failed meanwhile are stopped.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import Conflict, MLRuntimeError, NotFound, StoreError
from ..procs import (WORKER_PID_FILE, find_worker, kill_group, proc_start_ticks,
                     same_process_alive, stop_worker, worker_group_alive)
from ..schemas import RunStatus
from ..store import Scope
from .attempt import wait_outcome
from .record import SERVER_GONE, Recorder, caller_of

log = logging.getLogger("runtime.runs")


def _cli_gone(pid: Any) -> str:
    return (f"the CLI process (pid {pid}) that ran it stopped while the run was running; worker "
            "exited without a result")


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
        from ..backends import judge

        return judge(self._run_dir, self._run_dir / "worker.log", cancelled=self._cancelled,
                     gone="the adopted worker exited without a result")


# --- reconciliation -----------------------------------------------------------------------------

@dataclass
class Reconciliation:
    adopted: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)    # results found on disk
    failed: list[str] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)        # owned by a live process
    stopped: list[str] = field(default_factory=list)     # orphaned workers of ended runs

    def total(self) -> int:
        return (len(self.adopted) + len(self.recorded) + len(self.failed) + len(self.resubmitted)
                + len(self.left) + len(self.stopped))

    def summary(self) -> str:
        text = (f"reconciled runs: {len(self.adopted)} adopted, {len(self.recorded)} recorded "
                f"from their result file, {len(self.failed)} failed, {len(self.resubmitted)} "
                f"queued again, {len(self.left)} left to their live owner")
        if self.stopped:
            text += (f"; {len(self.stopped)} worker(s) of runs another host failed while this "
                     "host was silent stopped")
        return text


def reconcile(recorder: Recorder, supervisor: Any, *,
              resubmit: Optional[Callable[[Scope, str], None]] = None,
              track: Callable[[str, threading.Thread], None] = lambda run_id, thread: None,
              ) -> Reconciliation:
    """Settle every live run that no live process owns (see the module's docstring)."""
    from ..backends import RESULT_FILE, SPEC_FILE

    registry = recorder.registry
    sup = supervisor
    # This host's lease first: another host's server must not fail the runs adopted below.
    lapsed = sup.hosts.lapsed()
    sup.watch_hosts()
    result = Reconciliation()
    rows = {row["run_id"]: row for row in registry.ledger.rows()}
    runs_dir = str(registry.home.runs)
    to_fail: list[tuple[Scope, str, str]] = []
    to_record: list[tuple[Scope, str]] = []
    to_adopt: list[tuple[Scope, str, dict[str, Any]]] = []
    to_resubmit: list[tuple[Scope, str]] = []
    for run_id, org, sandbox, state_text in registry.ledger.live_run_states():
        scope, state = Scope(org, sandbox), RunStatus(state_text)
        row = rows.get(run_id)
        owner = (row or {}).get("owner") or {}
        if owner.get("pid") == sup.me["pid"] and owner.get("start") == sup.me["start"]:
            continue   # ours already
        if owner and (owner.get("host") not in (None, sup.host) or sup._alive(owner)):
            result.left.append(run_id)
            continue
        gone = _cli_gone(owner.get("pid")) if owner.get("kind") == "cli" else SERVER_GONE
        has_result = os.path.isfile(os.path.join(runs_dir, run_id, RESULT_FILE))
        worker = (row or {}).get("worker") or {}
        if row is not None and row["phase"] == "running" and worker:   # a worker was started
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
            elif worker.get("job"):
                # A cluster's job: its artifacts come back only to the process that waited on
                # it, so its backend stops it.
                from ..backends import stop_recorded_job

                to_fail.append((scope, run_id, f"{gone.split(';')[0]}; "
                                               + stop_recorded_job(worker["job"])))
            else:
                to_fail.append((scope, run_id, gone))
        elif state is RunStatus.RUNNING:
            if has_result:
                to_record.append((scope, run_id))
            else:
                to_fail.append((scope, run_id, gone if row else
                                "no process owns this run any more (its owner left no record); "
                                "worker exited without a result"))
        elif row is None and _just_created(registry, scope, run_id):
            # A process created it a moment ago and is about to claim it: not ours to take.
            result.left.append(run_id)
        elif (row is not None and os.path.isfile(spec := os.path.join(runs_dir, run_id, SPEC_FILE))
              and (found := find_worker(Path(spec)))):
            # Its owner died between starting the worker and recording it: follow that worker.
            to_adopt.append((scope, run_id, found))
        elif has_result:
            to_record.append((scope, run_id))
        elif resubmit is not None and owner.get("kind") != "cli":
            to_resubmit.append((scope, run_id))
        else:
            to_fail.append((scope, run_id, f"the CLI process (pid {owner.get('pid')}) that queued "
                                            "the run stopped before it started"))
    if to_fail:
        with registry.transaction():   # one write for all: a thousand stale runs in milliseconds
            for scope, run_id, reason in to_fail:
                try:
                    registry.transition_run(scope, run_id, RunStatus.FAILED, message=reason,
                                            scrub=False)
                except (Conflict, NotFound):
                    continue
                result.failed.append(run_id)
    for scope, run_id in to_record:
        recorder.record_unwatched(scope, run_id)
        result.recorded.append(run_id)
    for scope, run_id, worker in to_adopt:
        track(run_id, adopt(recorder, supervisor, scope, run_id, worker))
        result.adopted.append(run_id)
    for scope, run_id in to_resubmit:
        try:
            resubmit(scope, run_id)
        except NotFound:
            continue   # deleted (with its Experiment) while no server ran: nothing to run
        except StoreError:
            raise
        except MLRuntimeError as exc:   # its Experiment or MLInstance no longer resolves
            try:
                registry.transition_run(scope, run_id, RunStatus.FAILED, scrub=False,
                                        message=f"could not be queued again after a restart: {exc}")
            except (Conflict, NotFound):
                continue
            result.failed.append(run_id)
            continue
        result.resubmitted.append(run_id)
    # Rows of runs that ended without clearing them (nothing live refers to them) go.
    live = {run_id for run_id, *_ in registry.ledger.live_run_states()}
    stale = [run_id for run_id in rows if run_id not in live]
    if stale:
        registry.ledger.delete(stale)
    if lapsed:
        for worker in _orphaned_workers(runs_dir, live):
            stop_worker(worker, 3.0)
            result.stopped.append(worker["run_id"])
    return result


def _orphaned_workers(runs_dir: str, live: set[str]) -> list[dict[str, Any]]:
    """Live workers of this home whose runs are no longer live: a cold worker names its run folder
    on its command line, a forked one writes its pid file there."""
    prefix = (runs_dir.rstrip("/") + "/").encode()
    found: dict[int, dict[str, Any]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            if prefix not in cmdline or b"runtime.worker" not in cmdline:
                continue
            pid = int(entry)
            run_id = cmdline.split(prefix, 1)[1].split(b"/", 1)[0].decode(errors="replace")
            if run_id not in live:
                found[pid] = {"pid": pid, "pgid": os.getpgid(pid),
                              "start": proc_start_ticks(pid), "run_id": run_id}
        except OSError:
            continue
    for pid_file in Path(runs_dir).glob(f"*/{WORKER_PID_FILE}"):
        run_id = pid_file.parent.name
        try:
            pid_text, _, start_text = pid_file.read_text().partition(" ")
            pid, start = int(pid_text), int(start_text)
        except (OSError, ValueError):
            continue
        if run_id not in live and pid not in found and same_process_alive(pid, start):
            found[pid] = {"pid": pid, "pgid": pid, "start": start, "run_id": run_id}
    return list(found.values())


def _wait_gone(worker: dict[str, Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while worker_group_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.01)


UNCLAIMED_GRACE_S = 30.0


def _just_created(registry: Any, scope: Scope, run_id: str) -> bool:
    from datetime import datetime, timezone

    from ..schemas import EXPERIMENT_RUN

    run = registry.find(EXPERIMENT_RUN, scope, run_id, deleted=True)
    if run is None:
        return False
    created = datetime.strptime(run["created"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - created).total_seconds() < UNCLAIMED_GRACE_S



def adopt(recorder: Recorder, supervisor: Any, scope: Any, run_id: str,
      worker: dict[str, Any]) -> threading.Thread:
    """Follow a live worker that a dead owner started; record its result when it ends."""
    from ..schemas import EXPERIMENT_RUN

    registry = recorder.registry
    run = registry.find(EXPERIMENT_RUN, scope, run_id, deleted=True) or {}
    control = supervisor.own(scope, run_id, phase="running")
    handle = AdoptedWorker(run_id, worker, registry.home.runs / run_id)
    control.handle = handle
    max_runtime_s = ((run.get("runtime") or {}).get("limits") or {}).get("maxRuntime")
    status = registry.status_document(scope, run_id)
    elapsed_s = (status.task.duration_s() or 0.0) if status is not None else 0.0

    def follow() -> None:
        try:
            outcome = wait_outcome(handle, control, max_runtime_s, elapsed_s)
            recorder.record_unwatched(scope, run_id, outcome=outcome)
        except Exception as exc:
            log.exception("Adopted run %s could not be recorded", run_id)
            recorder.fail_unless_ended(caller_of(scope, run), run_id,
                                       f"{type(exc).__name__}: {exc}")
        finally:
            supervisor.release(run_id)

    thread = threading.Thread(target=follow, name=f"adopted-{run_id[:8]}", daemon=True)
    thread.start()
    return thread

