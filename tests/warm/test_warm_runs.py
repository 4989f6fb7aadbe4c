"""Warm python workers through the python backend: runs forked from a warm parent stay isolated,
get their own thread pools and seeds, and fall back to a cold start (never a failure) when the
parent is broken, retiring or refused."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from runtime import warm
from runtime.backends import WorkerSpec
from runtime.backends.python import PythonBackend
from runtime.dispatch import detect_host, plan as make_plan
from runtime.resources import ResourceRequest
from runtime.schemas import RunStatus
from runtime.warm import WarmPools, describe_home, listening
from warm_helpers import wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RETAIL = REPO.parent / "shared" / "data" / "retail"
WORKER_PATH = os.pathsep.join([str(HERE), str(HERE.parent / "backends")])   # warm_engines' imports
sys.path.insert(0, str(HERE.parent / "backends"))   # the backend reads the engines' preloads here


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def pools(home):
    pools = WarmPools(home, start=True, owned=True)
    yield pools
    pools.close()


def make_plan_for(threads: int = 1, **env):
    plan = make_plan(engine_kind="python", resources=ResourceRequest(cpus=threads),
                     host=detect_host())
    return plan.model_copy(update={"threads": threads,
                                   "env": {**plan.env, "PYTHONPATH": WORKER_PATH, **env}})


def spec_for(tmp_path: Path, engine: str, run_id: str, **fields) -> WorkerSpec:
    data = tmp_path / "rows.csv"
    if not data.exists():
        pd.DataFrame({"x": [1.0, 2.0, 3.0]}).to_csv(data, index=False)
    fields.setdefault("values", {"trainingDataSetId": str(data)})
    return WorkerSpec(run_id=run_id, engine=engine, mode="train",
                      run_dir=tmp_path / "runs" / run_id, **fields)


def run(backend, plan, spec, timeout=120):
    handle = backend.submit(spec=spec, plan=plan, log_path=Path(spec.run_dir) / "worker.log")
    outcome = handle.wait(timeout=timeout)
    return handle, outcome


def metrics(outcome) -> dict[str, float]:
    return {m["name"]: m["value"] for m in outcome.result["metrics"]}


def log_of(spec: WorkerSpec) -> str:
    return (Path(spec.run_dir) / "worker.log").read_text()


def parent_pids(home: Path) -> list[int]:
    return [p["pid"] for p in describe_home(home)]


# --- isolation -----------------------------------------------------------------------------------

def spare_of(parent: int) -> int | None:
    """The pid of the spare child a parent forked ahead for its next run, if any."""
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and f"--spare-of={parent}".encode() in Path(
                    f"/proc/{entry}/cmdline").read_bytes():
                return int(entry)
        except OSError:
            continue
    return None


@pytest.mark.parametrize("from_spare", [False, True], ids=["back-to-back", "from-the-spare"])
def test_nothing_a_run_changes_reaches_the_next_run(pools, tmp_path, from_spare):
    """Back to back, and with each run asked for only once the parent's spare is waiting: that run
    is then the spare (the parent says so when it hands the run its pid), not a fork on request.
    Either way, a pristine copy of the parent."""
    backend = PythonBackend(warm=pools)
    plan = make_plan_for()
    found = []
    parent = None
    for i in range(3):
        waiting = False
        if from_spare and parent is not None:   # the spare is forked once the run before started
            waiting = wait_for(lambda: spare_of(parent) is not None)
            assert waiting, "no spare was forked"
        spec = spec_for(tmp_path, "warm_engines:LeakyEngine", f"leak-{i}")
        handle, outcome = run(backend, plan, spec)
        assert outcome.state is RunStatus.DONE, outcome.log_tail
        assert handle.warm_parent is not None, log_of(spec)
        assert "warm start: forked from parent" in log_of(spec)
        if waiting:
            assert handle._proc.from_spare, "a spare was waiting, yet the run was forked anew"
        parent = handle.warm_parent
        found.append(metrics(outcome))
    parents = {handle.warm_parent}
    assert len(parents) == 1
    for m in found:   # every run finds a pristine process, however the one before it left its own
        assert {k: v for k, v in m.items() if k != "pid"} == {
            "env_leak": 0.0, "global_leak": 0.0, "stdlib_leak": 0.0, "module_leak": 0.0,
            "thread_leak": 0.0, "cwd_leak": 0.0}
    assert len({m["pid"] for m in found}) == 3   # a fresh child each time


def test_a_run_gets_its_own_session_threads_seed_and_no_cuda(pools, tmp_path):
    backend = PythonBackend(warm=pools)
    plan = make_plan_for(threads=2)
    draws = []
    for i in range(2):
        spec = spec_for(tmp_path, "warm_engines:PoolsProbeEngine", f"pools-{i}")
        handle, outcome = run(backend, plan, spec)
        assert outcome.state is RunStatus.DONE, outcome.log_tail
        assert handle.warm_parent is not None
        m = metrics(outcome)
        # the parent imported numpy and torch with one thread; the child has the plan's two
        assert m["blas_threads"] == 2.0 and m["torch_threads"] == 2.0 and m["ctx_threads"] == 2.0
        assert m["cuda_initialized"] == 0.0
        draws.append(m["numpy_draw"])
    assert draws[0] != draws[1], "unseeded runs must not share the parent's numpy generator state"
    [parent] = describe_home(pools.home_root)
    assert {"numpy", "torch", "warm_engines"} <= set(parent["preloaded"])


def test_seeded_runs_draw_the_same_numbers_warm_and_cold(pools, tmp_path):
    plan = make_plan_for()
    draws = {}
    for name, backend in (("cold", PythonBackend()), ("warm", PythonBackend(warm=pools))):
        spec = spec_for(tmp_path, "warm_engines:PoolsProbeEngine", f"seed-{name}", seed=7)
        handle, outcome = run(backend, plan, spec)
        assert outcome.state is RunStatus.DONE, outcome.log_tail
        assert (handle.warm_parent is not None) == (name == "warm")
        draws[name] = metrics(outcome)["numpy_draw"]
    assert draws["warm"] == draws["cold"]


def test_the_parent_keeps_one_thread_no_sqlite_and_no_cuda(pools, tmp_path):
    backend = PythonBackend(warm=pools)
    spec = spec_for(tmp_path, "warm_engines:PoolsProbeEngine", "state")
    handle, outcome = run(backend, make_plan_for(threads=2), spec)
    assert outcome.state is RunStatus.DONE
    pid = handle.warm_parent
    names = [Path(f"/proc/{pid}/task/{t}/comm").read_text().strip()
             for t in os.listdir(f"/proc/{pid}/task")]
    assert [n for n in names if n != "jemalloc_bg_thd"] == [Path(f"/proc/{pid}/comm").read_text().strip()]
    targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert not [t for t in targets if t.endswith((".db", ".sqlite", ".sqlite3"))]


def test_unsafe_state_names_threads_and_sqlite(tmp_path):
    code = ("import sqlite3, threading, time, sys\n"
            "from runtime.forkserver import unsafe_state\n"
            "assert unsafe_state() is None, unsafe_state()\n"
            "threading.Thread(target=time.sleep, args=(5,), name='busy', daemon=True).start()\n"
            "print(unsafe_state())\n"
            f"con = sqlite3.connect({str(tmp_path / 'x.db')!r}); con.execute('create table t(x)')\n"
            "print(unsafe_state())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert "it runs 1 more thread(s)" in first
    assert "thread" in second   # still the thread; the SQLite check comes after it
    code2 = ("import sqlite3\nfrom runtime.forkserver import unsafe_state\n"
             f"con = sqlite3.connect({str(tmp_path / 'y.db')!r}); con.execute('create table t(x)')\n"
             "print(unsafe_state())\n")
    out = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert "a SQLite file is open" in out.stdout and "y.db" in out.stdout


def test_a_module_that_starts_threads_is_never_preloaded(pools, home, tmp_path):
    backend = PythonBackend(warm=pools)
    plan = make_plan_for()
    outcomes = []
    for i in range(2):
        spec = spec_for(tmp_path, "warm_engines:ThreadedImportEngine", f"threaded-{i}")
        handle, outcome = run(backend, plan, spec)
        assert outcome.state is RunStatus.DONE, outcome.log_tail
        assert handle.warm_parent is not None, log_of(spec)   # on the parent that refused it
        assert metrics(outcome)["imported"] == 1.0              # the run imports it itself
        outcomes.append(handle.warm_parent)
    assert outcomes[0] == outcomes[1]
    [parent] = describe_home(home)
    assert "threaded_module" not in parent["preloaded"]
    assert "more thread(s)" in parent["unsafe"]["threaded_module"]
    logs = "".join(p.read_text() for p in (home / "warm").glob("*.log"))
    assert "importing threaded_module left this process unsafe to fork" in logs


# --- outcomes: warm and cold alike ------------------------------------------------------------

def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_retail_training_is_identical_warm_and_cold(pools, tmp_path):
    """Same seed, same threads: the same metrics, the same model bytes, the same scores."""
    values = {"trainingDataSetId": str(RETAIL / "retail-training.csv"),
              "ACP_DSW_TARGET_FEATURES": "weeklySales", "n_estimators": 2, "epochs": 3}
    plan = make_plan_for(threads=2)
    results = {}
    for name, backend in (("cold", PythonBackend()), ("warm", PythonBackend(warm=pools))):
        spec = WorkerSpec(run_id=f"retail-{name}", engine="retail-sales", mode="train",
                          values=values, seed=11, run_dir=tmp_path / name)
        handle, outcome = run(backend, plan, spec, timeout=300)
        assert outcome.state is RunStatus.DONE, outcome.log_tail
        assert (handle.warm_parent is not None) == (name == "warm"), log_of(spec)
        results[name] = (metrics(outcome), _digest(Path(outcome.result["model_dir"])))
    assert results["warm"][0] == results["cold"][0]
    assert results["warm"][1] == results["cold"][1]
    scores = {}
    for name, backend in (("cold", PythonBackend()), ("warm", PythonBackend(warm=pools))):
        out = tmp_path / f"scores-{name}.parquet"
        spec = WorkerSpec(run_id=f"score-{name}", engine="retail-sales", mode="score",
                          values={"scoringDataSetId": str(RETAIL / "retail-scoring.csv"),
                                  "scoringResultsDataSetId": str(out)},
                          model_dir=tmp_path / "cold" / "model", seed=11,
                          run_dir=tmp_path / f"score-{name}")
        handle, outcome = run(backend, plan, spec, timeout=300)
        assert outcome.state is RunStatus.DONE, outcome.log_tail
        assert (handle.warm_parent is not None) == (name == "warm")
        scores[name] = pd.read_parquet(outcome.result["output"])
    pd.testing.assert_frame_equal(scores["warm"], scores["cold"], check_exact=True)


# --- a parent that is broken, retiring or refused -------------------------------------------------

def test_a_hung_parent_is_killed_and_its_run_retried_cold(pools, home, tmp_path, monkeypatch):
    backend = PythonBackend(warm=pools)
    plan = make_plan_for()
    handle, outcome = run(backend, plan, spec_for(tmp_path, "noop", "first"))
    hung = handle.warm_parent
    os.kill(hung, signal.SIGSTOP)   # it accepts (the kernel queues) but never answers
    monkeypatch.setattr(warm, "REPLY_TIMEOUT_S", 1.0)
    spec = spec_for(tmp_path, "noop", "found-it-broken")
    handle, outcome = run(backend, plan, spec)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    assert handle.warm_parent is None
    assert "[runtime] cold start: the warm parent did not answer" in log_of(spec)
    from runtime.procs import proc_start_ticks

    assert wait_for(lambda: proc_start_ticks(hung) is None)   # killed (gone, or a zombie)
    # The short wait was for the hung parent; its replacement imports before it answers, which
    # takes longer than 1 s on a loaded host.
    monkeypatch.undo()
    spec = spec_for(tmp_path, "noop", "after")
    handle, outcome = run(backend, plan, spec)
    assert outcome.state is RunStatus.DONE
    assert handle.warm_parent not in (None, hung), log_of(spec)   # a new parent replaced it


def test_a_killed_parent_is_replaced_and_its_running_run_still_ends(pools, home, tmp_path):
    backend = PythonBackend(warm=pools)
    plan = make_plan_for()
    spec = spec_for(tmp_path, "warm_engines:SlowEngine", "orphan")
    handle = backend.submit(spec=spec, plan=plan, log_path=Path(spec.run_dir) / "worker.log")
    parent = handle.warm_parent
    assert parent is not None
    os.kill(parent, signal.SIGKILL)
    (Path(spec.run_dir) / "go").touch()
    outcome = handle.wait(timeout=60)   # the run's status comes from its result, the parent gone
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    assert metrics(outcome)["went"] == 1.0
    handle2, outcome2 = run(backend, plan, spec_for(tmp_path, "noop", "next"))
    assert outcome2.state is RunStatus.DONE
    assert handle2.warm_parent not in (None, parent)


def test_a_parent_retires_after_max_runs(home, tmp_path):
    pools = WarmPools(home, start=True, owned=True, max_runs=2)
    try:
        backend = PythonBackend(warm=pools)
        plan = make_plan_for()
        parents = []
        for i in range(5):
            handle, outcome = run(backend, plan, spec_for(tmp_path, "noop", f"n-{i}"))
            assert outcome.state is RunStatus.DONE
            parents.append(handle.warm_parent)
        assert None not in parents
        assert parents[0] == parents[1] != parents[2] == parents[3] != parents[4]
    finally:
        pools.close()


def test_a_parent_retires_when_its_environment_changes(pools, tmp_path, monkeypatch):
    """A package installed into a site-packages folder on its path, or an engine's source edited:
    the next run gets a new parent. Other files coming and going in its folders change nothing."""
    site = tmp_path / "lib" / "site-packages"
    engines = tmp_path / "my_engines"
    site.mkdir(parents=True)
    engines.mkdir()
    (engines / "edited_engine.py").write_text(
        "from failing_engines import _Base\n\nclass Edited(_Base):\n    name = 'edited'\n\n"
        "    def train(self, ctx, features):\n        ctx.log_metric('version', 1.0)\n")
    monkeypatch.syspath_prepend(str(engines))   # the backend reads the engine's module name
    backend = PythonBackend(warm=pools)
    plan = make_plan_for(PYTHONPATH=os.pathsep.join([WORKER_PATH, str(site), str(engines)]))

    def parent_of(run_id: str, engine: str = "noop") -> int:
        handle, outcome = run(backend, plan, spec_for(tmp_path, engine, run_id))
        assert outcome.state is RunStatus.DONE, outcome.log_tail
        assert handle.warm_parent is not None
        return handle.warm_parent

    first = parent_of("first", "edited_engine:Edited")
    (engines / "notes.txt").write_text("a user's file beside the engine")
    assert parent_of("unrelated-file") == first
    time.sleep(0.02)
    (site / "newly_installed.py").write_text("X = 1\n")      # a package appears
    second = parent_of("installed")
    assert second != first
    assert parent_of("loads-it-again", "edited_engine:Edited") == second
    time.sleep(0.02)
    source = engines / "edited_engine.py"
    source.write_text(source.read_text().replace("1.0", "2.0"))   # the engine is edited
    handle, outcome = run(backend, plan, spec_for(tmp_path, "edited_engine:Edited", "edited"))
    assert handle.warm_parent not in (None, first, second)
    assert metrics(outcome)["version"] == 2.0


def test_a_spare_child_waits_for_the_next_run_and_is_dropped_when_the_parent_changes(
        pools, tmp_path):
    backend = PythonBackend(warm=pools)
    plan = make_plan_for()
    first, _ = run(backend, plan, spec_for(tmp_path, "noop", "first"))
    parent = first.warm_parent
    assert wait_for(lambda: spare_of(parent) is not None)
    spare = spare_of(parent)
    handle, outcome = run(backend, plan, spec_for(tmp_path, "noop", "second"))
    assert outcome.state is RunStatus.DONE and handle.pid == spare   # the spare became the run
    assert wait_for(lambda: spare_of(parent) not in (None, spare))       # and a new one waits
    stale = spare_of(parent)
    # a run that needs a module the parent lacks: imported there, the stale spare dropped
    handle, outcome = run(backend, plan, spec_for(tmp_path, "warm_engines:PoolsProbeEngine", "new"))
    assert outcome.state is RunStatus.DONE and handle.pid != stale
    assert wait_for(lambda: not Path(f"/proc/{stale}").exists())


def test_pythonhashseed_or_no_parent_means_a_cold_start_that_says_why(home, tmp_path):
    pools = WarmPools(home, start=False, owned=False)   # a CLI run with no parent listening
    backend = PythonBackend(warm=pools)
    spec = spec_for(tmp_path, "noop", "no-parent")
    handle, outcome = run(backend, make_plan_for(), spec)
    assert outcome.state is RunStatus.DONE and handle.warm_parent is None
    assert "[runtime]" not in log_of(spec)   # cold is this process's default: nothing to say
    assert listening(home) == []
    spec = spec_for(tmp_path, "noop", "hashseed")
    handle, outcome = run(PythonBackend(warm=WarmPools(home, start=True, owned=True)),
                          make_plan_for(PYTHONHASHSEED="0"), spec)
    assert outcome.state is RunStatus.DONE and handle.warm_parent is None
    assert "PYTHONHASHSEED is set" in log_of(spec)
    assert listening(home) == []


def test_cpu_and_cuda_runs_get_separate_parents(tmp_path):
    env = {"PYTHONPATH": WORKER_PATH}
    assert warm.pool_key(sys.executable, "cpu", env) != warm.pool_key(sys.executable, "cuda", env)
    assert warm.pool_key(sys.executable, "cpu", env) != warm.pool_key(sys.executable, "cpu", {})
    assert warm.socket_name(tmp_path / "a", "k") != warm.socket_name(tmp_path / "b", "k")


def test_pools_close_stops_the_parents_it_started(home, tmp_path):
    pools = WarmPools(home, start=True, owned=True)
    handle, outcome = run(PythonBackend(warm=pools), make_plan_for(), spec_for(tmp_path, "noop", "x"))
    assert outcome.state is RunStatus.DONE and listening(home)
    pools.close()
    assert listening(home) == []
    assert not Path(f"/proc/{handle.warm_parent}").exists()


def test_only_installed_libraries_are_learned(tmp_path, monkeypatch):
    """What a run says it imported reaches the parent only if it is an installed library: a module
    in a working folder (on a team server, one user's file) never does."""
    from runtime.forkserver import _installed

    (tmp_path / "planted_by_a_run.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _installed("numpy") and _installed("pandas.io")
    assert not _installed("planted_by_a_run")
    assert not _installed("no_such_module_anywhere")
    assert not _installed("json")   # the standard library is there already, not learned


def test_a_parent_started_ahead_imports_its_later_modules_between_runs(home, tmp_path):
    """prestart (a server's published Models): one parent, which stays up idle, imports `needs`
    before it serves and `later` once it serves; a run forks from it; a second prestart of the
    same key starts no second parent."""
    pools = WarmPools(home, start=True, owned=True, idle_s=0.5)
    try:
        env = {"PYTHONPATH": WORKER_PATH}
        assert pools.prestart(python=sys.executable, device_kind="cpu", env=env,
                              needs=["engines.noop"], later=["xml.dom.minidom"]) is None
        (parent,) = describe_home(home)
        assert "engines.noop" in parent["preloaded"] and parent["idleS"] == 0
        assert wait_for(lambda: "xml.dom.minidom" in describe_home(home)[0]["preloaded"])
        assert pools.prestart(python=sys.executable, device_kind="cpu", env=env) is None
        handle, outcome = run(PythonBackend(warm=pools), make_plan_for(),
                              spec_for(tmp_path, "noop", "after-prestart"))
        assert outcome.state is RunStatus.DONE and handle.warm_parent == parent["pid"]
        assert parent_pids(home) == [parent["pid"]]
    finally:
        pools.close()
