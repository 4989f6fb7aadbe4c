"""The suite's one way to wait: `until(check)` polls any condition, `wait_run(...)` waits for a run
to reach a state through the REST API or a Registry. Imported by name from every test folder
(`from waiting import until, wait_run`: tests/ is on pytest's `pythonpath`).

A wait ends on the condition itself, never on a timing: the timeout only bounds a failure, and
the error names what was awaited and the last thing seen."""
from __future__ import annotations

import time
from typing import Any, Callable, Collection, Optional, TypeVar

T = TypeVar("T")

TERMINAL = frozenset({"DONE", "FAILED", "ABORTED"})


def until(check: Callable[[], T], *, timeout_s: float = 60.0, interval_s: float = 0.05,
          what: str | Callable[[], str] = "the condition") -> T:
    """`check()`'s first truthy value, polled every `interval_s`; an AssertionError naming `what`
    (a text, or a function that describes the last state seen) and `check()`'s last answer when
    none comes within `timeout_s`. An exception `check()` raises ends the wait at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {described} "
                                 f"(last answer: {value!r})")
        time.sleep(interval_s)


def run_task(source: Any, run_id: str, *, experiment_id: Optional[str] = None,
             scope: Any = None) -> dict[str, Any]:
    """The run's task status now (`state`, `message`, `started`, `ended`, ...).

    `source` is an httpx client on the Sensei API (`experiment_id` required: the status route is
    under the Experiment) or a runtime Registry (`scope` defaults to `Caller.local()`'s)."""
    if hasattr(source, "store"):   # a Registry
        if scope is None:
            from runtime.registry import Caller

            scope = Caller.local().scope
        status = source.store.get_run_status(scope, run_id)
        assert status is not None, f"run {run_id} has no status in {scope}"
    else:
        if experiment_id is None:
            raise TypeError("wait_run over HTTP needs experiment_id= (the route is under it)")
        response = source.get(f"/experiments/{experiment_id}/runs/{run_id}/status")
        assert response.status_code == 200, response.text
        status = response.json()
    return status["status"]["tasks"][0]


def wait_run(source: Any, run_id: str, *, experiment_id: Optional[str] = None,
             states: Collection[str] = TERMINAL, timeout_s: float = 120.0,
             scope: Any = None) -> dict[str, Any]:
    """The run's task status once its state is one of `states` (default: any terminal state).

    Over HTTP: `wait_run(client, run_id, experiment_id=eid)`; over a Registry:
    `wait_run(registry, run_id)` (or `scope=` another org and sandbox). A run that reaches a
    terminal state outside `states` fails at once, with its message, instead of at the timeout."""
    wanted = frozenset(states)
    seen: dict[str, Any] = {}

    def reached() -> Optional[dict[str, Any]]:
        task = run_task(source, run_id, experiment_id=experiment_id, scope=scope)
        seen["task"] = task
        if task["state"] in wanted:
            return task
        assert task["state"] not in TERMINAL, (
            f"run {run_id} ended {task['state']}, not {sorted(wanted)}: {task.get('message')}")
        return None

    def described() -> str:
        task = seen.get("task") or {}
        return (f"run {run_id} to be {' or '.join(sorted(wanted))}; it is {task.get('state')}: "
                f"{task.get('message')}")

    return until(reached, timeout_s=timeout_s, interval_s=0.1, what=described)
