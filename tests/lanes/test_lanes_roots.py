"""Data roots on a real token server: data sets outside the roots are refused at create (403) and
at run time (FAILED before any I/O), inside they run; CLI and no-token servers only when configured.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lanes_helpers import NOOP_ENGINE, ORG, ROOT, client, instance_body
from live_server import live_server, new_sandbox, sensei_client, server_env
from waiting import wait_run
from runtime.data_roots import DATA_SET_KEYS, DataRoots, configured_roots
from runtime.errors import Forbidden

REPO = Path(__file__).resolve().parents[2]


def _outside_values(lanes: dict) -> dict[str, str]:
    root, outside = lanes["root"], lanes["outside"]
    return {
        "absolute": str(outside / "private.csv"),
        "dotdot": str(root / ".." / "outside" / "private.csv"),
        "symlink": str(root / "escape.csv"),
        "symlinked folder": str(root / "outdir" / "private.csv"),
        "file uri": (outside / "private.csv").as_uri(),
        "etc": "/etc/hosts",
        "relative": os.path.relpath(outside / "private.csv", REPO),   # the server runs in REPO
        "home relative": "~/private.csv",
        "bare file name": "private.csv",
        "remote uri": "s3://bucket/data.csv",
    }


def _engine(c) -> str:
    created = c.post("/engines", json=NOOP_ENGINE)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def test_create_and_update_refuse_every_kind_of_path_outside(lanes: dict) -> None:
    root = str(lanes["root"])
    with client(lanes["server"], new_sandbox(), token=ROOT) as c:
        engine_id = _engine(c)
        ok = c.post("/mlInstances", json=instance_body(engine_id,
                                                       trainingDataSetId=str(lanes["root"] / "train.csv")))
        assert ok.status_code == 201, ok.text
        for name, value in _outside_values(lanes).items():
            for key in ("trainingDataSetId", "scoringResultsDataSetId"):
                body = instance_body(engine_id, **{key: value})
                for response in (c.post("/mlInstances", json=body),
                                 c.put(f"/mlInstances/{ok.json()['id']}", json=body)):
                    assert response.status_code == 403, (name, response.text)
                    detail = response.json()["detail"]
                    assert key in detail and root in detail, (name, detail)
        # An experiment's template is checked the same way.
        exp = c.post("/experiments", json={"name": "x", "mlInstanceId": ok.json()["id"],
                                          "template": {"tasks": [{"name": "train", "parameters": [
                                              {"key": "featuresDataSetId",
                                               "value": str(lanes["outside"] / "f.parquet")}]}]}})
        assert exp.status_code == 403 and "featuresDataSetId" in exp.json()["detail"]
        listed = c.get("/mlInstances").json()
        assert listed["_page"]["totalCount"] == 1   # nothing refused was written
        assert c.get(f"/mlInstances/{ok.json()['id']}").json()["tasks"] == \
            ok.json()["tasks"]


def test_inside_the_roots_paths_and_file_uris_are_accepted(lanes: dict) -> None:
    root = lanes["root"]
    with client(lanes["server"], new_sandbox(), token=ROOT) as c:
        engine_id = _engine(c)
        for value in (str(root / "train.csv"), (root / "train.csv").as_uri(),
                      str(root / "sub" / ".." / "train.csv"), str(root / "new" / "out.parquet"),
                      "5c6bd4ee84b2a01cbb8cb1e3"):   # a platform data set id, registered later
            response = c.post("/mlInstances", json=instance_body(
                engine_id, trainingDataSetId=value, scoringResultsDataSetId=value))
            assert response.status_code == 201, (value, response.text)


def _run(c, engine_id: str, run_params: dict[str, str] | None = None,
         **instance_params: str) -> tuple[dict, str]:
    instance = c.post("/mlInstances", json=instance_body(engine_id, **instance_params))
    assert instance.status_code == 201, instance.text
    exp = c.post("/experiments", json={"name": "x", "mlInstanceId": instance.json()["id"]})
    body: dict = {"mode": "train"}
    if run_params:
        body["tasks"] = [{"name": "train", "parameters": [
            {"key": k, "value": v} for k, v in run_params.items()]}]
    run = c.post(f"/experiments/{exp.json()['id']}/runs", json=body)
    assert run.status_code == 201, run.text
    return wait_run(c, run.json()["id"], experiment_id=exp.json()["id"]), run.json()["id"]


def test_a_run_level_override_outside_fails_the_run_before_any_io(lanes: dict) -> None:
    root, outside = lanes["root"], lanes["outside"]
    target = outside / "features-written.parquet"
    with client(lanes["server"], new_sandbox(), token=ROOT) as c:
        engine_id = _engine(c)
        task, run_id = _run(c, engine_id, {"trainingDataSetId": str(root / "escape.csv")},
                            trainingDataSetId=str(root / "train.csv"))
        assert task["state"] == "FAILED"
        assert "trainingDataSetId" in task["message"] and str(root) in task["message"]
        # Nothing started: no run folder, no worker log.
        assert not (lanes["server"].home / "runs" / run_id / "worker.log").exists()
        task, _ = _run(c, engine_id, {"featuresDataSetId": str(target)},
                       trainingDataSetId=str(root / "train.csv"))
        assert task["state"] == "FAILED"
        assert "featuresDataSetId" in task["message"]
    assert not target.exists()


def test_a_run_inside_the_roots_runs(lanes: dict) -> None:
    root = lanes["root"]
    with client(lanes["server"], new_sandbox(), token=ROOT) as c:
        engine_id = _engine(c)
        task, _ = _run(c, engine_id, trainingDataSetId=str(root / "train.csv"))
        assert task["state"] == "DONE", task


def test_with_tokens_and_no_roots_configured_the_home_data_folder_is_the_root(tmp_path: Path) -> None:
    home = tmp_path / "home"
    outside = tmp_path / "elsewhere.csv"
    with live_server(home, "--token", "t=u") as server, \
            sensei_client(server.api_url, new_sandbox(), token="t") as c:
        engine_id = _engine(c)
        assert (home / "data").is_dir()
        inside = c.post("/mlInstances", json=instance_body(
            engine_id, trainingDataSetId=str(home / "data" / "x.csv")))
        assert inside.status_code == 201, inside.text
        refused = c.post("/mlInstances", json=instance_body(engine_id,
                                                            trainingDataSetId=str(outside)))
        assert refused.status_code == 403 and str(home / "data") in refused.json()["detail"]
        # The rest of the home (registry, runs, artifacts) is never a data set.
        for name in ("registry.db", "runs/x/spec.json", "artifacts/models/m/model.json"):
            refused = c.post("/mlInstances", json=instance_body(
                engine_id, scoringResultsDataSetId=str(home / name)))
            assert refused.status_code == 403, name


def test_without_tokens_roots_apply_only_when_configured(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from runtime.api.app import ServerSettings, create_app
    from runtime.home import resolve_home

    anywhere = tmp_path / "anywhere.csv"
    app = create_app(ServerSettings(home=resolve_home(tmp_path / "home0")))   # loopback, no roots
    try:
        with TestClient(app) as c:
            engine_id = c.post("/data/sensei/engines", json=NOOP_ENGINE).json()["id"]
            assert c.post("/data/sensei/mlInstances", json=instance_body(
                engine_id, trainingDataSetId=str(anywhere))).status_code == 201
    finally:
        app.state.registry.close()
    with live_server(tmp_path / "home2", "--data-root", str(tmp_path / "data")) as server, \
            sensei_client(server.api_url, new_sandbox(), token=None) as c:
        engine_id = _engine(c)
        assert c.post("/mlInstances", json=instance_body(
            engine_id, trainingDataSetId=str(anywhere))).status_code == 403


def test_the_cli_applies_roots_from_the_environment(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "t.csv").write_text("a,b\n1,2\n")
    config = tmp_path / "noop.json"
    config.write_text(json.dumps({"name": "cli-lanes", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId",
                                          "value": str(outside / "t.csv")}]}]}))
    command = [sys.executable, "-m", "runtime.cli.main", "train", str(config),
               "--home", str(tmp_path / "home")]
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                             env={**server_env(), "MLRUNTIME_DATA_ROOTS": str(data)})
    assert refused.returncode == 1
    assert "trainingDataSetId" in refused.stderr and str(data) in refused.stderr
    assert "Traceback" not in refused.stderr
    allowed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                             env=server_env())
    assert allowed.returncode == 0, allowed.stderr


def test_data_roots_unit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    roots = DataRoots.of([tmp_path], home=home)   # a root that holds the home
    assert roots.allows(tmp_path / "a.csv") and roots.allows(home / "data" / "a.csv")
    assert not roots.allows(home / "registry.db") and not roots.allows(home / "runs" / "r")
    with pytest.raises(Forbidden):
        roots.check("scoringDataSetId", "file://otherhost/x.csv")
    assert configured_roots([], env=f"/a{os.pathsep}/b{os.pathsep}") == ["/a", "/b"]
    assert configured_roots(["/c"], env="/a") == ["/c"]


def test_every_key_the_worker_reads_or_writes_is_checked() -> None:
    from runtime import worker

    assert set(worker.DATA_SET_KEYS) <= set(DATA_SET_KEYS)


def _add_dataset(home: Path, sandbox: str, dataset_id: str, path: Path, *extra: str) -> None:
    done = subprocess.run([sys.executable, "-m", "runtime.cli.main", "datasets", "add", dataset_id,
                           str(path), "--home", str(home), "--org", ORG, "--sandbox", sandbox,
                           *extra], cwd=REPO, env=server_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_catalog_entries_are_checked_through_the_file_they_name(lanes: dict) -> None:
    server, root, outside = lanes["server"], lanes["root"], lanes["outside"]
    sandbox = new_sandbox()
    # Registered from a CLI without roots (the CLI only applies configured ones).
    _add_dataset(server.home, sandbox, "mine", root / "train.csv")
    _add_dataset(server.home, sandbox, "private", outside / "private.csv")
    _add_dataset(server.home, sandbox, "sneaky", root / "escape.csv")
    with client(server, sandbox, token=ROOT) as c:
        engine_id = _engine(c)
        for dataset_id in ("private", "sneaky"):
            refused = c.post("/mlInstances", json=instance_body(engine_id,
                                                                trainingDataSetId=dataset_id))
            assert refused.status_code == 403, refused.text
            assert f"trainingDataSetId '{dataset_id}'" in refused.json()["detail"]
            assert str(root) in refused.json()["detail"]
        task, _ = _run(c, engine_id, trainingDataSetId="mine")
        assert task["state"] == "DONE", task
        # The entry re-pointed outside after the MLInstance was written: the run is refused.
        _add_dataset(server.home, sandbox, "mine", outside / "private.csv", "--replace")
        instance = c.get("/mlInstances").json()["children"][0]
        exp = c.post("/experiments", json={"name": "y", "mlInstanceId": instance["id"]}).json()
        run = c.post(f"/experiments/{exp['id']}/runs", json={"mode": "train"}).json()
        task = wait_run(c, run["id"], experiment_id=exp["id"])
        assert task["state"] == "FAILED" and "trainingDataSetId 'mine'" in task["message"]
        assert not (server.home / "runs" / run["id"] / "worker.log").exists()


def test_a_data_set_under_a_key_of_the_engines_own_is_confined_in_the_run(lanes: dict) -> None:
    """The worker checks again at the moment of I/O, through runtime.datasets: a key the server
    does not know, a symlink swapped after the check, a recipe's own reader — all stay inside."""
    root, outside = lanes["root"], lanes["outside"]
    reader = {"name": "reader", "type": "Python", "artifacts": {"default": {"image": {
        "location": "tests.lanes.reader_engine:ReaderEngine"}}}}
    with client(lanes["server"], new_sandbox(), token=ROOT) as c:
        engine = c.post("/engines", json=reader)
        assert engine.status_code == 201, engine.text
        task, _ = _run(c, engine.json()["id"], trainingDataSetId=str(root / "train.csv"),
                       lookupDataSetId=str(root / "train.csv"))
        assert task["state"] == "DONE", task
        for lookup in (str(outside / "private.csv"), str(root / "escape.csv")):
            task, _ = _run(c, engine.json()["id"], trainingDataSetId=str(root / "train.csv"),
                           lookupDataSetId=lookup)
            assert task["state"] == "FAILED" and str(root) in task["message"], task
            assert "outside this server's data roots" in task["message"]


def test_an_mlservice_naming_a_data_set_outside_is_refused(lanes: dict) -> None:
    schedule = {"startTime": "2019-01-01T00:00:00.000Z", "endTime": "2029-01-01T00:00:00.000Z",
                "cron": "20 * * * *"}
    with client(lanes["server"], new_sandbox(), token=ROOT) as c:
        engine_id = _engine(c)
        instance = c.post("/mlInstances", json=instance_body(engine_id)).json()

        def service(scoring: str) -> dict:
            return {"name": "s", "mlInstanceId": instance["id"], "scoringDataSetId": scoring,
                    "scoringTimeframe": 10000, "scoringSchedule": schedule}
        refused = c.post("/mlServices", json=service(str(lanes["outside"] / "private.csv")))
        assert refused.status_code == 403 and "scoringDataSetId" in refused.json()["detail"]
        assert c.post("/mlServices", json=service("dataset-score-1")).status_code == 201
        assert c.post("/mlServices", json=service(str(lanes["root"] / "train.csv"))).status_code \
            == 201
