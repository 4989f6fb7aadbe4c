"""The API app in-process: content types, errors, auth and sandbox headers, limits."""
import json

import pytest
from fastapi.testclient import TestClient

from runtime.api.app import ServerSettings, create_app

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL

PROFILE = "application/vnd.adobe.platform.sensei+json;profile=mlInstance.v1.json"
ERROR_KEYS = {"type", "title", "status", "detail"}


@pytest.fixture
def client(home):
    app = create_app(ServerSettings(home=home, max_body_bytes=2048))
    with TestClient(app) as c:
        yield c
    app.state.registry.close()


@pytest.fixture
def engine_id(client):
    r = client.post("/data/sensei/engines", json={"name": "E", "type": "PySpark"})
    assert r.status_code == 201
    return r.json()["id"]


def _count(client, path="/data/sensei/mlInstances", **headers):
    return client.get(path, headers=headers).json()["_page"]["totalCount"]


@pytest.mark.parametrize("content_type", [
    "application/json",
    PROFILE,
    "application/vnd.adobe.platform.sensei+json; profile=mlInstance.v1.json",
    "Application/Vnd.Adobe.Platform.Sensei+JSON ;profile=whatever.v1.json",
    "application/json; charset=utf-8",
])
def test_json_and_every_sensei_profile_are_accepted(client, engine_id, content_type):
    r = client.post("/data/sensei/mlInstances", headers={"content-type": content_type},
                    content=json.dumps({"name": "n", "engineId": engine_id}))
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == PROFILE
    assert r.headers["location"].endswith(f"/data/sensei/mlInstances/{r.json()['id']}")


@pytest.mark.parametrize("headers, body, status, needle", [
    ({"content-type": "text/plain"}, "{}", 415, "text/plain"),
    ({}, "{}", 415, "none"),
    ({"content-type": "application/json"}, '{"name": "x",}', 400, "Malformed JSON"),
    ({"content-type": "application/json"}, "", 400, "empty"),
    ({"content-type": "application/json"}, json.dumps({"name": "x" * 4000}), 413, "limit"),
    ({"content-type": "application/json"}, json.dumps({"engineId": "E"}), 400, "name is required"),
    ({"content-type": "application/json"}, json.dumps({"name": "n", "engineId": "nope"}), 400,
     "does not name an existing Engine"),
])
def test_bad_requests_get_contract_errors_and_write_nothing(client, engine_id, headers, body,
                                                            status, needle):
    body = body.replace('"E"', json.dumps(engine_id))
    r = client.post("/data/sensei/mlInstances", headers=headers, content=body)
    assert r.status_code == status
    err = r.json()
    assert set(err) == ERROR_KEYS and err["status"] == status and needle in err["detail"]
    assert _count(client) == 0


def test_unknown_ids_routes_and_methods(client):
    r = client.get("/data/sensei/mlInstances/nope")
    assert r.status_code == 404 and r.json()["detail"] == "MLInstance 'nope' not found"
    assert client.get("/data/sensei/nothing").status_code == 404
    r = client.patch("/data/sensei/engines")
    assert r.status_code == 405 and set(r.json()) == ERROR_KEYS


def test_not_acceptable(client):
    r = client.get("/data/sensei/engines", headers={"accept": "text/html"})
    assert r.status_code == 406 and set(r.json()) == ERROR_KEYS
    ok = client.get("/data/sensei/engines",
                    headers={"accept": "application/vnd.adobe.platform.sensei+json;"
                                       "profile=engineListing.v1.json"})
    assert ok.status_code == 200


def test_secret_parameters_never_leave_in_clear(client, engine_id):
    body = {"name": "n", "engineId": engine_id, "tasks": [
        {"name": "train", "parameters": [{"key": "password", "value": "pa55", "secret": True}]}]}
    created = client.post("/data/sensei/mlInstances", json=body)
    for r in (created, client.get(f"/data/sensei/mlInstances/{created.json()['id']}"),
              client.get("/data/sensei/mlInstances")):
        assert "pa55" not in r.text


def test_sandbox_and_org_headers_scope_objects(client, engine_id):
    other = {"x-sandbox-name": "dev"}
    assert client.get(f"/data/sensei/engines/{engine_id}", headers=other).status_code == 404
    assert client.get(f"/data/sensei/engines/{engine_id}",
                      headers={"x-gw-ims-org-id": "Other@AdobeOrg"}).status_code == 404
    assert client.get(f"/data/sensei/engines/{engine_id}").status_code == 200
    assert _count(client, "/data/sensei/engines", **other) == 0


def test_listing_shape_and_next_link(client, engine_id):
    for n in range(3):
        client.post("/data/sensei/mlInstances", json={"name": f"m{n}", "engineId": engine_id})
    r = client.get("/data/sensei/mlInstances", params={"limit": 2, "orderby": "-name"})
    body = r.json()
    assert r.headers["content-type"].endswith("profile=mlInstanceListing.v1.json")
    assert [c["name"] for c in body["children"]] == ["m2", "m1"]
    assert body["_page"] == {"orderby": "-name", "property": "deleted==false", "start": "0",
                             "totalCount": 3, "count": 2, "next": "2"}
    nxt = client.get(body["_links"]["next"]["href"]).json()
    assert [c["name"] for c in nxt["children"]] == ["m0"] and "next" not in nxt["_page"]
    bad = client.get("/data/sensei/mlInstances", params={"property": "colour==red"})
    assert bad.status_code == 400 and "'colour'" in bad.json()["detail"]


def test_tokens_protect_the_api(home):
    app = create_app(ServerSettings(home=home, tokens={"t0k": "jane@example.com"}))
    with TestClient(app) as c:
        assert c.get("/data/sensei/engines").status_code == 401
        bad = c.get("/data/sensei/engines", headers={"authorization": "Bearer wrong"})
        assert bad.status_code == 401 and set(bad.json()) == ERROR_KEYS
        ok = c.post("/data/sensei/engines", json={"name": "e"},
                    headers={"authorization": "Bearer t0k"})
        assert ok.status_code == 201 and ok.json()["createdBy"]["userId"] == "jane@example.com"
    app.state.registry.close()


def test_without_tokens_only_loopback_clients_are_served(home):
    app = create_app(ServerSettings(home=home))
    with TestClient(app, client=("203.0.113.9", 5000)) as c:
        r = c.get("/data/sensei/engines")
        assert r.status_code == 401 and "loopback" in r.json()["detail"]
    app.state.registry.close()
