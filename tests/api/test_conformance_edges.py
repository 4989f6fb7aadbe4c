"""The edges the contract fuzzer found, each pinned by a plain request against a real server: fixed
behaviour, and the documented differences (README, "Differences from the platform")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from live_server import LiveServer, live_server

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL

SENSEI = "application/vnd.adobe.platform.sensei+json"
TOKEN = "edge-token"


def _engine(client: httpx.Client, name: str = "Edge engine") -> dict:
    response = client.post("/engines", json={"name": name, "type": "Python"})
    assert response.status_code == 201, response.text
    return response.json()


def test_405_names_the_allowed_methods(client: httpx.Client) -> None:
    engine = _engine(client)
    for method, path, allowed in (("TRACE", "/engines", "GET, POST"),
                                  ("PATCH", f"/engines/{engine['id']}", "DELETE, GET, PUT"),
                                  ("OPTIONS", "/engines/dockerRegistry", "GET")):
        response = client.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == allowed, (method, path)
        assert response.json()["detail"].endswith(f"allowed: {allowed}")


def test_limit_zero_counts_without_listing(client: httpx.Client) -> None:
    for name in ("a", "b"):
        _engine(client, name)
    body = client.get("/engines", params={"limit": 0}).json()
    assert body["children"] == [] and body["_page"]["totalCount"] == 2
    assert body["_page"]["count"] == 0
    assert "next" not in body["_links"] and "next" not in body["_page"]   # no endless paging
    assert len(client.get("/engines", params={"limit": 1}).json()["children"]) == 1


@pytest.mark.parametrize("query", ["limit=1&limit=2", "start=%2B1", "start=1_0", "limit=%D9%A3",
                                   "orderby=name&orderby=created"])
def test_listing_parameters_are_read_exactly(client: httpx.Client, query: str) -> None:
    response = client.get(f"/engines?{query}")
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/x-www-form-urlencoded"},
                                     {"Content-Type": "text/plain"}])
def test_a_body_without_a_json_content_type_is_a_415_naming_the_header(
        client: httpx.Client, headers: dict) -> None:
    response = client.post("/engines", content=b'{"name": "curl -d"}', headers=headers)
    assert response.status_code == 415, response.text
    assert "Content-Type: application/json" in response.json()["detail"]
    assert client.get("/engines", params={"limit": 0}).json()["_page"]["totalCount"] == 0


def test_application_json_and_the_sensei_profile_are_both_taken(client: httpx.Client) -> None:
    for media in ("application/json", f"{SENSEI};profile=engine.v1.json"):
        response = client.post("/engines", content=b'{"name": "x"}',
                               headers={"Content-Type": media})
        assert response.status_code == 201, response.text


def test_trailing_slash_is_no_alias_of_the_listing(client: httpx.Client) -> None:
    response = client.get("/engines/")
    assert response.status_code == 404
    assert "no trailing slash" in response.json()["detail"]
    assert client.get("/engines").status_code == 200


def test_empty_name_is_refused_naming_the_field(client: httpx.Client) -> None:
    response = client.post("/engines", json={"name": ""})
    assert response.status_code == 400 and "name" in response.json()["detail"]


def test_a_client_chosen_insight_id_is_ignored(client: httpx.Client) -> None:
    response = client.post("/insights", json={"id": "my-own-id", "metrics": []})
    assert response.status_code == 201
    created = response.json()["id"]
    assert created != "my-own-id"
    assert client.get("/insights/my-own-id").status_code == 404
    assert client.get(f"/insights/{created}").status_code == 200


def test_multipart_parts_are_the_contracts_only(client: httpx.Client, server: LiveServer) -> None:
    before = set((server.home / "artifacts").rglob("*")) if (server.home / "artifacts").exists() \
        else set()
    for name in ("../../escaped", "", "defaultArtefact"):
        response = client.post("/engines", files={
            "engine": (None, json.dumps({"name": "Upload"}), "application/json"),
            name: ("x.bin", b"payload", "application/octet-stream")})
        assert response.status_code == 400, (name, response.text)
        assert "defaultArtifact" in response.json()["detail"]
    after = set((server.home / "artifacts").rglob("*")) if (server.home / "artifacts").exists() \
        else set()
    assert after == before
    assert not (server.home.parent / "escaped").exists()


def test_the_served_openapi_documents_every_status(server: LiveServer) -> None:
    doc = httpx.get(server.api_url + "/openapi.json").json()
    paths = doc["paths"]
    base = "/data/sensei"
    assert "404" in paths[f"{base}/engines/dockerRegistry"]["get"]["responses"]
    assert "Docker" in paths[f"{base}/engines/dockerRegistry"]["get"]["responses"]["404"][
        "description"]
    assert "algorithm" in paths[f"{base}/insights/metrics"]["get"]["responses"]["404"][
        "description"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"400", "401", "404", "406", "500"} <= statuses, (method, path)
            if method in ("post", "put"):
                assert {"413", "415"} <= statuses, (method, path)
            assert operation["responses"].get("422", {}).get("description") != "Validation Error"
    assert "405" in doc["info"]["description"] and "Allow" in doc["info"]["description"]


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("edges-token") / "home"
    with live_server(home, "--token", f"{TOKEN}=edge-user") as live:
        yield live


@pytest.mark.parametrize("method,path", [
    ("GET", "/engines"), ("GET", "/no/such/path"), ("TRACE", "/engines"),
    ("GET", "/engines/"), ("POST", "/insights"), ("GET", "/insights/metrics"),
])
def test_with_tokens_every_route_without_authorization_is_a_401(
        token_server: LiveServer, method: str, path: str) -> None:
    response = httpx.request(method, token_server.api_url + path, headers={"Accept": "text/html"})
    assert response.status_code == 401, response.text
    assert "Bearer" in response.json()["detail"]
    authorized = httpx.request(method, token_server.api_url + path,
                               headers={"Authorization": f"Bearer {TOKEN}"})
    assert authorized.status_code != 401


def test_with_tokens_the_docs_stay_readable(token_server: LiveServer) -> None:
    # The docs page and the OpenAPI show the API's shape, no data: like the platform's public
    # reference they need no token (the page could not even ask for one otherwise).
    assert httpx.get(token_server.api_url + "/docs").status_code == 200
    assert httpx.get(token_server.api_url + "/openapi.json").status_code == 200
