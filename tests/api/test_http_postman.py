"""Adobe's Postman collection, run against the live server with only its host replaced.

Each request is built the way Postman builds it: `{{VAR}}` substituted from an environment,
`:pathVar` URL variables filled, the collection's pre-request script applied (headers and query
parameters whose variable is empty are dropped), raw bodies sent as given, form-data bodies sent
as multipart text parts (with Postman's own boundary: the collection's bare
`Content-Type: multipart/form-data` header is replaced, as Postman replaces it).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

import httpx
import pytest

from contract import (POSTMAN_PATH, assert_contract, assert_error, engine_body, experiment_body,
                      insight_body, mlinstance_body, mlservice_body, model_body, run_body)
from shared_files import require

require(POSTMAN_PATH)   # read as the module is imported: without it the module is skipped

POSTMAN_HOST = "https://platform.adobe.io"
_VARIABLE = re.compile(r"\{\{([^{}]+)\}\}")

# Requests this runtime deliberately does not carry out: they answer a contract error body.
NOT_IMPLEMENTED = {   # (status, words of the detail): what a local runtime cannot provide
    ("GET", "/engines/dockerRegistry"): (404, "Docker registry"),
    ("POST", "/models/{modelId}/transcodings"): (422, "transcodings"),
    ("GET", "/models/{modelId}/transcodings/{modelTranscodingId}"): (404, "transcodings"),
}

RUNS = "/experiments/{experimentId}/runs"
CREATES = [("POST", "/engines"), ("POST", "/mlInstances"), ("POST", "/experiments"),
           ("POST", RUNS), ("POST", "/models"), ("POST", "/insights"), ("POST", "/mlServices")]
READS = [("GET", "/engines"), ("GET", "/engines/{engineId}"), ("GET", "/engines/dockerRegistry"),
         ("GET", "/mlInstances"), ("GET", "/mlInstances/{mlInstanceId}"),
         ("GET", "/experiments"), ("GET", "/experiments/{experimentId}"), ("GET", RUNS),
         ("GET", RUNS + "/{experimentRunId}"), ("GET", RUNS + "/{experimentRunId}/status"),
         ("GET", "/models"), ("GET", "/models/{modelId}"), ("GET", "/models/{modelId}/artifact"),
         ("GET", "/models/{modelId}/transcodings"), ("POST", "/models/{modelId}/transcodings"),
         ("GET", "/models/{modelId}/transcodings/{modelTranscodingId}"),
         ("GET", "/insights"), ("GET", "/insights/{insightId}"), ("GET", "/insights/metrics"),
         ("GET", "/mlServices"), ("GET", "/mlServices/{serviceId}")]
UPDATES = [("PUT", "/engines/{engineId}"), ("PUT", "/mlInstances/{mlInstanceId}"),
           ("PUT", "/experiments/{experimentId}"), ("PUT", "/models/{modelId}"),
           ("PUT", "/mlServices/{serviceId}")]
# Children before parents; by id first, then the bulk delete by parent (which then removes the
# extra object made for it just before).
DELETES = [("DELETE", "/mlServices/{serviceId}"), ("DELETE", "/mlServices"),
           ("DELETE", "/models/{modelId}"), ("DELETE", "/experiments/{experimentId}"),
           ("DELETE", "/experiments"), ("DELETE", "/mlInstances/{mlInstanceId}"),
           ("DELETE", "/mlInstances"), ("DELETE", "/engines/{engineId}")]
ORDER = CREATES + READS + UPDATES + DELETES

# Which environment variable a create's answer sets (as a Postman test script would).
CREATED_ID = {"/engines": "engineId", "/mlInstances": "mlInstanceId",
              "/experiments": "experimentId", RUNS: "experimentRunId", "/models": "modelId",
              "/insights": "insightId", "/mlServices": "serviceId"}
MODEL_ARTIFACT = "postman model artifact: weights 0.1 0.2 0.3"


@dataclass(frozen=True)
class PostmanRequest:
    folder: str
    name: str
    raw: dict[str, Any]      # the item's `request` object

    @property
    def method(self) -> str:
        return self.raw["method"].upper()

    @property
    def template(self) -> str:
        """The contract's path template: /data/sensei/engines/:engineId -> /engines/{engineId}."""
        path = self.raw["url"]["path"]
        assert path[:2] == ["data", "sensei"], path
        return "/" + "/".join("{" + p[1:] + "}" if p.startswith(":") else p for p in path[2:])

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.template


def load_collection() -> list[PostmanRequest]:
    collection = json.loads(POSTMAN_PATH.read_text(encoding="utf-8"))
    found: list[PostmanRequest] = []

    def walk(items: list[dict[str, Any]], folder: str) -> None:
        for item in items:
            if "item" in item:
                walk(item["item"], item["name"])
            else:
                found.append(PostmanRequest(folder, item["name"], item["request"]))

    walk(collection["item"], "")
    return found


REQUESTS = load_collection()
BY_KEY = {r.key: r for r in REQUESTS}


# --------------------------------------------------------------------------------------------
# Building a request as Postman does


def substitute(text: str, env: dict[str, str]) -> str:
    """`{{VAR}}` -> its value; an unknown variable stays literal, as in Postman."""
    return _VARIABLE.sub(lambda m: env[m.group(1)] if m.group(1) in env else m.group(0), text)


def _empty_variable(value: str, env: dict[str, str]) -> bool:
    # The collection's pre-request script: a value that is exactly `{{VAR}}` with VAR unset/empty.
    match = re.fullmatch(r"\{\{(.+)\}\}", value)
    return bool(match) and not env.get(match.group(1))


@dataclass
class Built:
    method: str
    url: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    content: Optional[bytes] = None
    files: Optional[list[tuple[str, tuple[None, str]]]] = None


def build(request: PostmanRequest, env: dict[str, str], api_url: str) -> Built:
    raw = request.raw
    url = raw["url"]
    variables = {v.get("key") or v["id"]: v.get("value", "") for v in url.get("variable", [])}
    segments = []
    for part in url["path"]:
        if part.startswith(":"):
            assert part[1:] in variables, f"{request.name}: no value for {part}"
            part = substitute(variables[part[1:]], env)
        segments.append(part)
    path = "/" + "/".join(segments)
    assert path.startswith("/data/sensei"), path
    params = [(q["key"], substitute(q.get("value") or "", env)) for q in url.get("query", [])
              if not q.get("disabled") and not _empty_variable(q.get("value") or "", env)]
    headers = {h["key"]: substitute(h["value"], env) for h in raw.get("header", [])
               if not h.get("disabled") and not _empty_variable(h["value"], env)}
    built = Built(request.method, api_url + path[len("/data/sensei"):], params, headers)
    body = raw.get("body") or {}
    if body.get("mode") == "raw" and body.get("raw"):
        built.content = substitute(body["raw"], env).encode()
    elif body.get("mode") == "formdata" and body.get("formdata"):
        parts = []
        for field in body["formdata"]:
            assert field.get("type", "text") == "text", f"{request.name}: {field}"
            if not field.get("disabled"):
                parts.append((field["key"], (None, substitute(field["value"], env))))
        built.files = parts
        # Postman sends its own multipart Content-Type, with the boundary.
        built.headers = {k: v for k, v in built.headers.items() if k.lower() != "content-type"}
    return built


def send(http: httpx.Client, built: Built) -> httpx.Response:
    return http.request(built.method, built.url, params=built.params or None,
                        headers=built.headers, content=built.content, files=built.files)


# --------------------------------------------------------------------------------------------


def base_environment(sandbox: str) -> dict[str, str]:
    # defaultArtifact is a text field in the collection: text cannot carry a recipe archive (an
    # upload that is not a recipe is a 400), so it goes empty; recipe uploads: tests/recipes.
    env = {"IMS_ORG": "POSTMANORG@AdobeOrg", "SANDBOX_NAME": sandbox,
           "ACCESS_TOKEN": "postman-token", "API_KEY": "", "algorithm": "regression",
           "modelArtifact": MODEL_ARTIFACT, "defaultArtifact": "",
           "modelTranscodingId": "transcoding-0"}
    for name in ("preprocess", "featurePipeline", "train", "batchScore", "validate", "evaluate",
                 "publish"):
        env[f"{name}OverrideArtifact"] = ""
    return env


def refresh_bodies(env: dict[str, str], counter: list[int]) -> None:
    """The entity variables, valid for the contract, naming the objects created so far."""
    counter[0] += 1
    n = counter[0]
    env["engine"] = json.dumps(engine_body(f"postman-engine-{n}"))
    if "engineId" in env:
        env["mlInstance"] = json.dumps(mlinstance_body(env["engineId"], f"postman-instance-{n}"))
    if "mlInstanceId" in env:
        env["experiment"] = json.dumps(experiment_body(env["mlInstanceId"],
                                                       f"postman-experiment-{n}"))
        env["mlService"] = json.dumps(mlservice_body(env["mlInstanceId"], f"postman-service-{n}"))
    env["Run"] = json.dumps(run_body("train", description=f"postman run {n}"))
    if "experimentRunId" in env:
        env["model"] = json.dumps(model_body(env["experimentRunId"], f"postman-model-{n}"))
    env["insight"] = json.dumps(insight_body(engine_id=env.get("engineId", ""),
                                             mlinstance_id=env.get("mlInstanceId", ""),
                                             run_id=env.get("experimentRunId", ""),
                                             name=f"postman-client-{n}"))


def test_the_collection_holds_the_requests_this_suite_orders() -> None:
    keys = [r.key for r in REQUESTS]
    assert len(keys) == len(set(keys)) == len(ORDER) == 41
    assert set(keys) == set(ORDER)
    # The transcoding POST reuses {{model}} as its body; every other raw body names its entity.
    assert BY_KEY[("PUT", "/engines/{engineId}")].raw["body"]["raw"] == "{{engine}}"
    assert BY_KEY[("POST", RUNS)].raw["body"]["raw"] == "{{Run}}"


def test_prerequest_script_drops_headers_and_query_of_empty_variables(server, sandbox) -> None:
    env = base_environment(sandbox) | {"engineId": ""}
    built = build(BY_KEY[("DELETE", "/mlInstances")], env, server.api_url)
    assert "x-api-key" not in {k.lower() for k in built.headers}     # API_KEY is empty
    assert built.headers["Authorization"] == "Bearer postman-token"
    assert built.headers["x-sandbox-name"] == sandbox
    assert built.params == []                                       # engineId is empty
    with httpx.Client(timeout=30.0) as http:
        assert_error(send(http, built), 400, "engineId")
    env["engineId"] = "e-1"
    assert build(BY_KEY[("DELETE", "/mlInstances")], env, server.api_url).params == \
        [("engineId", "e-1")]
    engine_post = build(BY_KEY[("POST", "/engines")], env, server.api_url)
    assert "Content-Type" not in engine_post.headers
    assert [name for name, _ in engine_post.files][:2] == ["engine", "defaultArtifact"]


def test_every_request_of_the_collection_works(server, sandbox) -> None:
    env = base_environment(sandbox)
    counter = [0]
    sent: list[tuple[str, str]] = []
    extras: dict[str, str] = {}

    with httpx.Client(timeout=30.0) as http:

        def run(key: tuple[str, str]) -> httpx.Response:
            refresh_bodies(env, counter)
            built = build(BY_KEY[key], env, server.api_url)
            response = send(http, built)
            sent.append(key)
            method, template = key
            if key in NOT_IMPLEMENTED:
                assert_error(response, *NOT_IMPLEMENTED[key])
                return response
            assert 200 <= response.status_code < 300, (
                f"{BY_KEY[key].folder} / {BY_KEY[key].name}: {method} {built.url} -> "
                f"{response.status_code} {response.text[:500]}")
            body = assert_contract(response, method, template)
            if method == "POST":
                env[CREATED_ID[template]] = body["id"]
            if method == "PUT":
                _sent = json.loads(built.content)
                assert body["name"] == _sent["name"] and body["updated"] > body["created"]
            return response

        for key in CREATES:
            run(key)
        assert all(CREATED_ID[t] in env for _, t in CREATES)
        ids = {name: env[name] for name in CREATED_ID.values()}

        for key in READS:
            response = run(key)
            if key == ("GET", "/models/{modelId}/artifact"):
                assert response.content == MODEL_ARTIFACT.encode()
            elif key == ("GET", "/models/{modelId}/transcodings"):
                assert response.json()["children"] == []   # this runtime produces none
            elif key[1] in ("/engines", "/mlInstances", "/experiments", RUNS, "/models",
                            "/insights", "/mlServices"):
                listed = [c["id"] for c in response.json()["children"]]
                assert listed == [ids[CREATED_ID[key[1]]]], key
            elif key == ("GET", "/insights/metrics"):
                assert response.json()["children"][0]["algorithm"] == "regression"
            elif key[1].endswith("/status"):
                assert response.json()["experimentRunId"] == ids["experimentRunId"]
            elif key not in NOT_IMPLEMENTED:
                assert response.json()["id"] in ids.values(), key

        for key in UPDATES:
            run(key)

        # One more object for each bulk delete to remove, through the collection's own POSTs.
        for template in ("/mlServices", "/experiments", "/mlInstances"):
            saved = env[CREATED_ID[template]]
            run(("POST", template))
            extras[template] = env[CREATED_ID[template]]
            env[CREATED_ID[template]] = saved

        for key in DELETES:
            response = run(key)
            assert response.json()["title"] == "Success"

        assert sorted(set(sent)) == sorted(ORDER)
        check = {"Authorization": "Bearer postman-token", "x-gw-ims-org-id": env["IMS_ORG"],
                 "x-sandbox-name": sandbox}
        for collection, name in CREATED_ID.items():
            if collection in ("/insights", RUNS):
                continue
            assert_error(http.get(f"{server.api_url}{collection}/{ids[name]}", headers=check), 404)
        for collection, extra in extras.items():
            assert_error(http.get(f"{server.api_url}{collection}/{extra}", headers=check), 404)
        assert http.get(f"{server.api_url}/insights/{ids['insightId']}",
                        headers=check).status_code == 200
