"""Every collection over HTTP, held to the OpenAPI contract.

Statuses, content-type profiles and bodies are checked against sensei-ml-api.openapi.yaml through
`contract.assert_contract`; every error must be the contract's `{type, title, status, detail}`
and must leave the store as it was.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlparse

import httpx
import pytest

import contract
from live_server import MAX_BODY_BYTES, new_sandbox, sensei_client
from contract import (UNINSTALLED_ENGINE, assert_contract, assert_error, engine_body,
                      experiment_body, insight_body, mlinstance_body, mlservice_body, model_body,
                      run_body)

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL

RUNS = "/experiments/{experimentId}/runs"
RUN = RUNS + "/{experimentRunId}"


# --------------------------------------------------------------------------------------------
# The validator itself must be able to say no (otherwise every check below is hollow).


def test_the_contract_validator_rejects_what_the_contract_forbids() -> None:
    assert contract.contract_errors({"name": "ok", "created": "2019-01-01T00:00:00.000Z",
                                     "tasks": [{"name": "train"}]}, "MLInstance") == []
    assert contract.contract_errors({"name": 5}, "MLInstance")
    assert contract.contract_errors({"name": "x", "created": "yesterday"}, "MLInstance")
    assert contract.contract_errors({"name": "x", "tasks": {}}, "MLInstance")
    assert contract.contract_errors({"children": {}}, "EngineListing")
    assert contract.contract_errors({"_page": {"totalCount": "3"}}, "EngineListing")
    assert contract.contract_errors(
        {"status": {"tasks": [{"state": "SLEEPING"}]}}, "RunStatus")
    assert contract.contract_errors(
        {"status": {"tasks": [{"state": "DONE", "ended": "2019-13-01T00:00:00Z"}]}}, "RunStatus")
    assert contract.contract_errors(
        {"name": "e", "artifacts": {"default": {"image": {"location": "x", "name": "y",
                                                          "packagingType": "zip"}}}}, "Engine")
    assert contract.contract_errors({"experimentId": "e", "state": ["lost"]}, "Model")
    assert contract.contract_errors({"scoringTimeframe": 1 << 40, "name": "s",
                                     "mlInstanceId": "m", "scoringDataSetId": "d",
                                     "scoringSchedule": {}}, "MLService")
    assert contract.contract_errors({"status": "200"}, "SenseiApiResponse")
    with pytest.raises(KeyError):
        contract.validator("NoSuchSchema")


def test_operations_declare_one_status_and_profile() -> None:
    ops = {(m, p): contract.operation(m, p) for m, p in contract.operations()}
    assert len(ops) == 41
    create = ops[("POST", "/mlInstances")]
    assert (create.status, create.schema) == (201, "MLInstance")
    assert create.content_type == \
        "application/vnd.adobe.platform.sensei+json;profile=mlInstance.v1.json"
    service = ops[("GET", "/mlServices/{serviceId}")]   # declares '' beside its profile
    assert service.content_type.endswith("profile=mlService.v1.json")
    assert ops[("GET", "/models/{modelId}/artifact")].content_type == "application/octet-stream"
    assert 404 in ops[("DELETE", "/mlInstances")].declared_statuses   # an int key in the YAML


# --------------------------------------------------------------------------------------------
# Helpers


def multipart_engine(client: httpx.Client, body: dict[str, Any],
                     artifacts: Optional[dict[str, bytes]] = None) -> httpx.Response:
    files = [("engine", (None, json.dumps(body),
                         "application/vnd.adobe.platform.sensei+json;profile=engine.v1.json"))]
    files += [(name, (name + ".egg", data, "application/octet-stream"))
              for name, data in (artifacts or {}).items()]
    return client.post("/engines", files=files)


def multipart_model(client: httpx.Client, body: dict[str, Any],
                    artifact: Optional[bytes] = None) -> httpx.Response:
    files = [("model", (None, json.dumps(body),
                        "application/vnd.adobe.platform.sensei+json;profile=model.v1.json"))]
    if artifact is not None:
        files.append(("modelArtifact", ("model.bin", artifact, "application/octet-stream")))
    return client.post("/models", files=files)


@dataclass
class World:
    """One of everything, created through the API: engine -> ... -> model, insight, service."""

    engine: dict[str, Any]
    mlinstance: dict[str, Any]
    experiment: dict[str, Any]
    run: dict[str, Any]
    model: dict[str, Any]
    insight: dict[str, Any]
    mlservice: dict[str, Any]

    def item_paths(self) -> dict[str, str]:
        return {
            "engine": f"/engines/{self.engine['id']}",
            "mlinstance": f"/mlInstances/{self.mlinstance['id']}",
            "experiment": f"/experiments/{self.experiment['id']}",
            "run": f"/experiments/{self.experiment['id']}/runs/{self.run['id']}",
            "run status": f"/experiments/{self.experiment['id']}/runs/{self.run['id']}/status",
            "model": f"/models/{self.model['id']}",
            "mlservice": f"/mlServices/{self.mlservice['id']}",
        }


def build_world(client: httpx.Client, artifact: bytes = b"model-bytes") -> World:
    engine = assert_contract(client.post("/engines", json=engine_body()), "POST", "/engines")
    instance = assert_contract(client.post("/mlInstances", json=mlinstance_body(engine["id"])),
                               "POST", "/mlInstances")
    experiment = assert_contract(
        client.post("/experiments", json=experiment_body(instance["id"])), "POST", "/experiments")
    run = assert_contract(client.post(f"/experiments/{experiment['id']}/runs", json=run_body()),
                          "POST", RUNS)
    model = assert_contract(multipart_model(client, model_body(run["id"]), artifact),
                            "POST", "/models")
    insight = assert_contract(
        client.post("/insights", json=insight_body(engine_id=engine["id"],
                                                   mlinstance_id=instance["id"],
                                                   run_id=run["id"])), "POST", "/insights")
    service = assert_contract(client.post("/mlServices", json=mlservice_body(instance["id"])),
                              "POST", "/mlServices")
    return World(engine, instance, experiment, run, model, insight, service)


def total(client: httpx.Client, collection: str) -> int:
    """Objects of a collection in this sandbox, deleted or not: any write changes the sum."""
    counts = []
    for prop in ("deleted==false", "deleted==true"):
        response = client.get(collection, params={"property": prop})
        assert response.status_code == 200, response.text
        counts.append(response.json()["_page"]["totalCount"])
    return sum(counts)


@dataclass(frozen=True)
class Collection:
    name: str                 # the URL segment
    item: str                 # the contract's item path
    title: str                # as in "<title> deletion was successful"
    make: Callable[[httpx.Client, World], httpx.Response]
    body: Callable[[World], dict[str, Any]]
    sort_field: str
    with_sort_value: Callable[[dict[str, Any], str], dict[str, Any]]
    updatable: bool = True


def _named(body: dict[str, Any], value: str) -> dict[str, Any]:
    return {**body, "name": value}


COLLECTIONS = [
    Collection("engines", "/engines/{engineId}", "Engine",
               lambda c, w: multipart_engine(c, engine_body()), lambda w: engine_body(),
               "name", _named),
    Collection("mlInstances", "/mlInstances/{mlInstanceId}", "MLInstance",
               lambda c, w: c.post("/mlInstances", json=mlinstance_body(w.engine["id"])),
               lambda w: mlinstance_body(w.engine["id"]), "name", _named),
    Collection("experiments", "/experiments/{experimentId}", "Experiment",
               lambda c, w: c.post("/experiments", json=experiment_body(w.mlinstance["id"])),
               lambda w: experiment_body(w.mlinstance["id"]), "name", _named),
    Collection("models", "/models/{modelId}", "Model",
               lambda c, w: multipart_model(c, model_body(w.run["id"]), b"\x00weights\xff"),
               lambda w: model_body(w.run["id"]), "name", _named),
    Collection("insights", "/insights/{insightId}", "Insight",
               lambda c, w: c.post("/insights", json=insight_body(engine_id=w.engine["id"])),
               lambda w: insight_body(engine_id=w.engine["id"]), "context.clientId",
               lambda b, v: {**b, "context": {**b["context"], "clientId": v}}, updatable=False),
    Collection("mlServices", "/mlServices/{serviceId}", "MLService",
               lambda c, w: c.post("/mlServices", json=mlservice_body(w.mlinstance["id"])),
               lambda w: mlservice_body(w.mlinstance["id"]), "name", _named),
]
BY_NAME = {c.name: c for c in COLLECTIONS}


@pytest.fixture
def world(client: httpx.Client) -> World:
    return build_world(client)


def _sent_fields_round_trip(sent: dict[str, Any], doc: dict[str, Any]) -> None:
    for key, value in sent.items():
        assert doc.get(key) == value, f"{key}: sent {value!r}, got {doc.get(key)!r}"


# --------------------------------------------------------------------------------------------
# CRUD per collection


@pytest.mark.parametrize("spec", COLLECTIONS, ids=lambda c: c.name)
def test_create_read_update_delete(client: httpx.Client, world: World, spec: Collection) -> None:
    collection = "/" + spec.name
    before = total(client, collection)

    response = spec.make(client, world)
    created = assert_contract(response, "POST", collection)
    url = response.headers["location"]
    assert url == f"{str(client.base_url).rstrip('/')}{collection}/{created['id']}"
    assert client.get(url).json() == created
    assert total(client, collection) == before + 1
    assert created["created"] == created["updated"]
    assert created["deleted"] is False

    fetched = assert_contract(client.get(f"{collection}/{created['id']}"), "GET", spec.item)
    assert fetched == created

    page = assert_contract(client.get(collection, params={"limit": 100}), "GET", collection)
    assert created["id"] in {c["id"] for c in page["children"]}

    if spec.updatable:
        body = {**spec.body(world), "description": "changed by PUT", "tags": {"put": "yes"}}
        updated = assert_contract(client.put(f"{collection}/{created['id']}", json=body),
                                  "PUT", spec.item)
        _sent_fields_round_trip(body, updated)
        assert updated["id"] == created["id"]
        assert updated["created"] == created["created"]
        assert updated["createdBy"] == created["createdBy"]
        assert updated["updated"] > created["updated"]
        assert client.get(f"{collection}/{created['id']}").json() == updated

        response = client.delete(f"{collection}/{created['id']}")
        assert assert_contract(response, "DELETE", spec.item) == {
            "title": "Success", "status": 200, "detail": f"{spec.title} deletion was successful"}
        assert_error(client.get(f"{collection}/{created['id']}"), 404, created["id"])
        assert_error(client.put(f"{collection}/{created['id']}", json=body), 404)
        assert_error(client.delete(f"{collection}/{created['id']}"), 404)
        # Soft delete: hidden by default, listed on request, and still counted.
        live = client.get(collection, params={"limit": 100}).json()
        assert created["id"] not in {c["id"] for c in live["children"]}
        gone = assert_contract(client.get(collection, params={"property": "deleted==true"}),
                               "GET", collection)
        assert [c["id"] for c in gone["children"]] == [created["id"]]
        assert gone["children"][0]["deleted"] is True
        assert gone["_page"]["property"] == "deleted==true"
        assert total(client, collection) == before + 1
    else:
        # Insights are write-once in the contract: no PUT, no DELETE.
        assert_error(client.put(f"{collection}/{created['id']}", json=spec.body(world)), 405)
        assert_error(client.delete(f"{collection}/{created['id']}"), 405)
        assert client.get(f"{collection}/{created['id']}").json() == created


def test_sent_fields_come_back_unchanged(client: httpx.Client, world: World) -> None:
    for spec in COLLECTIONS:
        sent = spec.body(world)
        if spec.name in ("engines", "models"):
            continue   # multipart; checked in their own tests
        doc = client.post("/" + spec.name, json=sent).json()
        _sent_fields_round_trip(sent, doc)
    assert world.engine["createdBy"]["userId"]
    assert "createdBy" not in world.insight   # the contract's Insight has no creator


# --------------------------------------------------------------------------------------------
# Listing: start, limit, orderby, property, _page and _links


def _field(doc: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        doc = doc[part]
    return doc


WORLD_DOC = {"engines": "engine", "mlInstances": "mlinstance", "experiments": "experiment",
             "models": "model", "insights": "insight", "mlServices": "mlservice"}


@pytest.mark.parametrize("spec", COLLECTIONS, ids=lambda c: c.name)
def test_listing_pages_sorts_and_filters(client: httpx.Client, world: World,
                                         spec: Collection) -> None:
    collection, field = "/" + spec.name, spec.sort_field
    for value in ("b-1", "c-2", "a-0"):
        body = spec.with_sort_value(spec.body(world), value)
        if spec.name == "engines":
            response = multipart_engine(client, body)
        elif spec.name == "models":
            response = multipart_model(client, body)
        else:
            response = client.post(collection, json=body)
        assert response.status_code == 201, response.text
    # The world holds one more object of this collection: filter it out by its own value.
    prerequisite = _field(getattr(world, WORLD_DOC[spec.name]), field)
    params = {"orderby": field, "limit": 2, "property": f"{field}!={prerequisite}"}

    def values(page: dict[str, Any]) -> list[str]:
        return [_field(child, field) for child in page["children"]]

    first = assert_contract(client.get(collection, params=params), "GET", collection)
    assert values(first) == ["a-0", "b-1"]
    assert first["_page"] == {"orderby": field, "property": f"deleted==false,{params['property']}",
                              "start": "0", "totalCount": 3, "count": 2, "next": "2"}
    assert set(first["_links"]) == {"self", "next"}
    second = assert_contract(client.get(first["_links"]["next"]["href"]), "GET", collection)
    assert values(second) == ["c-2"]
    assert (second["_page"]["start"], second["_page"]["count"]) == ("2", 1)
    assert second["_page"]["totalCount"] == 3
    assert "next" not in second["_page"] and "next" not in second["_links"]
    assert client.get(first["_links"]["self"]["href"]).json() == first

    descending = assert_contract(client.get(collection, params={**params, "orderby": "-" + field}),
                                 "GET", collection)
    assert values(descending) == ["c-2", "b-1"]
    only = assert_contract(client.get(collection, params={"property": f"{field}==b-1"}),
                           "GET", collection)
    assert values(only) == ["b-1"] and only["_page"]["totalCount"] == 1
    past = client.get(collection, params={**params, "start": 10}).json()
    assert (past["children"], past["_page"]["count"], past["_page"]["totalCount"]) == ([], 0, 3)
    everything = client.get(collection).json()
    assert everything["_page"]["totalCount"] == 4 and "next" not in everything["_page"]


@pytest.mark.parametrize("collection", ["/engines", "/mlInstances", "/experiments", "/models",
                                        "/insights", "/mlServices"])
@pytest.mark.parametrize("param", ["orderby", "property"])
def test_unknown_listing_field_is_named(client: httpx.Client, collection: str,
                                        param: str) -> None:
    value = "bogusField" if param == "orderby" else "bogusField==1"
    body = assert_error(client.get(collection, params={param: value}), 400, "bogusField", param)
    assert "known fields" in body["detail"]


def test_bad_paging_values_are_named(client: httpx.Client, world: World) -> None:
    assert_error(client.get("/engines", params={"limit": 101}), 400, "limit")
    assert_error(client.get("/engines", params={"limit": "ten"}), 400, "limit")
    assert_error(client.get("/engines", params={"start": -1}), 400, "start")
    assert_error(client.get("/engines", params={"property": "created>yesterday"}), 400, "created")
    assert_error(client.get(f"/experiments/{world.experiment['id']}/runs",
                            params={"orderby": "bogusField"}), 400, "bogusField")


# --------------------------------------------------------------------------------------------
# Cascade, sandboxes


def test_engine_delete_cascades_to_everything_it_owns(client: httpx.Client) -> None:
    doomed, kept = build_world(client), build_world(client)
    response = client.delete(f"/engines/{doomed.engine['id']}")
    assert assert_contract(response, "DELETE", "/engines/{engineId}")["detail"] == \
        "Engine deletion was successful"
    for what, path in doomed.item_paths().items():
        assert_error(client.get(path), 404)
    for what, path in kept.item_paths().items():
        assert client.get(path).status_code == 200, what
    # Owned objects are soft-deleted too, not erased.
    for collection, doc in (("/mlInstances", doomed.mlinstance),
                            ("/experiments", doomed.experiment), ("/models", doomed.model),
                            ("/mlServices", doomed.mlservice)):
        gone = client.get(collection, params={"property": "deleted==true"}).json()
        assert [c["id"] for c in gone["children"]] == [doc["id"]], collection
    runs = client.get(f"/experiments/{kept.experiment['id']}/runs").json()
    assert [r["id"] for r in runs["children"]] == [kept.run["id"]]
    # Insights belong to nobody: they stay.
    assert client.get(f"/insights/{doomed.insight['id']}").status_code == 200


def test_bulk_deletes_by_parent(client: httpx.Client) -> None:
    w = build_world(client)
    extra = client.post("/experiments", json=experiment_body(w.mlinstance["id"])).json()
    response = client.delete("/experiments", params={"mlInstanceId": w.mlinstance["id"]})
    assert assert_contract(response, "DELETE", "/experiments") == {
        "title": "Success", "status": 200, "detail": "Experiments successfully deleted"}
    for doc in (w.experiment, extra):
        assert_error(client.get(f"/experiments/{doc['id']}"), 404)
    assert_error(client.get(f"/models/{w.model['id']}"), 404)   # via its run
    assert client.get(f"/mlServices/{w.mlservice['id']}").status_code == 200

    response = client.delete("/mlServices", params={"mlInstanceId": w.mlinstance["id"]})
    assert assert_contract(response, "DELETE", "/mlServices")["detail"] == \
        "MLServices successfully deleted"
    assert_error(client.get(f"/mlServices/{w.mlservice['id']}"), 404)
    assert client.get(f"/mlInstances/{w.mlinstance['id']}").status_code == 200

    assert_error(client.delete("/mlInstances"), 400, "engineId")
    assert_error(client.delete("/mlInstances", params={"engineId": "no-such-engine"}), 404,
                 "no-such-engine")


def test_sandboxes_and_orgs_do_not_see_each_other(server, client: httpx.Client,
                                                  sandbox: str) -> None:
    w = build_world(client)
    others = [sensei_client(server.api_url, new_sandbox()),
              sensei_client(server.api_url, sandbox, org="OTHERORG@AdobeOrg")]
    for other in others:
        with other:
            for what, path in w.item_paths().items():
                assert_error(other.get(path), 404)
            assert_error(other.get(f"/insights/{w.insight['id']}"), 404)
            assert_error(other.get(f"/models/{w.model['id']}/artifact"), 404)
            for collection in ("/engines", "/mlInstances", "/experiments", "/models",
                               "/insights", "/mlServices"):
                assert other.get(collection).json()["_page"]["totalCount"] == 0, collection
            assert_error(other.put(f"/engines/{w.engine['id']}", json=engine_body()), 404)
            assert_error(other.delete(f"/engines/{w.engine['id']}"), 404)
            assert_error(other.delete("/mlInstances", params={"engineId": w.engine["id"]}), 404)
            # Another sandbox's Engine cannot be referenced.
            assert_error(other.post("/mlInstances", json=mlinstance_body(w.engine["id"])), 400,
                         "engineId")
            assert total(other, "/mlInstances") == 0
    for what, path in w.item_paths().items():
        assert client.get(path).status_code == 200, what
    assert client.get(f"/engines/{w.engine['id']}").json() == w.engine


# --------------------------------------------------------------------------------------------
# Experiment runs


@pytest.mark.parametrize("mode, stored", [("train", "train"), ("TRAIN", "train"),
                                          ("Score", "score"), ("fp", "featurePipeline"),
                                          ("FeaturePipeline", "featurePipeline")])
def test_run_mode_is_case_insensitive_and_starts_pending(client: httpx.Client, world: World,
                                                         mode: str, stored: str) -> None:
    experiment = world.experiment["id"]
    response = client.post(f"/experiments/{experiment}/runs", json=run_body(mode))
    run = assert_contract(response, "POST", RUNS)
    assert response.headers["location"].endswith(f"/data/sensei/experiments/{experiment}/runs/{run['id']}")
    assert (run["mode"], run["experimentId"]) == (stored, experiment)
    assert assert_contract(client.get(f"/experiments/{experiment}/runs/{run['id']}"),
                           "GET", RUN) == run
    status_path = f"/experiments/{experiment}/runs/{run['id']}/status"
    status = assert_contract(client.get(status_path), "GET", RUN + "/status")
    assert status["experimentRunId"] == run["id"]
    [task] = status["status"]["tasks"]
    # A run is written PENDING; the server's executor then picks it up in the background and,
    # since the Engine names no installed plugin, fails it before it starts.
    assert (task["name"], task["state"]) in ((stored, "PENDING"), (stored, "FAILED"))
    final = wait_until_terminal(client, status_path)
    [task] = final["status"]["tasks"]
    assert task["state"] == "FAILED"
    assert UNINSTALLED_ENGINE in task["message"]
    assert "started" not in task and task["ended"] >= run["created"]
    # The run document itself is left as created.
    assert client.get(f"/experiments/{experiment}/runs/{run['id']}").json() == run


def wait_until_terminal(client: httpx.Client, status_path: str,
                        timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = assert_contract(client.get(status_path), "GET", RUN + "/status")
        if status["status"]["tasks"][0]["state"] in ("DONE", "FAILED", "ABORTED"):
            return status
        assert time.monotonic() < deadline, f"run still {status} after {timeout_s} s"
        time.sleep(0.05)


def test_runs_are_listed_per_experiment(client: httpx.Client, world: World) -> None:
    second = client.post(f"/experiments/{world.experiment['id']}/runs",
                         json=run_body("score")).json()
    other = client.post("/experiments", json=experiment_body(world.mlinstance["id"])).json()
    foreign = client.post(f"/experiments/{other['id']}/runs", json=run_body()).json()
    page = assert_contract(client.get(f"/experiments/{world.experiment['id']}/runs",
                                      params={"orderby": "mode"}), "GET", RUNS)
    assert [r["id"] for r in page["children"]] == [second["id"], world.run["id"]]
    assert all("tasks" not in r for r in page["children"])
    only = client.get(f"/experiments/{world.experiment['id']}/runs",
                      params={"property": "mode==score"}).json()
    assert [r["id"] for r in only["children"]] == [second["id"]]
    # A run is addressed under its own experiment only.
    assert_error(client.get(f"/experiments/{world.experiment['id']}/runs/{foreign['id']}"), 404)
    assert_error(client.get(f"/experiments/{world.experiment['id']}/runs/{foreign['id']}/status"),
                 404)


def test_bad_runs_are_refused_and_write_nothing(client: httpx.Client, world: World) -> None:
    experiment = world.experiment["id"]
    runs = f"/experiments/{experiment}/runs"
    before = client.get(runs, params={"property": "deleted==false"}).json()["_page"]["totalCount"]
    assert_error(client.post(runs, json=run_body("sleep")), 400, "sleep", "mode")
    assert_error(client.post(runs, json={"description": "no mode"}), 400, "mode")
    assert_error(client.post(runs, json=run_body(experimentId="another")), 400, "experimentId")
    assert_error(client.post(runs, content=b'{"mode": "train",}',
                             headers={"content-type": "application/json"}), 400, "Malformed JSON")
    assert_error(client.post("/experiments/no-such-experiment/runs", json=run_body()), 400,
                 "no-such-experiment")
    assert_error(client.get("/experiments/no-such-experiment/runs"), 404, "no-such-experiment")
    assert_error(client.get(f"{runs}/no-such-run"), 404, "no-such-run")
    assert_error(client.get(f"{runs}/no-such-run/status"), 404, "no-such-run")
    after = client.get(runs, params={"property": "deleted==false"}).json()["_page"]["totalCount"]
    assert after == before == 1


# --------------------------------------------------------------------------------------------
# Insights metrics, multipart engines and models


def test_default_metrics_for_regression(client: httpx.Client) -> None:
    body = assert_contract(client.get("/insights/metrics", params={"algorithm": "regression"}),
                           "GET", "/insights/metrics")
    [entry] = body["children"]
    assert entry["algorithm"] == "regression"
    assert {"MAPE", "MAE", "RMSE", "R-squared"} <= set(entry["defaultMetrics"])
    everything = assert_contract(client.get("/insights/metrics"), "GET", "/insights/metrics")
    assert {"regression", "classification"} <= {c["algorithm"] for c in everything["children"]}
    assert_error(client.get("/insights/metrics", params={"algorithm": "astrology"}), 404,
                 "astrology", "regression")


def _file_of(uri: str) -> Path:
    parsed = urlparse(uri)
    assert parsed.scheme == "file", uri
    return Path(unquote(parsed.path))


def test_multipart_engine_keeps_the_uploaded_artifact(server, client: httpx.Client) -> None:
    # A real recipe (the artifact is checked at registration), zipped with a member whose bytes
    # look like a multipart boundary.
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("r/setup.py", "from setuptools import setup\nsetup(name='r', entry_points="
                         "{'Training': ['training_dataloader=r.load', 'training_pipeline=r.load']})\n")
        archive.writestr("r/r/__init__.py", "")
        archive.writestr("r/r/load.py", "BLOB = b'\\r\\n--not-a-boundary\\r\\n'\n")
        archive.writestr("r/r/blob.bin", bytes(range(256)) * 64 + b"\r\n--not-a-boundary\r\n")
    payload = buffer.getvalue()
    sent = engine_body()
    sent["artifacts"]["default"]["image"].pop("location")
    response = multipart_engine(client, sent, {"defaultArtifact": payload,
                                               "trainOverrideArtifact": b"train-only"})
    engine = assert_contract(response, "POST", "/engines")
    assert response.headers["location"].endswith(f"/data/sensei/engines/{engine['id']}")
    image = engine["artifacts"]["default"]["image"]
    assert (image["name"], image["packagingType"]) == ("retail", "egg")
    stored = _file_of(image["location"])
    assert stored.resolve().is_relative_to(server.home.resolve())
    assert stored.read_bytes() == payload
    assert image["recipeKind"] == "python-functions" and len(image["sha256"]) == 64
    assert (server.home / "artifacts" / "engines" / engine["id"] / "trainOverrideArtifact"
            ).read_bytes() == b"train-only"
    assert client.get(f"/engines/{engine['id']}").json() == engine


def test_multipart_engine_errors_write_nothing(client: httpx.Client) -> None:
    before = total(client, "/engines")
    assert_error(client.post("/engines", files=[("defaultArtifact", ("a.egg", b"x"))]), 400,
                 "engine")
    assert_error(client.post("/engines", files=[("engine", (None, '{"name": "x",}'))]), 400,
                 "Malformed JSON", "engine")
    assert_error(client.post("/engines", files=[("engine", (None, '{"type": "Python"}'))]), 400,
                 "name")
    assert_error(multipart_engine(client, engine_body(type="Cobol")), 400, "Cobol")
    assert total(client, "/engines") == before


def test_model_artifact_comes_back_byte_for_byte(client: httpx.Client, world: World) -> None:
    payload = os.urandom(70_000) + b"\x00\r\n\r\n"
    response = multipart_model(client, model_body(world.run["id"]), payload)
    model = assert_contract(response, "POST", "/models")
    assert model["experimentId"] == world.experiment["id"]   # filled in from the run
    artifact = client.get(f"/models/{model['id']}/artifact")
    assert assert_contract(artifact, "GET", "/models/{modelId}/artifact") == payload
    assert client.get(f"/models/{world.model['id']}/artifact").content == b"model-bytes"
    client.delete(f"/models/{model['id']}")
    assert_error(client.get(f"/models/{model['id']}/artifact"), 404)


def test_model_without_artifact_has_none_to_serve(client: httpx.Client, world: World) -> None:
    model = assert_contract(multipart_model(client, model_body(world.run["id"])), "POST",
                            "/models")
    assert "modelArtifactUri" not in model
    assert_error(client.get(f"/models/{model['id']}/artifact"), 404, "no local artifact")
    before = total(client, "/models")
    assert_error(multipart_model(client, model_body("no-such-run")), 400, "experimentRunId")
    assert_error(multipart_model(client, {"name": "no run"}), 400, "experimentRunId")
    assert total(client, "/models") == before


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_model_artifact_is_never_read_from_outside_the_home(client: httpx.Client, world: World,
                                                            tmp_path: Path, kind: str) -> None:
    target = tmp_path / "outside-home"
    if kind == "file":
        target.write_text("not for API clients")
    else:
        target.mkdir()
        (target / "secret.txt").write_text("not for API clients")
    model = client.post("/models", json=model_body(world.run["id"],
                                                   modelArtifactUri=target.as_uri())).json()
    response = client.get(f"/models/{model['id']}/artifact")
    assert not target.with_suffix(".zip").exists(), "the server wrote outside its home"
    assert b"not for API clients" not in response.content
    assert_error(response, 404)


# --------------------------------------------------------------------------------------------
# Bad requests: the contract's error body, and nothing written


JSON_COLLECTIONS = ["/engines", "/mlInstances", "/experiments", "/insights", "/mlServices"]


def _valid_json_body(collection: str, w: World) -> dict[str, Any]:
    return {"/engines": engine_body(), "/mlInstances": mlinstance_body(w.engine["id"]),
            "/experiments": experiment_body(w.mlinstance["id"]),
            "/insights": insight_body(engine_id=w.engine["id"]),
            "/mlServices": mlservice_body(w.mlinstance["id"])}[collection]


@pytest.mark.parametrize("collection", JSON_COLLECTIONS)
def test_bad_json_bodies_write_nothing(client: httpx.Client, world: World,
                                       collection: str) -> None:
    before = total(client, collection)
    good = json.dumps(_valid_json_body(collection, world))
    cases = [
        (good[:-1] + ",}", 400, ("Malformed JSON",)),
        (good[: len(good) // 2], 400, ("Malformed JSON",)),
        ("", 400, ("empty",)),
        ("[1, 2]", 400, ("JSON object",)),
        (b"\xff\xfe{}", 400, ("Malformed JSON",)),
    ]
    for content, status, words in cases:
        response = client.post(collection, content=content,
                               headers={"content-type": "application/json"})
        assert_error(response, status, *words)
    for content_type in ("text/plain", "application/xml", "application/x-www-form-urlencoded"):
        assert_error(client.post(collection, content=good, headers={"content-type": content_type}),
                     415, content_type)
    assert_error(client.post(collection, content=good, headers={"content-type": ""}), 415)
    assert total(client, collection) == before


@pytest.mark.parametrize("collection, drop, named", [
    ("/engines", "name", "name"), ("/mlInstances", "name", "name"),
    ("/mlInstances", "engineId", "engineId"), ("/experiments", "name", "name"),
    ("/experiments", "mlInstanceId", "mlInstanceId"), ("/mlServices", "name", "name"),
    ("/mlServices", "scoringDataSetId", "scoringDataSetId"),
    ("/mlServices", "scoringSchedule", "scoringSchedule"),
])
def test_missing_required_fields_are_named(client: httpx.Client, world: World, collection: str,
                                           drop: str, named: str) -> None:
    before = total(client, collection)
    body = _valid_json_body(collection, world)
    body.pop(drop)
    response = assert_error(client.post(collection, json=body), 400, named)
    assert response["title"] == "Illegal Argument"
    assert total(client, collection) == before


@pytest.mark.parametrize("collection, field", [
    ("/mlInstances", "engineId"), ("/experiments", "mlInstanceId"), ("/mlServices", "mlInstanceId"),
])
def test_unknown_parent_ids_are_refused(client: httpx.Client, world: World, collection: str,
                                        field: str) -> None:
    before = total(client, collection)
    body = {**_valid_json_body(collection, world), field: "00000000-dead-beef-0000-000000000000"}
    assert_error(client.post(collection, json=body), 400, field, "00000000-dead-beef")
    item = client.get(collection).json()["children"][0]
    original = client.get(f"{collection}/{item['id']}").json()
    assert_error(client.put(f"{collection}/{item['id']}", json=body), 400, field)
    assert client.get(f"{collection}/{item['id']}").json() == original
    assert total(client, collection) == before


def test_bad_put_changes_nothing(client: httpx.Client, world: World) -> None:
    path = f"/mlInstances/{world.mlinstance['id']}"
    for body, status in (({"engineId": world.engine["id"]}, 400), ({"name": ""}, 400)):
        assert_error(client.put(path, json=body), status, "name")
    assert_error(client.put(path, content=b"{", headers={"content-type": "application/json"}), 400)
    assert_error(client.put(path, content=b"{}", headers={"content-type": "text/plain"}), 415)
    assert client.get(path).json() == world.mlinstance


def test_body_over_the_max_body_mb_limit_is_413(client: httpx.Client, world: World) -> None:
    # The session server runs with --max-body-mb 0.25: far under the 1 MiB default.
    before = total(client, "/mlInstances")
    base = mlinstance_body(world.engine["id"])

    def body_of(size: int) -> bytes:
        pad = size - len(json.dumps({**base, "description": ""}).encode())
        return json.dumps({**base, "description": "x" * pad}).encode()

    over = body_of(MAX_BODY_BYTES + 1)
    assert len(over) == MAX_BODY_BYTES + 1 < (1 << 20)
    headers = {"content-type": "application/json"}
    assert_error(client.post("/mlInstances", content=over, headers=headers), 413,
                 str(MAX_BODY_BYTES))
    # Without a Content-Length (chunked), the limit holds while reading.
    chunks = (over[i:i + 8192] for i in range(0, len(over), 8192))
    assert_error(client.post("/mlInstances", content=chunks, headers=headers), 413,
                 str(MAX_BODY_BYTES))
    assert_error(client.put(f"/mlInstances/{world.mlinstance['id']}", content=over,
                            headers=headers), 413)
    assert total(client, "/mlInstances") == before
    exact = body_of(MAX_BODY_BYTES)
    assert len(exact) == MAX_BODY_BYTES
    assert client.post("/mlInstances", content=exact, headers=headers).status_code == 201
    assert total(client, "/mlInstances") == before + 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_unknown_ids_are_404_everywhere(client: httpx.Client, world: World, method: str) -> None:
    missing = "11111111-2222-3333-4444-555555555555"
    paths = ["/engines", "/mlInstances", "/experiments", "/models", "/mlServices"]
    if method == "GET":
        paths += ["/insights", f"/experiments/{world.experiment['id']}/runs"]
    for collection in paths:
        body = None
        if method == "PUT":
            body = {**_valid_json_body(collection, world)} if collection in JSON_COLLECTIONS \
                else model_body(world.run["id"])
        response = client.request(method, f"{collection}/{missing}", json=body)
        assert_error(response, 404, missing)
    if method == "GET":
        assert_error(client.get(f"/models/{missing}/artifact"), 404, missing)
        assert_error(client.get(f"/experiments/{missing}/runs/{world.run['id']}"), 404, missing)


def test_routes_methods_and_accept(client: httpx.Client, world: World) -> None:
    assert_error(client.get("/no-such-collection"), 404, "/data/sensei/no-such-collection")
    assert_error(client.patch(f"/engines/{world.engine['id']}", json={}), 405, "PATCH")
    assert_error(client.post(f"/engines/{world.engine['id']}", json={}), 405)
    assert_error(client.get("/engines", headers={"accept": "text/html"}), 406, "text/html")
    ok = client.get("/engines", headers={
        "accept": "application/vnd.adobe.platform.sensei+json;profile=engineListing.v1.json"})
    assert_contract(ok, "GET", "/engines")


def test_unacceptable_accept_on_writes_is_406_and_writes_nothing(client: httpx.Client,
                                                                 world: World) -> None:
    before = total(client, "/mlInstances")
    html = {"accept": "text/html"}
    assert_error(client.post("/mlInstances", json=mlinstance_body(world.engine["id"]),
                             headers=html), 406, "text/html")
    assert total(client, "/mlInstances") == before


def test_put_model_keeps_its_uploaded_artifact(client: httpx.Client, world: World) -> None:
    path = f"/models/{world.model['id']}"
    assert client.get(path + "/artifact").content == b"model-bytes"
    body = model_body(world.run["id"], name="renamed")
    updated = assert_contract(client.put(path, json=body), "PUT", "/models/{modelId}")
    assert updated["name"] == "renamed"
    assert updated["experimentId"] == world.experiment["id"]
    assert client.get(path + "/artifact").content == b"model-bytes"
