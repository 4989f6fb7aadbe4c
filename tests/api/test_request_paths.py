"""The lean paths of GET-by-id (runtime/api/app.py, routes/collection.py): the stored text sent
as it is, the hot routes at the front of the table, and endpoints called without FastAPI's
parameter solving, each answering exactly what the general path answers."""
import json

import pytest
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.responses import Response
from starlette.routing import Route

from runtime.api.app import ServerSettings, _may_share_a_path, create_app
from runtime.api.routes.collection import RequestRoute
from runtime.registry import Caller
from runtime.schemas import MLINSTANCE

BASE = "/data/sensei"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from runtime.home import resolve_home

    app = create_app(ServerSettings(home=resolve_home(tmp_path_factory.mktemp("paths") / "home"),
                                    execute_runs=False, schedule_runs=False))
    with TestClient(app) as client:
        engine = client.post(f"{BASE}/engines", json={"name": "E", "type": "PySpark"}).json()
        yield app, client, engine["id"]
    app.state.registry.close()


def _create(client, engine_id, train):
    body = {"name": "Prévision — ventes ✓", "engineId": engine_id,
            "tasks": [{"name": "train", "parameters": train}], "tags": {"team": "r\"e/t"}}
    r = client.post(f"{BASE}/mlInstances", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_document_is_sent_as_the_general_path_writes_it(served):
    app, client, engine_id = served
    id = _create(client, engine_id, [{"key": "lr", "value": 0.1}, {"key": "n", "value": 1e-7}])
    r = client.get(f"{BASE}/mlInstances/{id}")
    registry, caller = app.state.registry, Caller.local()
    expected = json.dumps(registry.get(MLINSTANCE, caller, id), separators=(",", ":")).encode()
    assert r.status_code == 200 and r.content == expected
    assert r.headers["content-type"].endswith("profile=mlInstance.v1.json")
    assert r.headers["content-length"] == str(len(expected))


def test_a_document_with_a_secret_is_masked(served):
    app, client, engine_id = served
    id = _create(client, engine_id, [{"key": "password", "value": "hunter2", "secret": True}])
    r = client.get(f"{BASE}/mlInstances/{id}")
    assert r.status_code == 200 and b"hunter2" not in r.content
    assert r.json()["tasks"][0]["parameters"][0]["value"] == "********"


def test_deleted_and_other_sandboxes_stay_not_found(served):
    app, client, engine_id = served
    id = _create(client, engine_id, [])
    assert client.get(f"{BASE}/mlInstances/{id}", headers={"x-sandbox-name": "dev"}).status_code == 404
    assert client.delete(f"{BASE}/mlInstances/{id}").status_code == 200
    r = client.get(f"{BASE}/mlInstances/{id}")
    assert r.status_code == 404 and r.json()["title"] == "Not Found"


def test_fixed_paths_still_come_before_ids_and_the_openapi_keeps_its_order(served):
    app, client, _ = served
    assert "Docker" in client.get(f"{BASE}/engines/dockerRegistry").json()["detail"]
    assert client.get(f"{BASE}/insights/metrics", params={"algorithm": "regression"}).status_code == 200
    r = client.patch(f"{BASE}/mlInstances/x")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, PUT"
    paths = list(client.get(f"{BASE}/openapi.json").json()["paths"])
    assert paths.index(f"{BASE}/engines/dockerRegistry") < paths.index(f"{BASE}/engines/{{id}}")
    assert paths.index(f"{BASE}/engines/{{id}}") < paths.index(f"{BASE}/mlInstances")
    assert paths.index(f"{BASE}/mlInstances") < paths.index(f"{BASE}/mlInstances/{{id}}")


@pytest.mark.parametrize("path, shares", [
    (f"{BASE}/engines/dockerRegistry", True),     # a fixed segment where the id may be
    (f"{BASE}/engines/{{x}}", True),
    (f"{BASE}/engines", False),
    (f"{BASE}/engines/{{id}}/artifact", False),
    (f"{BASE}/models/{{id}}", False),
    (f"{BASE}/{{rest:path}}", True),
    (f"{BASE}/docs/{{rest:path}}", False),
    (f"{BASE}/engines/{{id}}.json", True),        # mixed text and parameter: in doubt, shares
])
def test_which_routes_may_share_a_path_with_a_get_by_id(path, shares):
    async def endpoint(request: Request, id: str) -> Response:
        return Response()

    get_by_id = APIRoute(f"{BASE}/engines/{{id}}", endpoint, methods=["GET"])
    assert _may_share_a_path(Route(path, endpoint), get_by_id) is shares


def test_request_route_refuses_an_endpoint_asking_for_more():
    async def with_query(request: Request, id: str, limit: int = 3) -> Response:
        return Response()

    with pytest.raises(TypeError, match="only the request"):
        APIRouter().add_api_route("/x/{id}", with_query, methods=["GET"],
                                  route_class_override=RequestRoute)
