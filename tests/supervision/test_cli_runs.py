"""CLI runs: the Ctrl-C race, a CLI killed mid-run (its worker adopted), reconciliation of stale
runs (pid reuse included), and the run history commands."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.backends.python import PythonBackend
from runtime.runs import RunExecutor
from runtime.schemas import MODEL, RunStatus
from runtime.procs import proc_start_ticks, same_process_alive
from runtime.runs.record import SERVER_GONE
from runtime.supervisor import SignalGuard, identity

from waiting import until, wait_run

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL

REPO = Path(__file__).resolve().parents[2]


def instance_file(tmp_path: Path, sleep_ms: int) -> Path:
    data = tmp_path / "tiny.csv"
    data.write_text("a,b\n1,2\n")
    path = tmp_path / f"noop-{sleep_ms}.json"
    path.write_text(json.dumps({"name": f"noop-{sleep_ms}", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "sleep_ms", "value": str(sleep_ms)},
                                         {"key": "trainingDataSetId", "value": str(data)}]}]}))
    return path


def prepared_run(registry, caller, tmp_path, sleep_ms=60_000):
    from runtime.cli.runs import resolve_experiment, resolve_target

    instance = resolve_target(registry, caller, str(instance_file(tmp_path, sleep_ms)))
    experiment = resolve_experiment(registry, caller, instance, None)
    executor = RunExecutor(registry)
    prepared = executor.prepare(caller, experiment["id"], "train")
    return executor, experiment, prepared


class InterruptedWhileStarting(PythonBackend):
    """Ctrl-C lands after the worker exists but before the caller holds its handle: the window
    in which the CLI used to lose the signal and leave the worker running."""

    def submit(self, **kwargs):
        handle = super().submit(**kwargs)
        self.started_pid = handle.pid
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)   # the handler runs here, in the middle of the setup
        return handle


def test_ctrl_c_during_worker_start_aborts_the_run_and_kills_the_worker(registry, caller,
                                                                         tmp_path):
    executor, experiment, prepared = prepared_run(registry, caller, tmp_path)
    backend = InterruptedWhileStarting()
    started = time.monotonic()
    with SignalGuard() as interrupt:
        run = registry.create_run(caller, experiment["id"], {"mode": "train"})
        summary = executor.execute(caller, run, prepared, backend=backend, interrupt=interrupt)
    assert summary["state"] == "ABORTED" and summary["reason"].startswith("interrupted (SIGINT)")
    assert time.monotonic() - started < 30
    assert not same_process_alive(backend.started_pid, None)
    executor.supervisor.close()


def test_ctrl_c_before_the_run_is_bound_still_aborts_it_and_starts_no_worker(registry, caller,
                                                                             tmp_path):
    executor, experiment, prepared = prepared_run(registry, caller, tmp_path)
    with SignalGuard() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)   # e.g. while the run is being created
        run = registry.create_run(caller, experiment["id"], {"mode": "train"})
        summary = executor.execute(caller, run, prepared, interrupt=interrupt)
    assert summary["state"] == "ABORTED"
    assert not (registry.home.runs / run["id"] / "spec.json").exists()
    executor.supervisor.close()


def test_pid_reuse_is_told_apart_by_the_start_time():
    me = identity("cli")
    assert me["start"] == proc_start_ticks(os.getpid())
    assert same_process_alive(os.getpid(), me["start"])
    assert not same_process_alive(os.getpid(), me["start"] - 1)   # "the same pid, reused"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert proc_start_ticks(child.pid) is None


def test_reconciliation_settles_each_kind_of_stale_run(registry, caller, tmp_path):
    from runtime.backends import RESULT_FILE

    executor, experiment, prepared = prepared_run(registry, caller, tmp_path, sleep_ms=0)
    reused = {**identity("server"), "start": proc_start_ticks(os.getpid()) - 1}   # a reused pid
    dead_cli = {**identity("cli"), "start": proc_start_ticks(os.getpid()) - 1}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = {"kind": "cli", "pid": sleeper.pid, "start": proc_start_ticks(sleeper.pid),
                "host": identity("cli")["host"]}
        runs = [registry.create_run(caller, experiment["id"], {"mode": "train"})["id"]
                for _ in range(4)]
        gone, finished, queued, owned = runs
        for run_id in (gone, finished):
            registry.transition_run(caller.scope, run_id, RunStatus.RUNNING)
            registry.annotate_run(caller.scope, run_id, {"runtime": prepared.record()})
            registry.store.ledger_put(caller.scope, run_id, "running",
                                      {"owner": reused, "grant": {"cpus": 1}})
        model_dir = registry.home.runs / finished / "model"
        model_dir.mkdir(parents=True)
        (model_dir / "model.json").write_text("{}")
        (registry.home.runs / finished / RESULT_FILE).write_text(json.dumps(
            {"state": "DONE", "model_dir": str(model_dir),
             "metrics": [{"name": "rows", "value": 1.0, "valueType": "double"}]}))
        registry.store.ledger_put(caller.scope, queued, "queued", {"owner": dead_cli})
        registry.store.ledger_put(caller.scope, owned, "queued", {"owner": live})

        server = RunExecutor(registry, kind="server")
        summary = server.reconcile()
        state = {r: registry.store.get_run_status(caller.scope, r)["status"]["tasks"][0]
                 for r in runs}
        assert state[gone]["state"] == "FAILED" and state[gone]["message"] == SERVER_GONE
        assert state[finished]["state"] == "DONE"
        models = [m for m in registry.list(MODEL, caller, _all()).children
                  if m.get("experimentRunId") == finished]
        assert len(models) == 1
        assert state[queued]["state"] == "FAILED" and "CLI process" in state[queued]["message"]
        assert state[owned]["state"] == "PENDING"          # its owner lives: left alone
        assert summary.left == [owned] and set(summary.failed) == {gone, queued}
        assert registry.store.ledger_get(gone) is None
        server.shutdown()
    finally:
        sleeper.kill()
        sleeper.wait()


def _all():
    from runtime.listing import ListQuery

    return ListQuery(limit=100)


def cli(home, *argv, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *argv, "--home", str(home)],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def test_a_killed_cli_run_is_adopted_by_the_next_server_and_the_history_shows_it(tmp_path):
    from runtime.home import resolve_home
    from runtime.registry import Registry

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "train",
                             str(instance_file(tmp_path, 2500)), "--home", str(home), "--quiet"],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    registry = None

    def started_worker():
        nonlocal registry
        if registry is None and (home / "registry.db").exists():
            registry = Registry.open(resolve_home(home))
        return registry and next((r["run_id"] for r in registry.store.ledger_rows()
                                  if (r.get("worker") or {}).get("pid")), None)

    try:
        run_id = until(started_worker, what="the CLI run's worker")
        proc.kill()                                    # the CLI dies; its worker lives on
        proc.wait()
        server = RunExecutor(registry, kind="server")
        summary = server.reconcile()
        assert summary.adopted == [run_id] or summary.recorded == [run_id]
        task = wait_run(registry, run_id, timeout_s=60)
        assert task["state"] == "DONE", task
        server.shutdown()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if registry is not None:
            registry.close()

    listing = json.loads(cli(home, "runs", "list", "--state", "DONE", "--json").stdout)
    assert [row["id"] for row in listing] == [run_id]
    show = cli(home, "runs", "show", run_id)
    assert show.returncode == 0, show.stderr
    assert "state:     DONE" in show.stdout and "model:" in show.stdout
    assert "sleep_ms" in show.stdout and "(mlInstance)" in show.stdout
    logs = cli(home, "logs", run_id)
    assert "stage train done" in logs.stdout
    finished = cli(home, "cancel", run_id)
    assert finished.returncode == 1 and "nothing to cancel" in finished.stderr


class PidlessHandle:
    """A handle like the Spark and Ray ones: no worker pid of its own, only cancel()."""

    def __init__(self, spec):
        import threading

        self.run_id = spec.run_id
        self.cancelled = threading.Event()

    def status(self):
        return RunStatus.ABORTED if self.cancelled.is_set() else RunStatus.RUNNING

    def wait(self, timeout=None):
        from runtime.backends import Outcome

        if not self.cancelled.wait(timeout):
            raise TimeoutError("still running")
        return Outcome(RunStatus.ABORTED, None, "cancelled (job stopped)", "", None)

    def cancel(self):
        self.cancelled.set()


class PidlessBackend:
    name = "fake-cluster"

    def submit(self, *, spec, plan, log_path, echo=None):
        Path(log_path).write_text("started\n")
        self.handle = PidlessHandle(spec)
        return self.handle


def test_cancel_from_another_process_reaches_a_backend_without_a_worker_pid(registry, caller,
                                                                             tmp_path):
    """`run cancel` in one process, the run's owner (with a Spark- or Ray-like handle) in another:
    the request goes through the ledger and the owner stops its handle and records ABORTED."""
    import threading

    owner, experiment, prepared = prepared_run(registry, caller, tmp_path)
    run = registry.create_run(caller, experiment["id"], {"mode": "train"})
    backend = PidlessBackend()
    summaries = []
    thread = threading.Thread(target=lambda: summaries.append(
        owner.execute(caller, run, prepared, backend=backend)))
    thread.start()
    until(lambda: getattr(backend, "handle", None), timeout_s=30, what="the owner's submit")
    other = RunExecutor(registry, kind="cli")          # a second supervisor: another process
    other.cancel(caller, run["id"], "cancelled by tester with run cancel")
    thread.join(10)
    assert summaries and summaries[0]["state"] == "ABORTED"
    assert summaries[0]["reason"].startswith("cancelled by tester with run cancel")
    assert backend.handle.cancelled.is_set()
    with pytest.raises(Exception, match="already ended ABORTED"):
        other.cancel(caller, run["id"], "again")
    owner.supervisor.close()
    other.supervisor.close()
