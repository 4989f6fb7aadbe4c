"""Warm parents from the outside: a real `run serve` starts one on its first python run and stops it
when it stops; CLI runs in the same home use it; `run warm list|stop`, `--warm`, `--cold`, and a
sweep whose trials are forked from a parent it starts and stops."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from web_helpers import REPO, clean_env, noop_instance, start_server, stop_server, train  # noqa: E402

from runtime.warm import listening  # noqa: E402
from warm_helpers import wait_for  # noqa: E402

HEADERS = {"x-api-key": "test", "x-gw-ims-org-id": "local", "x-sandbox-name": "prod",
           "Authorization": "Bearer local"}


def cli(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home)],
                          cwd=REPO, env={**clean_env(), **(env or {})}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def log_of(summary: dict) -> str:
    return Path(summary["log"]).read_text()


def api_run(server, experiment_id: str) -> str:
    """An API train run of the Experiment, waited for; its worker log."""
    url = f"{server.url}/data/sensei/experiments/{experiment_id}/runs"
    created = httpx.post(url, json={"mode": "train"}, headers=HEADERS, timeout=30)
    assert created.status_code in (200, 201), created.text
    run_id = created.json()["id"]

    def ended() -> bool:
        status = httpx.get(f"{url}/{run_id}/status", headers=HEADERS, timeout=30).json()
        return (status.get("status") or status).get("tasks", [{}])[0].get("state") in (
            "DONE", "FAILED", "ABORTED") if isinstance(status, dict) else False

    assert wait_for(ended, 120), "the API run did not end"
    return (server.home / "runs" / run_id / "worker.log").read_text()


def test_a_server_forks_its_runs_shares_its_parent_with_cli_runs_and_stops_it(tmp_path):
    home = tmp_path / "home"
    instance = noop_instance(tmp_path, "warm noop")
    first = train(home, instance)                       # no server: a plain cold run
    assert "warm start" not in log_of(first) and "[runtime]" not in log_of(first)
    server = start_server(home)
    try:
        assert listening(home) == []                    # lazily: nothing before the first run
        log = api_run(server, first["experimentId"])
        assert "warm start: forked from parent" in log, log
        [parent] = json.loads(cli(home, "warm", "list", "--json").stdout)
        assert parent["owner"] == server.process.pid and "pandas" in parent["preloaded"]
        second = train(home, instance)                  # a CLI run in the server's home
        assert f"warm start: forked from parent {parent['pid']}" in log_of(second)
        done = cli(home, "train", str(instance), "--cold", "--json")
        assert "warm start" not in log_of(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        stop_server(server.process)
    assert wait_for(lambda: listening(home) == [], 20), "the server's warm parent outlived it"
    assert not Path(f"/proc/{parent['pid']}").exists() or wait_for(
        lambda: not Path(f"/proc/{parent['pid']}").exists(), 10)


def test_serve_cold_forks_nothing(tmp_path):
    home = tmp_path / "home"
    first = train(home, noop_instance(tmp_path, "cold noop"))
    server = start_server(home, "--cold")
    try:
        log = api_run(server, first["experimentId"])
        assert "warm start" not in log and "[runtime]" not in log
        assert listening(home) == []
    finally:
        stop_server(server.process)


def test_cli_warm_leaves_a_parent_that_waits_then_goes(tmp_path):
    home = tmp_path / "home"
    instance = noop_instance(tmp_path, "cli noop")
    env = {"MLRUNTIME_WARM_IDLE_S": "3"}
    done = cli(home, "train", str(instance), "--warm", "--json", env=env)
    assert "warm start" in log_of(json.loads(done.stdout.strip().splitlines()[-1]))
    [parent] = json.loads(cli(home, "warm", "list", "--json").stdout)
    assert parent["owner"] is None and parent["idleS"] == 3.0
    assert (parent["kind"], parent["home"], parent["runs"]) == ("python", str(home), 1)
    assert parent["idleSince"] <= __import__("time").time()
    again = train(home, instance)                       # plain: uses the one listening
    assert f"forked from parent {parent['pid']}" in log_of(again)
    assert wait_for(lambda: listening(home) == [], 30), "an idle --warm parent did not go"
    # run warm stop: one started again is stopped at once
    cli(home, "train", str(instance), "--warm", env={"MLRUNTIME_WARM_IDLE_S": "600"})
    assert listening(home)
    [parent] = json.loads(cli(home, "warm", "list", "--json").stdout)
    assert f"Stopped 1 warm worker(s): python pid {parent['pid']}" in cli(home, "warm", "stop").stdout
    from runtime.procs import proc_start_ticks

    assert listening(home) == [] and proc_start_ticks(parent["pid"]) is None   # it waited


def test_a_sweep_forks_its_trials_and_stops_its_parent(tmp_path):
    home = tmp_path / "home"
    instance = noop_instance(tmp_path, "sweep noop")
    done = cli(home, "sweep", "train", str(instance), "-p", "echo=a,b,c", "--json")
    rows = json.loads(done.stdout.strip().splitlines()[-1])["rows"]
    assert [r["state"] for r in rows] == ["DONE"] * 3
    logs = [(home / "runs" / r["runId"] / "worker.log").read_text() for r in rows]
    assert all("warm start: forked from parent" in log for log in logs)
    assert listening(home) == []
    cold = cli(home, "sweep", "train", str(instance), "-p", "echo=d,e", "--cold", "--json")
    rows = json.loads(cold.stdout.strip().splitlines()[-1])["rows"]
    assert not any("warm start" in (home / "runs" / r["runId"] / "worker.log").read_text()
                   for r in rows)


def test_a_recipe_forks_from_a_parent_of_its_own_environment(tmp_path):
    """A function-based recipe in its uv environment: the parent runs that environment's Python,
    and its warm runs give the cold run's metrics."""
    import shutil

    fixtures = Path(__file__).resolve().parents[1] / "recipes" / "fixtures"
    recipe = tmp_path / "retail_functions"
    shutil.copytree(fixtures / "retail_functions", recipe)
    home = tmp_path / "home"
    env = {"MLRUNTIME_UV_CACHE_DIR": os.environ.get("MLRUNTIME_UV_CACHE_DIR", ""),
           "MLRUNTIME_WARM_IDLE_S": "60"}
    train = ["train", str(recipe / "retail.config.json"), "--engine", str(recipe), "--json",
             "-p", f"trainingDataSetId={REPO.parent / 'shared' / 'data' / 'retail' / 'retail-training.csv'}"]

    def summary(*extra: str) -> dict:
        done = cli(home, *train, *extra, env=env)
        return json.loads(done.stdout.strip().splitlines()[-1])

    cold = summary("--cold")
    try:
        warm_runs = [summary("--warm"), summary()]
        assert "warm start" in log_of(warm_runs[1]) and "warm start" not in log_of(cold)
        [parent] = json.loads(cli(home, "warm", "list", "--json").stdout)
        assert Path(parent["python"]).is_relative_to(home / "envs")   # the recipe's own Python
        assert {"numpy", "pandas"} <= set(parent["preloaded"])
        for run in warm_runs:
            assert run["metrics"] == cold["metrics"]
    finally:
        cli(home, "warm", "stop")
