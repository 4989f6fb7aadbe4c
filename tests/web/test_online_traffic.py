"""The Services view's online traffic in a real headless Chromium against a real `run serve`: a
noop Model trained by `run train`, published through an MLService and scored over HTTP (rows and
one bad body); the view shows the service's requests, errors, p50 and p99 and draws its request
rate and latency charts with the vendored uPlot, from the traffic JSON of the caller's sandbox."""
from __future__ import annotations

import json

import httpx

from web_helpers import TRAINING_CSV, train


def test_the_services_view_shows_each_services_online_traffic(server, browser, tmp_path):
    from runtime.home import resolve_home
    from runtime.mlservices import ServiceDesk
    from runtime.registry import Caller, Registry
    from runtime.schemas import EXPERIMENT, MLSERVICE

    config = tmp_path / "noop-online.json"
    config.write_text(json.dumps({"name": "online noop", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(TRAINING_CSV)}]},
        {"name": "score", "parameters": []}]}))
    trained = train(server.home, config)
    registry = Registry.open(resolve_home(server.home))
    try:
        caller = Caller.local()
        instance = registry.get(EXPERIMENT, caller, trained["experimentId"])["mlInstanceId"]
        service = registry.create(MLSERVICE, caller, {
            "name": "weekly sales online", "mlInstanceId": instance,
            "scoringDataSetId": str(TRAINING_CSV), "scoringTimeframe": 60,
            "scoringSchedule": {"cron": "0 0 1 1 *"}})
        ServiceDesk(registry).publish(caller, service["id"], trained["modelId"], "test")
    finally:
        registry.close()
    url = f"{server.url}/data/sensei/mlServices/{service['id']}/invocations"
    with httpx.Client(timeout=60) as client:
        for i in range(20):
            answer = client.post(url, json={"dataframe_records": [{"store": i, "x": 1.5}]})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"predictions": [{"store": i, "x": 1.5}]}
        bad = client.post(url, json={"rows": []})            # an unknown key: a 400
        assert bad.status_code == 400
        traffic = client.get(f"{server.url}/data/sensei/online/traffic").json()["services"]
        # another sandbox sees none of it
        other = client.get(f"{server.url}/data/sensei/online/traffic",
                           headers={"x-sandbox-name": "elsewhere"}).json()["services"]
    mine = traffic[service["id"]]
    assert mine["requests"] == 21 and mine["errors"] == 1 and mine["modelId"] == trained["modelId"]
    assert sum(mine["series"]["requestsPerS"]) > 0 and mine["series"]["p99Ms"][-1] is not None
    assert service["id"] not in other

    browser.navigate(server.url + "/services?org=local&sandbox=prod")
    row = f"#online tr[data-online=\"{service['id']}\"]"
    browser.wait_for(f"document.querySelector('{row}') !== null")
    text = browser.evaluate(f"document.querySelector('{row}').innerText")
    assert "weekly sales online" in text and trained["modelId"][:8] in text
    assert browser.evaluate(f"document.querySelector('{row} td.requests').innerText") == "21"
    assert browser.evaluate(f"document.querySelector('{row} td.errors').innerText") == "1"
    for cell in ("p50", "p99"):
        shown = browser.evaluate(f"document.querySelector('{row} td.{cell}').innerText")
        assert shown.endswith(" ms") and float(shown[:-3].replace(",", "")) > 0, shown
    # both charts drawn by uPlot, with the buckets the JSON gave
    for chart in ("rate", "latency"):
        name = f"online:{service['id']}:{chart}"
        drawn = browser.evaluate(f"(() => {{ const u = window.__charts[{json.dumps(name)}]; "
                                 "return u ? [u.data.length, u.data[1].filter(v => v != null).length, "
                                 "u.root.querySelector('canvas') !== null] : null; })()")
        assert drawn is not None and drawn[0] == 3 and drawn[1] >= 1 and drawn[2], (chart, drawn)
    browser.screenshot(tmp_path / "online-traffic.png")
