"""`run sweep` end to end: trials are ordinary runs of one Experiment through the run queue; the
retail engine on the shared retail data; a failed trial does not stop the sweep; resume skips
what finished; Ctrl-C stops everything and leaves no worker."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.home import resolve_home
from runtime.listing import Filter, ListQuery
from runtime.schemas import EXPERIMENT_RUN, MODEL
from runtime.registry import Caller, Registry

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RETAIL = (REPO / ".." / "shared" / "data" / "retail" / "retail-training.csv").resolve()


@pytest.fixture
def env(tmp_path):
    out = {k: v for k, v in os.environ.items() if k != "MLRUNTIME_MAX_CONCURRENT_RUNS"}
    out.update(MLRUNTIME_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    return out


def quad_instance(tmp_path: Path, **params: str) -> Path:
    data = tmp_path / "tiny.csv"
    data.write_text("a,b\n1,2\n")
    path = tmp_path / "quad.json"
    path.write_text(json.dumps({"name": "quad", "engineId": "sweep_engines:Quadratic", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(data)},
                                         *({"key": k, "value": v} for k, v in params.items())]}]}))
    return path


def sweep(env, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", "sweep", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def table_of(result: subprocess.CompletedProcess) -> dict:
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def runs_of(env, experiment_id: str) -> list[dict]:
    registry = Registry.open(resolve_home(env["MLRUNTIME_HOME"]))
    try:
        page = registry.list(EXPERIMENT_RUN, Caller.local(), ListQuery(
            filters=(Filter("experimentId", "==", experiment_id, "str"),), limit=100))
        return page.children
    finally:
        registry.close()


@pytest.mark.skipif(not RETAIL.is_file(), reason="the shared retail data is missing")
def test_a_retail_sweep_on_cpu_slots_ranks_runs_saves_results_and_tags_the_best(env, tmp_path):
    instance = json.loads((REPO / "configs" / "retail-sales.json").read_text())
    for task in instance["tasks"]:
        for p in task.get("parameters", []):
            if p["key"] == "trainingDataSetId":
                p["value"] = str(RETAIL)
    target = tmp_path / "retail.json"
    target.write_text(json.dumps(instance))
    result = sweep(env, "train", str(target), "-p", "learning_rate=0.003,0.03",
                   "-p", "epochs=2", "-p", "n_estimators=2", "--parallel", "2",
                   "--metric", "MAPE", "--mode", "min", "--json")
    assert result.returncode == 0, result.stderr
    table = table_of(result)
    rows = table["rows"]
    assert [r["state"] for r in rows] == ["DONE", "DONE"]
    assert rows[0]["metric"] <= rows[1]["metric"] and table["best"]["trial"] == rows[0]["trial"]
    assert {r["params"]["learning_rate"] for r in rows} == {"0.003", "0.03"}
    assert "[1/2] trial" in result.stderr and "[2/2] trial" in result.stderr   # as they finish
    folder = Path(env["MLRUNTIME_HOME"]) / "sweeps" / table["sweepId"]
    with open(folder / "results.csv") as fh:
        saved = list(csv.DictReader(fh))
    assert [r["runId"] for r in saved] == [r["runId"] for r in rows]
    assert float(saved[0]["MAPE"]) == pytest.approx(rows[0]["metric"])
    assert json.loads((folder / "results.json").read_text()) == rows
    # ordinary runs of one Experiment, each with its parameters; the best Model tagged
    runs = runs_of(env, table["experimentId"])
    assert {r["id"] for r in runs} == {r["runId"] for r in rows}
    assert all(r["sweep"]["id"] == table["sweepId"] for r in runs)
    registry = Registry.open(resolve_home(env["MLRUNTIME_HOME"]))
    try:
        best = registry.get(MODEL, Caller.local(), rows[0]["modelId"])
        other = registry.get(MODEL, Caller.local(), rows[1]["modelId"])
    finally:
        registry.close()
    assert best["tags"]["sweepBest"].startswith("MAPE=") and "sweepBest" not in other["tags"]
    assert best["tags"]["sweepId"] == other["tags"]["sweepId"] == table["sweepId"]


def test_a_failed_trial_does_not_stop_the_sweep_and_resume_reruns_only_the_unfinished(env,
                                                                                       tmp_path):
    marker = tmp_path / "fail-now"
    marker.write_text("")
    target = quad_instance(tmp_path)
    # x=1 fails while the marker exists (its fail_if_exists names it); the others don't look.
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("params:\n  x: [2, 3, 5]\nmetric: loss\nmode: min\nparallel: 2\n")
    result = sweep(env, "train", str(target), "--file", str(sweep_file),
                   "-p", "epochs=2", "--json")
    assert result.returncode == 0, result.stderr   # nothing failed yet: now one that fails
    first = table_of(result)
    assert [r["params"]["x"] for r in first["rows"]] == ["3", "2", "5"]   # sorted by loss

    result = sweep(env, "train", str(target), "-p", "x=1,3", "-p", f"fail_if_exists={marker}",
                   "-p", "fail_x=1", "--metric", "loss", "--json")
    assert result.returncode == 1
    table = table_of(result)
    by_x = {r["params"]["x"]: r for r in table["rows"]}
    assert by_x["3"]["state"] == "DONE" and by_x["1"]["state"] == "FAILED"
    assert "failing on purpose" in by_x["1"]["reason"]
    assert [r["params"]["x"] for r in table["rows"]] == ["3", "1"]   # failures last

    marker.unlink()
    resumed = sweep(env, "--resume", table["sweepId"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    again = {r["params"]["x"]: r for r in table_of(resumed)["rows"]}
    assert again["3"]["runId"] == by_x["3"]["runId"]            # finished: kept, not rerun
    assert again["1"]["state"] == "DONE" and again["1"]["runId"] != by_x["1"]["runId"]
    assert again["1"]["metric"] == 4.0
    assert len(runs_of(env, table["experimentId"])) == 3        # 2 + the one rerun

    bad = sweep(env, "--resume", "no-such-sweep")
    assert bad.returncode == 1 and "not found" in bad.stderr
    bad = sweep(env, "train", str(target), "-p", "x=loguniform(1,2)")
    assert bad.returncode == 1 and "--samples" in bad.stderr


def _workers(home: Path) -> list[int]:
    needle = str(home / "runs").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"runtime.worker" in cmdline and not stat[
                stat.rindex(b")") + 2:].startswith(b"Z"):
            found.append(int(entry))
    return found


def test_ctrl_c_stops_the_whole_sweep_and_leaves_no_worker(env, tmp_path):
    target = quad_instance(tmp_path)
    home = Path(env["MLRUNTIME_HOME"])
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "sweep", "train",
                             str(target), "-p", "x=1,2,3,4", "-p", "sleep_ms=120000",
                             "--parallel", "2", "--json"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while len(_workers(home)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_workers(home)) == 2, "two trials should be running"
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    deadline = time.monotonic() + 10
    while _workers(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _workers(home) == []
    rows = json.loads(out.strip().splitlines()[-1])["rows"]
    states = sorted(r["state"] for r in rows)
    assert states == ["ABORTED", "ABORTED", "NOT STARTED", "NOT STARTED"], rows


def test_stop_early_median_stops_a_trial_worse_than_the_completed_ones(env, tmp_path):
    target = quad_instance(tmp_path)
    # x=3 twice (loss 0 every epoch) complete first; x=9 (loss 36 * (1 + 1/epoch)) is stopped at
    # epoch 2, well before its 6 s are up.
    started = time.monotonic()
    result = sweep(env, "train", str(target), "-p", "x=3,3.0,9", "-p", "epochs=6",
                   "-p", "sleep_ms=6000", "--metric", "loss", "--stop-early", "median", "--json")
    assert result.returncode == 0, result.stderr
    table = table_of(result)
    by_x = {r["params"]["x"]: r for r in table["rows"]}
    assert by_x["3"]["state"] == by_x["3.0"]["state"] == "DONE"
    stopped = by_x["9"]
    assert stopped["state"] == "STOPPED EARLY", stopped
    assert "worse than the median 0 of 2 completed trials" in stopped["reason"]
    assert stopped["duration_s"] is not None and stopped["duration_s"] < 5.5
    assert table["best"]["params"]["x"] in ("3", "3.0")
    run = [r for r in runs_of(env, table["experimentId"]) if r["id"] == stopped["runId"]]
    assert run and run[0]["sweep"]["params"]["x"] == "9"
    bad = sweep(env, "train", str(target), "-p", "x=1,2", "--stop-early", "median")
    assert bad.returncode == 1 and "needs --metric" in bad.stderr
    del started


def test_trials_ending_together_are_reported_one_after_the_other(tmp_path):
    """Progress lines count reports, not finished rows: two trials whose runs end at the same
    moment print [1/3] and [2/3] (they printed [2/3] twice), and a resumed sweep counts on from
    the trials it keeps."""
    from runtime.sweep import SweepRunner

    registry = Registry.open(resolve_home(str(tmp_path / "home")))
    try:
        state = SweepRunner.new_state(
            instance_id="i", experiment_id="e", mode="train", base={}, metric="MAPE",
            order="min", parallel=3, keys=["lr"], target="t",
            trials=[{"lr": "0.1"}, {"lr": "0.2"}, {"lr": "0.3"}])
        lines: list[str] = []
        runner = SweepRunner(registry, Caller.local(), state, out=lines.append, executor=object())
        first, second, third = state["rows"]
        for row, value in ((first, 0.2), (second, 0.1)):   # both end before either reports
            row.update(state="DONE", metric=value, duration_s=1.0)
        runner._report(first)
        runner._report(second)
        assert [line.split(" trial ")[0] for line in lines] == ["[1/3]", "[2/3]"]
        assert lines[0].startswith("[1/3] trial 0 DONE MAPE=0.2 in 1.0 s: lr=0.1")

        resumed: list[str] = []   # a resume keeps the two DONE trials and runs the third
        again = SweepRunner(registry, Caller.local(), state, out=resumed.append, executor=object())
        third.update(state="FAILED", reason="boom")
        again._report(third)
        assert resumed == ["[3/3] trial 2 FAILED: lr=0.3 run - (boom)"]
    finally:
        registry.close()
