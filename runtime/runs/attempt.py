"""Attempting a prepared run: its place in the FIFO queue until the host has room, then its worker
on the backend, waited on (a cancel, Ctrl-C or `maxRuntime` stops it), and again while it FAILS
and `retries` are left. A run is RUNNING only once its worker exists: a process that dies before
that leaves it PENDING, and the next server queues it again (runs.reconcile).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from ..backends import Outcome
from ..errors import MLRuntimeError
from ..schemas import RunStatus
from ..registry import Caller, Registry

RETRY_DELAY_S = 1.0   # between a FAILED attempt and the next one


class Attempts:
    """Runs attempts of prepared runs of one registry under one supervisor (the ledger and the
    capacity queue) on a host."""

    def __init__(self, registry: Registry, *, supervisor: Callable[[], Any],
                 capacity: Callable[[], Any], host: Callable[[], Any]) -> None:
        self.registry = registry
        self._supervisor = supervisor
        self._capacity = capacity
        self._host = host

    def run(self, caller: Caller, run: dict[str, Any], prepared: Any, backend: Any,
            control: Any, spec: Any, log_path: Path, tasklogs: list[dict[str, str]],
            echo: Optional[TextIO], demand: Any = None) -> Outcome:
        """Queue the run for capacity, then run it (again, while it FAILS and retries are left).
        `demand`: its claim on the host, checked when it was admitted; without one (a foreground
        run) it is reckoned and checked here, once: one that can never fit FAILS saying why."""
        from ..capacity import check_fits, demand_for

        reg, scope, run_id = self.registry, caller.scope, run["id"]
        capacity, supervisor = self._capacity(), self._supervisor()
        if demand is None:
            demand = demand_for(prepared.resolved.resources, prepared.plan, capacity,
                                prepared.device)
            try:
                check_fits(demand, capacity)
            except MLRuntimeError as exc:
                reg.transition_run(scope, run_id, RunStatus.FAILED, message=exc.detail)
                raise

        def note(message: str) -> None:   # the queue position, in the status and on the console
            reg.note_run(scope, run_id, message)
            if echo is not None:
                echo.write(f"Run {run_id}: {message}\n")
                echo.flush()

        grant = supervisor.acquire(control, demand, note)
        if grant is None:
            return Outcome(RunStatus.ABORTED, None, control.reason or "cancelled while queued",
                           "", None)
        plan = plan_for_grant(prepared.plan, grant, self._host())
        if plan.gpu_indices:   # the leased devices, by physical index and name, on the run
            reg.annotate_run(scope, run_id, {"devices": leased_devices(plan, grant, self._host())})
        attempts = 1 + prepared.retries
        for attempt in range(1, attempts + 1):
            if control.stopping():
                return Outcome(RunStatus.ABORTED, None, control.reason, "", None)
            if attempt == 1:   # the status says so while a worker starts (a warm parent imports)
                reg.note_run(scope, run_id, f"starting its worker: {plan.reason}")
            try:
                handle = backend.submit(spec=spec, plan=plan, log_path=log_path, echo=echo)
            except MLRuntimeError as exc:
                reg.transition_run(scope, run_id, RunStatus.FAILED, message=exc.detail)
                raise
            supervisor.attach_worker(control, handle)
            if getattr(backend, "queues", False):   # the cluster says when it really starts (PENDING until then)
                reg.annotate_run(scope, run_id, {"backend": handle.record()})
                handle.on_state = lambda state, message: reg.transition_run(
                    scope, run_id, state, message=message, tasklogs=tasklogs)
                handle.on_notice = lambda message: reg.note_run(scope, run_id, message)
            else:   # its worker exists (and is in the ledger): now it runs
                message = plan.reason if attempt == 1 else (
                    f"attempt {attempt} of {attempts}: {plan.reason}")
                reg.transition_run(scope, run_id, RunStatus.RUNNING, message=message,
                                   tasklogs=tasklogs)
            outcome = wait_outcome(handle, control, prepared.max_runtime_s)
            if (outcome.state is RunStatus.FAILED and attempt < attempts
                    and not control.stopping()):
                retry = (f"attempt {attempt} of {attempts} failed: {outcome.reason}; "
                         f"retrying in {RETRY_DELAY_S:g} s ({attempts - attempt} left)")
                reg.transition_run(scope, run_id, RunStatus.RETRY, message=retry)
                with open(log_path, "a") as fh:
                    fh.write(f"\n=== {retry} ===\n")
                if control.stop.wait(RETRY_DELAY_S) or control.stopping():
                    return dataclasses.replace(outcome, state=RunStatus.ABORTED,
                                               reason=control.reason)
                continue
            return outcome
        raise AssertionError("unreachable")


def wait_outcome(handle: Any, control: Any, max_runtime_s: Optional[float],
                 elapsed_s: float = 0.0) -> Outcome:
    """The handle's outcome; a stop request (cancel, Ctrl-C, maxRuntime) cancels it first.
    `elapsed_s`: how long the run already ran (an adopted run)."""
    deadline = (None if not max_runtime_s
                else time.monotonic() + max(0.0, max_runtime_s - elapsed_s))
    while not control.stopping():
        if deadline is not None and time.monotonic() >= deadline:
            control.request_stop(f"exceeded its maxRuntime of {max_runtime_s:g} s")
            break
        try:
            return handle.wait(timeout=0.1)
        except TimeoutError:
            continue
        except KeyboardInterrupt:   # a caller without a SignalGuard
            control.request_stop("interrupted (SIGINT)")
    handle.cancel()
    outcome = handle.wait()
    if outcome.state is RunStatus.ABORTED and control.reason:
        detail = f" ({outcome.reason})" if outcome.reason else ""
        outcome = dataclasses.replace(outcome, reason=control.reason + detail)
    return outcome


def leased_devices(plan: Any, grant: Any, host: Any) -> list[dict[str, Any]]:
    """What the run holds, as `run gpus` and the run's document show it: the host's index
    (nvidia-smi's, PCI bus order), the name, the share and the worker's own cuda:N."""
    by_index = {d.index: d for d in host.cuda_devices}
    out = []
    for position, index in enumerate(plan.gpu_indices):
        device = by_index.get(index)
        out.append({"index": index, "name": device.name if device else None,
                    "memoryMB": device.memory_mb if device else None,
                    "share": float((grant.gpus or {}).get(index, 1.0)),
                    "workerDevice": f"cuda:{position}"})
    return out


def plan_for_grant(plan: Any, grant: Any, host: Any) -> Any:
    """The plan with the GPUs the queue leased (by index) instead of the first ones."""
    if not plan.gpu_indices or tuple(plan.gpu_indices) == grant.gpu_indices:
        return plan
    devices = [d for d in host.cuda_devices if d.index in grant.gpus]
    if len(devices) != len(plan.gpu_indices):   # a fake capacity in tests: keep the plan
        return plan
    env = {**plan.env, "CUDA_VISIBLE_DEVICES": ",".join(d.cuda_visible_id for d in devices)}
    given = ", ".join(f"GPU {d.index}" for d in devices)
    return plan.model_copy(update={"gpu_indices": tuple(d.index for d in devices), "env": env,
                                   "reason": f"{plan.reason}; leased {given}"})
