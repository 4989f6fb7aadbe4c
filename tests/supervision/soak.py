"""The soak: N runs posted at once, random cancels, random worker kills, the server SIGKILLed and
started again in the middle; then every run must have ended with a reason, every DONE train run
must have exactly one Model, no worker may be left and the store must pass integrity_check.
Shared by tests/supervision/test_soak.py (short) and benchmarks/bench_soak.py (long)."""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from support import (client_for, integrity, live_server, models_of_run, new_sandbox,
                     noop_experiment, post_run, wait_no_workers, worker_pids)
from waiting import TERMINAL, run_task, until, wait_run


@dataclass
class SoakReport:
    runs: int
    cancels: int = 0
    worker_kills: int = 0
    server_kills: int = 0
    states: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    leftover_workers: list[int] = field(default_factory=list)
    integrity: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        return (f"soak: N={self.runs} runs, {self.cancels} cancels, {self.worker_kills} worker "
                f"kills, {self.server_kills} server SIGKILL+restart -> {self.states}; "
                f"{len(self.problems)} problems, {len(self.leftover_workers)} workers left, "
                f"integrity {self.integrity}, {self.seconds:.0f} s")


def soak(tmp: Path, *, runs: int, cancels: int, worker_kills: int, restarts: int = 1,
         max_sleep_ms: int = 1500, seed: int = 0, timeout_s: float = 240.0) -> SoakReport:
    rng = random.Random(seed)
    home = tmp / "home"
    report = SoakReport(runs=runs)
    sandbox = new_sandbox()
    started = time.monotonic()
    with live_server(home) as server:
        client = client_for(server, sandbox)
        experiments = [noop_experiment(client, tmp / "tiny.csv", sleep_ms=s)
                       for s in sorted({rng.randint(100, max_sleep_ms) for _ in range(4)})]
        posted = [(eid, post_run(client, eid))
                  for eid in (rng.choice(experiments) for _ in range(runs))]
        chaos = threading.Thread(target=_chaos, args=(server, client, posted, rng, cancels,
                                                      worker_kills, report), daemon=True)
        chaos.start()
        chaos.join(timeout_s / 3)
        if restarts:
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
            report.server_kills += 1
        else:
            _settle(client, home, posted, report, timeout_s)
    if restarts:
        with live_server(home) as server:   # a new server on the same home reconciles
            _settle(client_for(server, sandbox), home, posted, report, timeout_s)
    report.leftover_workers = wait_no_workers(home, 10)
    report.integrity = integrity(home)
    report.seconds = time.monotonic() - started
    return report


def _settle(client, home: Path, posted, report: SoakReport, timeout_s: float) -> None:
    """Wait for every run to end, then hold each to the soak's rules."""
    deadline = time.monotonic() + timeout_s
    for eid, run_id in posted:
        try:
            task = wait_run(client, run_id, experiment_id=eid,
                            timeout_s=max(0.0, deadline - time.monotonic()))
        except AssertionError:   # still running: a problem of the report, not the end of it
            task = run_task(client, run_id, experiment_id=eid)
        report.states[task["state"]] = report.states.get(task["state"], 0) + 1
        if task["state"] not in TERMINAL:
            report.problems.append(f"{run_id} still {task['state']}: {task.get('message')}")
        elif task["state"] != "DONE" and not task.get("message"):
            report.problems.append(f"{run_id} {task['state']} without a reason")
        models = models_of_run(home, run_id)
        if (task["state"] == "DONE") != (models == 1) or models > 1:
            report.problems.append(f"{run_id} {task['state']} with {models} Models")


def _chaos(server, client, posted, rng, cancels, worker_kills, report) -> None:
    """Cancel some runs and SIGKILL some workers, at random moments while the queue drains."""
    victims = rng.sample(posted, cancels)
    actions = [("cancel", v) for v in victims] + [("kill", None)] * worker_kills
    rng.shuffle(actions)
    for action, target in actions:
        time.sleep(rng.uniform(0.5, 2.0))
        if server.process.poll() is not None:
            return
        if action == "cancel":
            eid, run_id = target
            answer = client.post(f"/experiments/{eid}/runs/{run_id}/cancel")
            if answer.status_code in (200, 409):
                report.cancels += answer.status_code == 200
        else:
            try:
                pids = until(lambda: worker_pids(server.home), timeout_s=10, what="a worker")
            except AssertionError:   # the queue drained: nothing left to kill
                pids = []
            if pids:
                try:
                    os.killpg(rng.choice(pids), signal.SIGKILL)
                    report.worker_kills += 1
                except OSError:
                    pass
