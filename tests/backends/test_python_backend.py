"""The python backend: the conformance suite, then the ways a worker process can die."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backend_conformance import HERE, BackendConformance, make_spec, small_table
from runtime.backends import WorkerSpec, installed_backends, load_backend
from runtime.backends.python import PythonBackend
from runtime.dispatch import detect_host, plan as make_plan
from runtime.errors import ConfigError
from runtime.resources import ResourceRequest
from runtime.schemas import RunStatus
from runtime.warm import WarmPools
from waiting import until

REPO = HERE.parents[1]


def _with_test_engines(plan):
    """The plan, with this folder on the worker's import path for `failing_engines`."""
    return plan.model_copy(update={"env": {**plan.env, "PYTHONPATH": str(HERE)}})


@pytest.fixture(params=["cold", "warm"])
def backend(request, tmp_path):
    """Every test here runs twice: a cold worker per run, and runs forked from a warm parent
    (runtime.forkserver) of its own, started for the test and stopped after it."""
    if request.param == "cold":
        yield PythonBackend(grace_s=1.0)
        return
    pools = WarmPools(tmp_path / "warm-home", start=True, owned=True)
    yield WarmOnlyBackend(grace_s=1.0, warm=pools)
    pools.close()


class WarmOnlyBackend(PythonBackend):
    """A python backend whose every run must have been forked warm (no silent cold fallback)."""

    def submit(self, **kwargs):
        handle = super().submit(**kwargs)
        assert handle.warm_parent is not None, Path(kwargs["log_path"]).read_text()
        return handle


@pytest.fixture
def plan():
    return _with_test_engines(make_plan(engine_kind="python", resources=ResourceRequest(cpus=1),
                                        host=detect_host()))


def run(backend, plan, spec, **kwargs):
    return backend.submit(spec=spec, plan=plan, log_path=Path(spec.run_dir) / "run.log", **kwargs)


class TestPythonBackendConformance(BackendConformance):
    pass


# --- how a worker can die ------------------------------------------------------------------------

def test_sys_exit_in_engine_is_failed_with_exit_code(backend, plan, tmp_path):
    outcome = run(backend, plan, make_spec(tmp_path, "failing_engines:ExitingEngine")).wait(timeout=60)
    assert outcome.state is RunStatus.FAILED
    assert outcome.returncode == 3
    assert outcome.reason == "worker exited with code 3"
    assert outcome.result["error"]["type"] == "SystemExit"  # recorded before exiting


def test_sigkill_is_failed_and_suggests_out_of_memory(backend, plan, tmp_path):
    outcome = run(backend, plan, make_spec(tmp_path, "failing_engines:OomKilledEngine")).wait(timeout=60)
    assert outcome.state is RunStatus.FAILED
    assert outcome.returncode == -9
    assert "SIGKILL" in outcome.reason and "out of memory" in outcome.reason
    assert outcome.result is None  # no chance to write one
    assert "stage train" in outcome.log_tail


def test_segfault_is_failed_and_named(backend, plan, tmp_path):
    outcome = run(backend, plan, make_spec(tmp_path, "failing_engines:SegfaultEngine")).wait(timeout=60)
    assert outcome.state is RunStatus.FAILED
    assert "SIGSEGV" in outcome.reason and "segmentation fault" in outcome.reason
    assert "Fatal Python error" in outcome.log_tail  # faulthandler's stack in the log


def test_cancel_kills_the_whole_process_group(backend, plan, tmp_path):
    spec = make_spec(tmp_path, "failing_engines:SleepingEngine")
    handle = run(backend, plan, spec)
    pid_file = Path(spec.run_dir) / "child.pid"
    until(pid_file.exists, timeout_s=30, what="the engine's child")
    child = int(pid_file.read_text())
    assert _alive(child)

    handle.cancel()  # the child ignores SIGTERM: this needs the SIGKILL after the grace period
    outcome = handle.wait(timeout=30)
    assert outcome.state is RunStatus.ABORTED
    assert "SIGKILL" in outcome.reason
    until(lambda: not _alive(child), timeout_s=5, what=f"the child {child} to be gone")


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_worker_gets_the_plans_threads_own_session_and_no_gpu_no_torch(backend, plan, tmp_path):
    # the plan (1 thread, cpu) wins over what the caller put in the spec
    spec = make_spec(tmp_path, "failing_engines:ProbeEngine", threads=5, device="cuda")
    outcome = run(backend, plan, spec).wait(timeout=60)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    metrics = {m["name"]: m["value"] for m in outcome.result["metrics"]}
    assert metrics == {"torch_imported": 0.0, "threads": 1.0, "omp_threads": 1.0, "cuda_hidden": 1.0,
                       "own_session": 1.0}
    assert "probe steps: 4/4" in outcome.log_tail


# --- modes and files -------------------------------------------------------------------------------

def test_spec_file_is_private(backend, plan, tmp_path):
    spec = make_spec(tmp_path, "noop")
    run(backend, plan, spec).wait(timeout=60)
    mode = stat.S_IMODE(os.stat(Path(spec.run_dir) / "spec.json").st_mode)
    assert mode == 0o600


def test_noop_score_and_feature_pipeline_write_csv_and_parquet(backend, plan, tmp_path):
    trained = run(backend, plan, make_spec(tmp_path, "noop", run_id="train")).wait(timeout=60)
    assert trained.state is RunStatus.DONE
    data = str(small_table(tmp_path))

    scores = tmp_path / "out" / "scores.csv"
    spec = make_spec(tmp_path, "noop", "score", run_id="score", model_dir=Path(trained.result["model_dir"]),
                     values={"scoringDataSetId": data, "scoringResultsDataSetId": str(scores)})
    outcome = run(backend, plan, spec).wait(timeout=60)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    assert outcome.result["output"] == str(scores) and outcome.result["rows"] == 3
    assert scores.read_text().splitlines()[0] == "x,y"

    spec = make_spec(tmp_path, "noop", "featurePipeline", run_id="fp", values={"scoringDataSetId": data})
    outcome = run(backend, plan, spec).wait(timeout=60)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    assert outcome.result["output"] == str(Path(spec.run_dir) / "features.parquet")
    import pandas as pd
    assert len(pd.read_parquet(outcome.result["output"])) == 3


def test_score_without_model_dir_fails_clearly(backend, plan, tmp_path):
    spec = make_spec(tmp_path, "noop", "score", values={"scoringDataSetId": str(small_table(tmp_path))})
    outcome = run(backend, plan, spec).wait(timeout=60)
    assert outcome.state is RunStatus.FAILED and "model_dir" in outcome.reason


def test_secret_values_reach_the_worker_in_clear(tmp_path):
    from pydantic import SecretStr

    spec = WorkerSpec(run_id="r", engine="noop", mode="train", run_dir=tmp_path,
                      values={"token": SecretStr("s3cr3t")})
    path = spec.write(tmp_path / "spec.json")
    assert json.loads(path.read_text())["values"]["token"] == "s3cr3t"


def test_spec_refuses_an_alias_mode(tmp_path):
    with pytest.raises(ConfigError):
        WorkerSpec(run_id="r", engine="noop", mode="fp", run_dir=tmp_path)


# --- registry --------------------------------------------------------------------------------------

def test_builtin_backends_are_entry_points():
    # Needs `pip install -e . --no-deps` after pyproject changes.
    backends = installed_backends()
    assert {"python-cpu", "python-cuda"} <= set(backends)
    assert isinstance(load_backend("python-cpu"), PythonBackend)
    assert load_backend("python-cuda").name == "python-cuda"


def test_unknown_backend_lists_installed_ones():
    with pytest.raises(ConfigError) as info:
        load_backend("slurm")
    assert "slurm" in str(info.value) and "python-cpu" in str(info.value)


@pytest.mark.parametrize("module", ["runtime.backends", "runtime.backends.python", "runtime.dispatch"])
def test_import_does_not_import_heavy_libraries(module):
    code = (f"import sys, {module}; "
            "print(','.join(m for m in ('torch', 'pyspark', 'ray', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- a real GPU ------------------------------------------------------------------------------------

@pytest.mark.skipif(not detect_host().cuda_devices, reason="no CUDA device on this host")
def test_noop_on_cuda(backend, tmp_path):
    cuda_plan = make_plan(engine_kind="python", resources=ResourceRequest(), host=detect_host(),
                          device="cuda")
    assert cuda_plan.backend == "python-cuda" and cuda_plan.device == "cuda:0"
    spec = make_spec(tmp_path, "noop", device=cuda_plan.device, threads=cuda_plan.threads)
    outcome = load_backend(cuda_plan.backend).submit(spec=spec, plan=cuda_plan,
                                                     log_path=tmp_path / "run.log").wait(timeout=120)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    assert "on cuda:0" in outcome.log_tail


@pytest.mark.skipif(not detect_host().cuda_devices, reason="no CUDA device on this host")
def test_cuda_worker_sees_exactly_the_planned_gpu(backend, tmp_path):
    host = detect_host()
    last = host.cuda_devices[-1].index
    cuda_plan = _with_test_engines(make_plan(engine_kind="python", resources=ResourceRequest(),
                                             host=host, device=f"cuda:{last}"))
    assert cuda_plan.gpu_indices == (last,)
    spec = make_spec(tmp_path, "failing_engines:CudaProbeEngine", device=cuda_plan.device)
    outcome = run(backend, cuda_plan, spec).wait(timeout=120)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    metrics = {m["name"]: m["value"] for m in outcome.result["metrics"]}
    assert metrics == {"cuda_device_count": 1.0, "sum": 256.0 ** 3}
