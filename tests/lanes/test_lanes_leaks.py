"""Nothing of a file leaks through errors or logs: an unparsable data set is named by its path and
the parser's error class; tasklogs serve the run's own listed log and nothing else."""
from __future__ import annotations


import pytest

from lanes_helpers import NOOP_ENGINE, ROOT, client, instance_body
from live_server import new_sandbox
from waiting import wait_run

CONTENT = "TOPSECRET-ROW-CONTENT"


def _train(c, **params: str) -> tuple[str, str, dict]:
    engine = c.post("/engines", json=NOOP_ENGINE).json()
    instance = c.post("/mlInstances", json=instance_body(engine["id"], **params))
    assert instance.status_code == 201, instance.text
    exp = c.post("/experiments", json={"name": "x", "mlInstanceId": instance.json()["id"]}).json()
    run = c.post(f"/experiments/{exp['id']}/runs", json={"mode": "train"}).json()
    return exp["id"], run["id"], wait_run(c, run["id"], experiment_id=exp["id"])


@pytest.mark.parametrize("name, content, error", [
    ("bad.csv", f"a,b\n1,2\n{CONTENT},3,4,5\n", "ParserError at line 3"),
    ("bad.parquet", f"{CONTENT}\n" * 20, "ArrowInvalid"),
    ("bad.jsonl", f'{{"a": 1}}\n{CONTENT}\n', "JSONDecodeError"),
    ("binary.csv", b"\xff\xfe" + CONTENT.encode() + b"\x00,", "UnicodeDecodeError"),
])
def test_an_unparsable_data_file_gives_its_path_and_the_error_class_only(
        lanes: dict, name: str, content, error: str) -> None:
    path = lanes["root"] / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with client(lanes["server"], new_sandbox(), token=ROOT) as c:
        exp_id, run_id, task = _train(c, trainingDataSetId=str(path))
        assert task["state"] == "FAILED"
        assert str(path) in task["message"] and error in task["message"], task["message"]
        served = [c.get(f"/experiments/{exp_id}/runs/{run_id}/status").text,
                  c.get(f"/experiments/{exp_id}/runs/{run_id}").text,
                  c.get(f"/experiments/{exp_id}/runs/{run_id}/logs/worker.log").text]
    result = (lanes["server"].home / "runs" / run_id / "result.json").read_text()
    for text in (*map(str, served), result):
        assert CONTENT not in text


def test_tasklogs_serve_the_runs_own_log_only(lanes: dict) -> None:
    server = lanes["server"]
    with client(server, new_sandbox(), token=ROOT) as c:
        exp_id, run_id, task = _train(c, trainingDataSetId=str(lanes["root"] / "train.csv"))
        assert task["state"] == "DONE", task
        run_dir = server.home / "runs" / run_id
        (run_dir / "planted.log").symlink_to(lanes["outside"] / "private.csv")
        (run_dir / "other.log").write_text("not listed in the status")
        base = f"/experiments/{exp_id}/runs/{run_id}/logs/"
        assert c.get(base + "worker.log").status_code == 200
        for name in ("spec.json", "result.json", "planted.log", "other.log", "..%2Fspec.json",
                     "..%2F..%2Fregistry.db", "%2e%2e%2f%2e%2e%2fregistry.db",
                     "worker.log%00.txt", "%2e%2e", "%2Fetc%2Fpasswd"):
            response = c.get(base + name)
            assert response.status_code in (400, 404), (name, response.status_code)
            assert "5,6" not in response.text and '"values"' not in response.text
        # A log of another run, through this run's path, is not this run's log.
        other_exp, other_run, _ = _train(c, trainingDataSetId=str(lanes["root"] / "train.csv"))
        assert c.get(f"/experiments/{exp_id}/runs/{other_run}/logs/worker.log").status_code == 404
        # The worker.log replaced by a link out is refused too, by the API and by the web page's
        # log route.
        log = run_dir / "worker.log"
        log.unlink()
        log.symlink_to(lanes["outside"] / "private.csv")
        assert c.get(base + "worker.log").status_code == 404
        page = c.get(server.base_url + f"/ui/api/runs/{run_id}/log")
        assert page.status_code == 200 and page.json()["text"] == "" and "5,6" not in page.text
