"""The dispatcher's plan names the interpreter; the python backend starts the worker with it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime.backends import WorkerSpec
from runtime.backends.python import PythonBackend
from runtime.dispatch import HostInfo, describe, plan as make_plan
from runtime.resources import ResourceRequest
from runtime.schemas import RunStatus

ENGINES = Path(__file__).resolve().parent / "engines"


def _plan(python=None):
    plan = make_plan(engine_kind="python", resources=ResourceRequest(cpus=1),
                     host=HostInfo(cpu_count=1), python=python)
    return plan.model_copy(update={"env": {**plan.env, "PYTHONPATH": str(ENGINES)}})


def test_plan_python_defaults_to_the_runtimes_own_and_is_shown():
    own = _plan()
    assert own.python is None
    assert "python   the runtime's own" in describe(own)
    theirs = _plan("/opt/envs/abc/bin/python")
    assert theirs.python == "/opt/envs/abc/bin/python"
    assert "python   /opt/envs/abc/bin/python" in describe(theirs)
    assert theirs.to_record()["python"] == "/opt/envs/abc/bin/python"


def _train(tmp_path: Path, plan) -> tuple:
    data = tmp_path / "rows.csv"
    data.write_text("x,y\n1,2\n3,4\n5,6\n")
    run_dir = tmp_path / "run"
    spec = WorkerSpec(run_id="run-env", engine="env_probe:EnvProbeEngine", mode="train",
                      values={"trainingDataSetId": str(data)}, run_dir=run_dir)
    outcome = PythonBackend(grace_s=1.0).submit(spec=spec, plan=plan,
                                                log_path=run_dir / "run.log").wait(timeout=180)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    return outcome, json.loads((run_dir / "probe.json").read_text())


def test_worker_runs_in_the_recipe_environment(python_env, tmp_path):
    outcome, probe = _train(tmp_path, _plan(python_env.python))
    assert probe["prefix"] == str(python_env.path)
    assert probe["pandas"] == "1.5.3"
    metrics = {m["name"]: m["value"] for m in outcome.result["metrics"]}
    assert metrics["pandas_major"] == 1.0 and metrics["rows_seen"] == 3.0


def test_worker_without_plan_python_runs_in_the_runtimes_own(tmp_path):
    _, probe = _train(tmp_path, _plan())
    assert probe["prefix"] == sys.prefix
    assert not probe["pandas"].startswith("1.")
