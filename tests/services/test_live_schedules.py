"""Real `run serve` processes whose schedules fire real runs: train then score with the published
Model; a server killed before a fire time and restarted after it fires once; two servers on one
home fire once. Schedules use cron's optional sixth field (seconds) to fire within seconds."""
from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "supervision"))

from support import client_for, live_server, new_sandbox, task_of  # noqa: E402
from waiting import until  # noqa: E402

from runtime.scheduler import iso  # noqa: E402


def _instance(client: httpx.Client, data: Path) -> str:
    data.write_text("timestamp,x\n2024-03-01 00:00,1\n2024-03-01 01:00,2\n2024-03-01 02:00,3\n")
    engine = client.post("/engines", json={"name": "noop", "type": "Python", "artifacts": {
        "default": {"image": {"location": "noop"}}}})
    instance = client.post("/mlInstances", json={"name": "noop", "engineId": engine.json()["id"],
                                                 "tasks": [{"name": "score", "parameters": [{
                                                     "key": "scoringResultsDataSetId",
                                                     "value": str(data.with_name("out.csv"))}]}]})
    assert instance.status_code == 201, instance.text
    return instance.json()["id"]


def _one_fire_service(client: httpx.Client, instance_id: str, data: Path, fire_s: float) -> dict:
    """An MLService whose training schedule fires exactly once, at `fire_s` (a whole second)."""
    response = client.post("/mlServices", json={
        "name": "once", "mlInstanceId": instance_id, "trainingDataSetId": str(data),
        "scoringDataSetId": str(data), "scoringTimeframe": 0, "scoringSchedule": {},
        "trainingSchedule": {"cron": "* * * * * *", "startTime": iso(fire_s),
                             "endTime": iso(fire_s + 0.5)}})
    assert response.status_code == 201, response.text
    return response.json()


def _runs_of(client: httpx.Client, service_id: str) -> list[dict]:
    status = client.get(f"/mlServices/{service_id}").json()["status"]
    return status["recentRuns"]


def test_a_server_fires_train_then_score_with_the_published_model(tmp_path):
    with live_server(tmp_path / "home") as server:
        client = client_for(server, new_sandbox())
        data = tmp_path / "data.csv"
        instance_id = _instance(client, data)
        bad = client.post("/mlServices", json={
            "name": "bad", "mlInstanceId": instance_id, "scoringDataSetId": str(data),
            "scoringTimeframe": 5, "scoringSchedule": {"cron": "every minute"}})
        assert bad.status_code == 400 and "is not a cron expression" in bad.json()["detail"]
        start = math.ceil(time.time()) + 2
        service = client.post("/mlServices", json={
            "name": "every few seconds", "mlInstanceId": instance_id,
            "trainingDataSetId": str(data), "scoringDataSetId": str(data),
            "scoringTimeframe": 90,
            "trainingSchedule": {"cron": "* * * * * *", "startTime": iso(start),
                                 "endTime": iso(start + 0.5)},
            "scoringSchedule": {"cron": "* * * * * */2", "startTime": iso(start + 6)}}).json()
        assert service["status"]["paused"] is False   # the read-only extension, on POST too

        def scored():
            runs = _runs_of(client, service["id"])
            done = [r for r in runs if r["mode"] == "score" and
                    task_of(client, r["experimentId"], r["runId"])["state"] == "DONE"]
            return done and (runs, done[-1])
        runs, score = until(scored, what="a DONE scheduled score run")
        train = [r for r in runs if r["mode"] == "train"]
        assert len(train) == 1
        assert task_of(client, train[0]["experimentId"], train[0]["runId"])["state"] == "DONE"
        shown = client.get(f"/mlServices/{service['id']}").json()["status"]
        model_id = shown["publishedModel"]["modelId"]
        assert shown["publishedModel"]["experimentRunId"] == train[0]["runId"]
        run = client.get(f"/experiments/{score['experimentId']}/runs/{score['runId']}").json()
        assert run["runtime"]["modelChoice"]["modelId"] == model_id
        assert run["runtime"]["timeframe"] == {"minutes": 90.0, "column": None}
        # scoringTimeframe 90: the last 90 minutes of the data's timestamps, two of three rows
        assert len((tmp_path / "out.csv").read_text().strip().splitlines()) == 1 + 2
        paused = client.post(f"/mlServices/{service['id']}/pause")
        assert paused.status_code == 200 and paused.json()["status"]["paused"] is True


def test_a_server_killed_before_a_fire_and_restarted_after_it_fires_once(tmp_path):
    home = tmp_path / "home"
    sandbox = new_sandbox()
    data = tmp_path / "data.csv"
    with live_server(home) as server:
        client = client_for(server, sandbox)
        instance_id = _instance(client, data)
        fire_s = math.ceil(time.time()) + 4
        service = _one_fire_service(client, instance_id, data, fire_s)
        until(lambda: client.get(f"/mlServices/{service['id']}").json()["status"]["schedules"],
               what="the scheduler to see the service")
        server.process.send_signal(signal.SIGKILL)   # no clean stop: the lease is left held
        server.process.wait(10)
    time.sleep(max(0.0, fire_s + 1.5 - time.time()))   # the fire time passes with no server
    with live_server(home) as server:
        client = client_for(server, sandbox)
        runs = until(lambda: _runs_of(client, service["id"]), what="the missed fire's run")
        time.sleep(3)   # a second fire would have come by now
        assert len(_runs_of(client, service["id"])) == 1 == len(runs)
        status = client.get(f"/mlServices/{service['id']}").json()["status"]
        assert status["schedules"]["trainingSchedule"]["fires"] == 1
        assert status["schedules"]["trainingSchedule"]["nextFire"] is None   # endTime passed


def test_two_servers_on_one_home_fire_once(tmp_path):
    home = tmp_path / "home"
    sandbox = new_sandbox()
    data = tmp_path / "data.csv"
    with live_server(home) as first, live_server(home) as second:
        client = client_for(first, sandbox)
        instance_id = _instance(client, data)
        fire_s = math.ceil(time.time()) + 3
        service = _one_fire_service(client, instance_id, data, fire_s)
        until(lambda: _runs_of(client, service["id"]), what="the fire's run")
        time.sleep(max(0.0, fire_s + 3 - time.time()))
        other = client_for(second, sandbox)
        assert len(_runs_of(other, service["id"])) == 1
        experiment_id = _runs_of(other, service["id"])[0]["experimentId"]
        listed = other.get(f"/experiments/{experiment_id}/runs").json()
        assert listed["_page"]["totalCount"] == 1
