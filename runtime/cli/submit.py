"""`run submit train|score|fp TARGET --address URL`: a run on a Ray cluster.

The same path as `run train`: the executor prepares and records the run in this registry and
runs it on its `ray` backend, as a Ray job. `run cancel RUN` (runtime.cli.history) stops it.
"""
from __future__ import annotations

import argparse
import atexit
import gc
import sys
import time
from typing import Any

from ..home import resolve_home
from ..schemas import EXPERIMENT_RUN
from ..registry import Caller, Registry
from .runs import _MODES, report, run_request


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _skip_exit_collection() -> None:
    """Importing Ray leaves ~10^5 long-lived objects; the collection at interpreter exit walks them
    all (0.25-0.4 s on a 2-core machine) to free memory the OS takes back anyway. Freezing them at
    exit skips that walk: every file and the registry are closed by then, and an in-process caller
    is not affected until its own exit."""
    atexit.register(gc.freeze)


def main(args: argparse.Namespace) -> int:
    from ..backends import submit_backend
    from ..run_targets import ray_backend_options
    from ..runs import RunExecutor

    _skip_exit_collection()
    mode = _MODES[args.mode]
    registry = Registry.open(resolve_home(args.home))
    caller = Caller.local(org=args.org, sandbox=args.sandbox)
    try:
        options = ray_backend_options(
            registry.home.root, address=args.address, working_dir=args.working_dir,
            upload_working_dir=not args.no_working_dir, shared_artifacts=args.shared_artifacts,
            pip=args.pip, notify=_stderr)
        backend = submit_backend()   # the cluster backend that takes submitted runs (ray)
        executor = RunExecutor(registry, backend_options={backend: options})
        target, request = run_request(registry, caller, args, mode, backend=backend)
        started: list[float] = []

        def created(run: dict[str, Any], plan: Any) -> None:
            started.append(time.perf_counter())
            _stderr(f"Run {run['id']}: {mode} of MLInstance {target.instance['id']} on Ray at "
                    f"{options['address']}")

        # From the run's creation on, Ctrl-C stops the job, however early it arrives.
        summary = executor.run(caller, request, echo=sys.stderr if args.follow else None,
                               guard_signals=True, on_created=created)
        seconds = time.perf_counter() - started[0]
        doc = registry.get(EXPERIMENT_RUN, caller, summary["runId"])
        summary["submissionId"] = (doc.get("backend") or {}).get("submissionId")
        return report(args, summary, seconds, registry, caller,
                      f"  ray job: {summary['submissionId']}")
    finally:
        registry.close()
