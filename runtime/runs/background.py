"""Background runs (the server's): a run the API or a schedule created is prepared once when it
is admitted, owned at once (its place in the FIFO queue is its posting order), and run on a thread
of its own when the queue lets it; a stopping server aborts what has not started and gives what
runs a grace period.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import MLRuntimeError
from ..schemas import RunStatus
from ..registry import Caller
from .prepare import Prepared
from .record import Recorder

log = logging.getLogger("runtime.runs")


@dataclass(frozen=True)
class Admission:
    """What admitting a run decided before it was created: its preparation and its claim on the
    host (checked: it fits), or why it cannot be prepared (the run is created all the same and
    FAILS with that reason, as the platform did)."""

    prepared: Optional[Prepared] = None
    demand: Any = None                # runtime.capacity.Demand
    error: Optional[str] = None


class Background:
    """Runs admitted runs on threads of this process. `execute(caller, run, prepared, demand)`
    runs one to its end (RunExecutor.execute)."""

    def __init__(self, *, supervisor: Callable[[], Any], recorder: Recorder,
                 execute: Callable[[Caller, dict[str, Any], Prepared, Any], Any]) -> None:
        self._supervisor = supervisor
        self._recorder = recorder
        self._execute = execute
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self.accepting = True

    def submit(self, caller: Caller, run: dict[str, Any], admission: Admission) -> None:
        """Own the run now (its place in the queue), then run it on its own thread."""
        supervisor = self._supervisor()
        if not self.accepting:
            self._recorder.fail_unless_ended(caller, run["id"], "the server is stopping and "
                                             "accepts no runs", RunStatus.ABORTED)
            return
        if admission.prepared is None:
            self._recorder.fail_unless_ended(caller, run["id"], admission.error or "not prepared")
            return
        state = self._recorder.state(caller.scope, run["id"])
        if state is None or state.is_terminal():   # cancelled (or deleted) before it was owned
            return
        control = supervisor.own(caller.scope, run["id"])
        # Its place in the queue, in posting order (the admission checked that it fits)
        supervisor.enqueue(control, admission.demand)
        thread = threading.Thread(target=self._run, args=(caller, run, admission),
                                  name=f"run-{run['id'][:8]}", daemon=True)
        self.track(run["id"], thread)
        thread.start()

    def track(self, run_id: str, thread: threading.Thread) -> None:
        """A thread of this process that records a run (shutdown waits for it)."""
        with self._lock:
            self._threads = {k: t for k, t in self._threads.items() if t.is_alive()}
            self._threads[run_id] = thread

    def _run(self, caller: Caller, run: dict[str, Any], admission: Admission) -> None:
        try:
            self._execute(caller, run, admission.prepared, admission.demand)
        except Exception as exc:
            if not isinstance(exc, MLRuntimeError):
                log.exception("Run %s failed", run["id"])
            self._recorder.fail_unless_ended(caller, run["id"], getattr(exc, "detail", None)
                                             or f"{type(exc).__name__}: {exc}")
        finally:
            self._supervisor().release(run["id"])

    def live_threads(self) -> list[threading.Thread]:
        with self._lock:
            return [t for t in self._threads.values() if t.is_alive()]

    def stop(self, supervisor: Any, grace_s: float, abort: Optional[threading.Event]) -> None:
        """Accept no run; abort queued runs; give running runs `grace_s` seconds to finish, then
        abort them; wait until every run of this process is recorded."""
        self.accepting = False
        for control in supervisor.controls():
            if not control.granted.is_set():
                control.request_stop("the server stopped before the run started")
        deadline = time.monotonic() + grace_s
        while (time.monotonic() < deadline and self.live_threads()
               and not (abort is not None and abort.is_set())):
            time.sleep(0.05)
        for control in supervisor.controls():
            control.request_stop(
                f"the server stopped; the run did not finish within the {grace_s:g} s grace "
                "period")
        end = time.monotonic() + 30.0
        for thread in self.live_threads():
            thread.join(max(0.1, end - time.monotonic()))
