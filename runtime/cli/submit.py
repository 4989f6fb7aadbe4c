"""`run submit train|score|fp TARGET --address URL` and `run cancel RUN`: runs on a Ray cluster.

The same path as `run train`: the executor prepares and records the run in this registry; the
ray backend executes it as a Ray job.
"""
from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import sys
import time
from pathlib import Path

from ..errors import ConfigError, Conflict, NotFound
from ..home import resolve_home
from ..schemas import EXPERIMENT_RUN, RunStatus
from ..service import Caller, Registry
from .runs import _MODES, prepare_run, report

CANCEL_RECORD_WAIT_S = 10.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _skip_exit_collection() -> None:
    """Importing Ray leaves ~10^5 long-lived objects; the collection at interpreter exit walks them
    all (0.25-0.4 s on a 2-core machine) to free memory the OS takes back anyway. Freezing them at
    exit skips that walk: every file and the registry are closed by then, and an in-process caller
    is not affected until its own exit."""
    atexit.register(gc.freeze)


def main(args: argparse.Namespace) -> int:
    from ..backends.ray import WORKING_DIR_EXCLUDES, RayBackend
    from ..runs import RunExecutor

    _skip_exit_collection()
    mode = _MODES[args.mode]
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError("No Ray cluster given: pass --address http://HOST:8265 or set RAY_ADDRESS")
    registry = Registry.open(resolve_home(args.home))
    caller = Caller.local(org=args.org, sandbox=args.sandbox)
    try:
        executor = RunExecutor(registry)
        instance, experiment, prepared = prepare_run(registry, caller, args, mode, executor,
                                                     backend="ray")
        working_dir = None if args.no_working_dir else Path(args.working_dir or Path.cwd()).resolve()
        excludes = list(WORKING_DIR_EXCLUDES)
        if working_dir is not None and registry.home.root.is_relative_to(working_dir):
            excludes.append(registry.home.root.relative_to(working_dir).as_posix())  # never the home
        backend = RayBackend(
            address=address, artifacts="shared" if args.shared_artifacts else "return",
            working_dir=working_dir, excludes=excludes, pip=args.pip or [],
            resources=prepared.resolved.resources, notify=_stderr)
        started = time.perf_counter()
        from ..supervisor import SignalGuard

        with SignalGuard() as interrupt:   # Ctrl-C stops the job, however early it arrives
            run = registry.create_run(caller, experiment["id"], {"mode": mode})
            _stderr(f"Run {run['id']}: {mode} of MLInstance {instance['id']} on Ray at {address}")
            summary = executor.execute(caller, run, prepared, backend=backend,
                                       echo=sys.stderr if args.follow else None,
                                       interrupt=interrupt)
        seconds = time.perf_counter() - started
        doc = registry.get(EXPERIMENT_RUN, caller, run["id"])
        summary["submissionId"] = (doc.get("backend") or {}).get("submissionId")
        return report(args, summary, seconds, registry, caller,
                      f"  ray job: {summary['submissionId']}")
    finally:
        registry.close()


def cancel_main(args: argparse.Namespace) -> int:
    """Stop a run's Ray job. The `run submit` that waits on it records ABORTED; when none does
    (it was killed), this command records it."""
    from ..backends.ray import stop_job

    _skip_exit_collection()
    registry = Registry.open(resolve_home(args.home))
    caller = Caller.local(org=args.org, sandbox=args.sandbox)
    try:
        run = registry.get(EXPERIMENT_RUN, caller, args.run)
        job = run.get("backend") or {}
        if job.get("name") != "ray" or not job.get("submissionId"):
            raise ConfigError(f"Run {args.run} has no Ray job to cancel (backend: "
                              f"{job.get('name') or 'local'}); stop a local run with Ctrl-C")
        address = args.address or job["address"]
        stopped = stop_job(address, job["submissionId"])
        _stderr(f"Asked Ray at {address} to stop job {job['submissionId']}"
                + ("" if stopped else " (it had already ended)"))
        deadline = time.monotonic() + CANCEL_RECORD_WAIT_S
        state = _state(registry, caller, args.run)
        while not state.is_terminal() and time.monotonic() < deadline:
            time.sleep(0.2)
            state = _state(registry, caller, args.run)
        if not state.is_terminal():
            try:
                registry.transition_run(caller.scope, args.run, RunStatus.ABORTED,
                                        message=f"cancelled (Ray job {job['submissionId']} stopped "
                                                "by run cancel)")
            except Conflict:
                pass  # the submitting process recorded it meanwhile
            state = _state(registry, caller, args.run)
        if args.json:
            print(json.dumps({"runId": args.run, "submissionId": job["submissionId"],
                              "state": state.value}))
        else:
            print(f"Run {args.run} {state.value}")
        return 0
    finally:
        registry.close()


def _state(registry: Registry, caller: Caller, run_id: str) -> RunStatus:
    status = registry.store.get_run_status(caller.scope, run_id)
    if status is None:
        raise NotFound(f"Experiment run {run_id!r} not found")
    return RunStatus(status["status"]["tasks"][0]["state"])
