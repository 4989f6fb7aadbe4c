"""The Services view in a real headless Chromium against a real `run serve` whose scheduler fires:
each MLService's schedules with their next and last fires, its published Model with the training
run's metrics, and links to the runs it started; a paused service says so."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path


from runtime.scheduler import iso

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "supervision"))
from support import sensei_client  # noqa: E402
from waiting import until  # noqa: E402


def test_the_services_view_shows_schedules_fires_and_the_published_model(server, browser, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("timestamp,x\n2024-03-01 00:00,1\n2024-03-01 01:00,2\n")
    with sensei_client(server.url + "/data/sensei", "prod", token=None) as client:
        client.headers["x-gw-ims-org-id"] = "local"
        engine = client.post("/engines", json={"name": "noop", "type": "Python", "artifacts": {
            "default": {"image": {"location": "noop"}}}}).json()
        instance = client.post("/mlInstances", json={
            "name": "scheduled noop", "engineId": engine["id"], "tasks": [{"name": "score", "parameters": [
                {"key": "scoringResultsDataSetId", "value": str(tmp_path / "out.csv")}]}]}).json()
        start = math.ceil(time.time()) + 2
        fired = client.post("/mlServices", json={
            "name": "nightly retail", "mlInstanceId": instance["id"], "trainingDataSetId": str(data),
            "scoringDataSetId": str(data), "scoringTimeframe": 0,
            "trainingSchedule": {"cron": "* * * * * *", "startTime": iso(start), "endTime": iso(start + 0.5)},
            "scoringSchedule": {"cron": "0 3 * * *"}})
        assert fired.status_code == 201, fired.text
        paused = client.post("/mlServices", json={  # a weekly one, paused
            "name": "on hold", "mlInstanceId": instance["id"], "scoringDataSetId": str(data),
            "trainingDataSetId": str(data),
            "scoringTimeframe": 0, "scoringSchedule": {}, "trainingSchedule": {"cron": "0 4 * * 1"}})
        assert paused.status_code == 201, paused.text
        assert client.post(f"/mlServices/{paused.json()['id']}/pause").status_code == 200
        service_id = fired.json()["id"]
        status = until(lambda: (client.get(f"/mlServices/{service_id}").json()["status"]
                                 .get("publishedModel") and client.get(f"/mlServices/{service_id}").json()["status"]),
                       timeout_s=90.0, what="the published Model")

    published = status["publishedModel"]
    browser.navigate(server.url + "/services?org=local&sandbox=prod")
    browser.wait_for(f"document.querySelector('tr[data-service=\"{service_id}\"] td.published .mono') !== null")
    row = browser.evaluate(f"document.querySelector('tr[data-service=\"{service_id}\"]').innerText")
    assert "nightly retail" in row and "scheduled noop" in row and "active" in row
    assert "0 3 * * *" in row and "* * * * * *" in row                    # both schedules
    assert published["modelId"][:8] in row and "· 1 fire\t" in row          # the one training fire
    assert status["schedules"]["scoringSchedule"]["nextFire"].replace("T", " ").replace(".000Z", "Z")[:16] in row
    run_id = status["recentRuns"][0]["runId"]
    assert f"train {run_id[:8]}" in row
    held = browser.evaluate(f"document.querySelector('tr[data-service=\"{paused.json()['id']}\"]').innerText")
    assert "on hold" in held and "paused" in held and "none yet" in held
    browser.screenshot(tmp_path / "services.png")
    browser.evaluate(f"document.querySelector('tr[data-service=\"{service_id}\"] td.recent a').click()")
    browser.wait_for(f"location.pathname === '/runs/{run_id}' && document.title.startsWith('Run ') "
                     "&& document.body.innerText.includes('DONE')")   # the run it started
