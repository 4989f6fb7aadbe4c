"""Secret parameters on a real token server: a train run whose engine prints, logs and raises with
its secret; the secret is searched for in every document and log the run produces."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from lanes_helpers import ROOT, client
from live_server import new_sandbox, server_env
from waiting import wait_run

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-LANES-9f8e7d6c5b4a"
SECRET_BAD = "notanumber-7e7e7e7e"   # a secret with a bad value: the error must not show it
ENGINE = {"name": "secret", "type": "Python", "artifacts": {"default": {"image": {
    "location": "tests.lanes.secret_engine:SecretEngine", "name": "secret",
    "packagingType": "egg"}}}}


def _param(key: str, value: str, secret: bool = False) -> dict:
    return {"key": key, "value": value, **({"secret": True} if secret else {})}


def _documents(c, experiment_id: str, run_ids: list[str]) -> dict[str, str]:
    """Every document the API serves about these runs, and their task logs, as text."""
    docs = {}
    for run_id in run_ids:
        base = f"/experiments/{experiment_id}/runs/{run_id}"
        docs[f"run {run_id}"] = c.get(base).text
        status = c.get(base + "/status")
        docs[f"status {run_id}"] = status.text
        for log in status.json()["status"]["tasks"][0].get("tasklogs") or []:
            served = c.get(log["url"].removeprefix("/data/sensei"))
            assert served.status_code == 200
            docs[f"log {run_id} {log['name']}"] = served.text
    for path in ("/experiments/" + experiment_id, f"/experiments/{experiment_id}/runs",
                 "/mlInstances", "/models", "/insights", "/engines"):
        docs[path] = c.get(path).text
    for model in c.get("/models").json()["children"]:
        docs[f"model {model['id']}"] = c.get(f"/models/{model['id']}").text
    return docs


def test_a_secret_never_appears_in_documents_logs_or_errors(lanes: dict) -> None:
    server, root = lanes["server"], lanes["root"]
    with client(server, new_sandbox(), token=ROOT) as c:
        engine = c.post("/engines", json=ENGINE).json()
        instance = c.post("/mlInstances", json={"name": "secret", "engineId": engine["id"], "tasks": [
            {"name": "train", "parameters": [
                _param("trainingDataSetId", str(root / "train.csv")),
                _param("apiKey", SECRET, secret=True)]}]})
        assert instance.status_code == 201, instance.text
        assert SECRET not in instance.text
        exp = c.post("/experiments", json={"name": "s", "mlInstanceId": instance.json()["id"]}).json()
        runs = {}
        for name, tasks in {
            "ok": None,
            "engine error": [{"name": "train", "parameters": [_param("fail", "true")]}],
            "bad secret value": [{"name": "train", "parameters": [
                _param("batchSize", SECRET_BAD, secret=True)]}],
            "bad secret run key": [{"name": "train", "parameters": [
                _param("retries", SECRET_BAD, secret=True)]}],
        }.items():
            body = {"mode": "train", **({"tasks": tasks} if tasks else {})}
            created = c.post(f"/experiments/{exp['id']}/runs", json=body)
            assert created.status_code == 201, created.text
            runs[name] = created.json()["id"]
            runs[name + " status"] = wait_run(c, runs[name], experiment_id=exp["id"])
        assert runs["ok status"]["state"] == "DONE", runs["ok status"]
        assert runs["engine error status"]["state"] == "FAILED"
        assert "the service refused key ********" in runs["engine error status"]["message"]
        for name, key in (("bad secret value", "batchSize"), ("bad secret run key", "retries")):
            assert runs[name + " status"]["state"] == "FAILED"
            assert key in runs[name + " status"]["message"]

        run_ids = [runs[name] for name in ("ok", "engine error", "bad secret value",
                                           "bad secret run key")]
        docs = _documents(c, exp["id"], run_ids)
        ok_log = docs[f"log {runs['ok']} worker.log"]
        # The engine did print and log its key: the log shows the mask where the key was.
        assert "connecting with apiKey=********" in ok_log and "the key is ********" in ok_log
        assert "stderr also sees ********" in ok_log
        # The spec holds the secret for the worker: owner-only, and never served.
        spec = server.home / "runs" / runs["ok"] / "spec.json"
        assert SECRET in spec.read_text()
        assert stat.S_IMODE(spec.stat().st_mode) == 0o600
        served = c.get(f"/experiments/{exp['id']}/runs/{runs['ok']}/logs/spec.json")
        assert served.status_code == 404 and SECRET not in served.text

    files = {str(p): p.read_text(errors="replace")
             for run_id in run_ids for p in (server.home / "runs" / run_id).rglob("*")
             if p.is_file() and p.name != "spec.json"}
    assert any(name.endswith("result.json") for name in files)
    files["server output"] = server.output()
    for where, text in {**docs, **files}.items():
        assert SECRET not in text, f"the secret leaked into {where}"
        assert SECRET_BAD not in text, f"the bad secret value leaked into {where}"


def test_explain_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "secret.json"
    config.write_text(json.dumps({"name": "secret-explain",
                                  "engineId": ENGINE["artifacts"]["default"]["image"]["location"],
                                  "tasks": [{"name": "train", "parameters": [
                                      _param("apiKey", SECRET, secret=True)]}]}))
    for extra in ([], ["--json"]):
        result = subprocess.run([sys.executable, "-m", "runtime.cli.main", "train", str(config),
                                 "--explain", "--home", str(tmp_path / "home"), *extra],
                                cwd=REPO, env=server_env(), capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        assert "apiKey" in result.stdout and SECRET not in result.stdout + result.stderr


def test_the_redactor_masks_json_escaped_and_short_values() -> None:
    from runtime.redaction import MASK, Redactor, secret_values

    redactor = Redactor(secret_values({"a": 'p"w\\d', "b": "xy", "c": 12345}, ["a", "b", "c"]))
    assert redactor.text('p"w\\d') == MASK
    assert redactor.text(json.dumps({"e": 'oops p"w\\d'})) == json.dumps({"e": f"oops {MASK}"})
    assert redactor.text("xy 12345") == f"xy {MASK}"   # under 3 characters is not masked
    assert redactor.document({"k": ["12345"]}) == {"k": [MASK]}


def test_a_pooled_worker_masks_each_runs_own_secrets() -> None:
    """The Spark worker serves run after run in one process: installing a run's redactor replaces
    the last run's, in the streams and in the logging handler that writes to them."""
    script = (
        "import logging, sys\n"
        "from runtime import redaction\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(message)s')\n"
        "redaction.install(redaction.Redactor(['first-secret']))\n"
        "print('p first-secret'); logging.info('l first-secret')\n"
        "redaction.install(redaction.Redactor(['second-secret']))\n"
        "print('p second-secret first-secret'); logging.info('l second-secret')\n"
        "print('e second-secret', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["p ********", "l ********",
                                        "p ******** first-secret", "l ********"]
    assert done.stderr.strip() == "e ********"
