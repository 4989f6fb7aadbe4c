"""Adobe's MLInstances endpoint page, replayed against the live server.

Every curl example in mlinstances-endpoint.md is parsed (method, URL, headers, `-d` body), pointed
at the server, given real ids, and sent in the page's order; each answer is held to the page's
example response (same keys, ids and timestamps excepted), the OpenAPI contract, and the values
the request sent.
"""
from __future__ import annotations

import getpass
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Optional

import httpx
import pytest

from contract import (ENDPOINT_DOC_PATH, assert_contract, assert_error, engine_body,
                      schema_properties)
from shared_files import require

require(ENDPOINT_DOC_PATH)   # read as the module is imported: without it the module is skipped

DOC_HOST = "https://platform.adobe.io"
DOC_ENGINE_ID = "22f4166f-85ba-4130-a995-a2b8e1edde32"       # POST body, DELETE ?engineId=
DOC_PUT_ENGINE_ID = "00000000-0000-0000-0000-000000000000"   # the PUT moves the MLInstance here
DOC_MLINSTANCE_ID = "46986c8f-7739-4376-8509-0178bdf32cda"
_PLACEHOLDER = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")
# Server-generated values: compared by type and format, never by value.
_GENERATED = {"id", "created", "updated", "engineId"}


@dataclass(frozen=True)
class CurlExample:
    section: str
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: Optional[str]
    response: Any                    # the page's example response that follows the request
    shell_commands: tuple[str, ...]  # the block split the way a shell would run it


def _parse_curl(text: str) -> tuple[str, str, list[tuple[str, str]], Optional[str]]:
    # shlex reads a newline as a space, so a missing line-continuation backslash is tolerated
    # here; `shell_commands` keeps the strict reading.
    tokens = shlex.split(text.replace("\\\n", " "))
    assert tokens[0] == "curl", tokens
    method, url, headers, body = "GET", None, [], None
    i = 1
    while i < len(tokens):
        token = tokens[i]
        if token == "-X":
            method, i = tokens[i + 1], i + 2
        elif token == "-H":
            name, _, value = tokens[i + 1].partition(":")
            headers.append((name.strip(), value.strip()))
            i += 2
        elif token in ("-d", "--data", "--data-raw"):
            body, i = tokens[i + 1], i + 2
        else:
            assert url is None, f"unexpected curl argument {token!r}"
            url, i = token, i + 1
    assert url, text
    return method, url, headers, body


def _shell_commands(text: str) -> tuple[str, ...]:
    """The commands a shell sees: a newline ends a command unless it is escaped or quoted."""
    commands, current, quote = [], [], None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch == "\\" and text[i + 1:i + 2] == "\n":
            current.append(" ")
            i += 2
            continue
        elif ch in "'\"":
            quote = ch
        elif ch == "\n":
            commands.append("".join(current).strip())
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    commands.append("".join(current).strip())
    return tuple(c for c in commands if c)


def load_examples() -> list[CurlExample]:
    text = ENDPOINT_DOC_PATH.read_text(encoding="utf-8")
    examples = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title = section.splitlines()[0].split("{#")[0].strip()
        blocks = [(m.group(1), m.group(2), m.start())
                  for m in re.finditer(r"```(\w+)\n(.*?)```", section, re.S)]
        for lang, block, start in blocks:
            if lang != "shell" or not block.lstrip().startswith("curl"):
                continue
            method, url, headers, body = _parse_curl(block)
            response = next((json.loads(b) for l, b, s in blocks if l == "json" and s > start), None)
            examples.append(CurlExample(title, method, url, tuple(headers), body, response,
                                        _shell_commands(block)))
    return examples


EXAMPLES = load_examples()


def test_the_page_has_the_six_examples_in_order() -> None:
    assert [(e.method, e.section) for e in EXAMPLES] == [
        ("POST", "Create an MLInstance"),
        ("GET", "Retrieve a list of MLInstances"),
        ("GET", "Retrieve a specific MLInstance"),
        ("PUT", "Update an MLInstance"),
        ("DELETE", "Delete MLInstances by Engine ID"),
        ("DELETE", "Delete an MLInstance"),
    ]
    assert all(e.url.startswith(DOC_HOST + "/data/sensei/mlInstances") for e in EXAMPLES)
    assert all(e.response is not None for e in EXAMPLES)


# --------------------------------------------------------------------------------------------


class Replayer:
    """Sends the page's examples to the live server with real values for its placeholders."""

    def __init__(self, api_url: str, sandbox: str) -> None:
        self.api_url = api_url
        self.values = {"ACCESS_TOKEN": "doc-token", "API_KEY": "doc-api-key",
                       "ORG_ID": "DOCORG@AdobeOrg", "SANDBOX_NAME": sandbox}
        self.ids: dict[str, str] = {}
        self.http = httpx.Client(timeout=30.0)

    def _fill(self, text: str) -> str:
        for doc_id, real in self.ids.items():
            text = text.replace(doc_id, real)

        def placeholder(match: re.Match) -> str:
            assert match.group(1) in self.values, f"unknown placeholder {match.group(0)}"
            return self.values[match.group(1)]

        return _PLACEHOLDER.sub(placeholder, text)

    def url(self, example: CurlExample) -> str:
        assert example.url.startswith(DOC_HOST + "/data/sensei")
        return self._fill(self.api_url + example.url[len(DOC_HOST + "/data/sensei"):])

    def headers(self, example: CurlExample) -> dict[str, str]:
        return {name: self._fill(value) for name, value in example.headers}

    def send(self, example: CurlExample, body: Optional[str] = None) -> httpx.Response:
        body = example.body if body is None else body
        return self.http.request(example.method, self.url(example), headers=self.headers(example),
                                 content=self._fill(body).encode() if body is not None else None)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30.0, headers={
            "Authorization": "Bearer doc-token", "x-api-key": "doc-api-key",
            "x-gw-ims-org-id": self.values["ORG_ID"], "x-sandbox-name": self.values["SANDBOX_NAME"]})


@pytest.fixture
def replayer(server, sandbox):
    r = Replayer(server.api_url, sandbox)
    yield r
    r.http.close()


def _example(section: str) -> CurlExample:
    return next(e for e in EXAMPLES if e.section == section)


def _without_trailing_commas(text: str) -> str:
    return re.sub(r",(\s*[}\]])", r"\1", text)


def _server_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "local"


def assert_doc_shape(actual: Any, example: Any, where: str = "") -> None:
    """`actual` has every key of the page's example, recursively, with values of the same type."""
    if isinstance(example, dict):
        assert isinstance(actual, dict), f"{where or '<root>'}: expected an object, got {actual!r}"
        for key, value in example.items():
            if where.endswith("createdBy") and key == "displayName":
                continue   # the page's user has a display name; a bearer token carries none
            assert key in actual, f"{where}/{key} of the page's example is missing: {actual}"
            assert_doc_shape(actual[key], value, f"{where}/{key}")
    elif isinstance(example, list):
        assert isinstance(actual, list) and len(actual) == len(example), \
            f"{where}: expected {len(example)} items like the page, got {actual!r}"
        for index, (a, e) in enumerate(zip(actual, example)):
            assert_doc_shape(a, e, f"{where}/{index}")
    else:
        assert type(actual) is type(example), f"{where}: {actual!r} is not like {example!r}"


def assert_only_contract_keys(doc: dict[str, Any], schema: str) -> None:
    unknown = set(doc) - schema_properties(schema)
    assert not unknown, f"keys outside the contract's {schema}: {unknown}"


def _count(client: httpx.Client) -> int:
    """Every MLInstance of the sandbox, deleted or not: a write of any kind changes it."""
    live = client.get("/mlInstances").json()["_page"]["totalCount"]
    gone = client.get("/mlInstances", params={"property": "deleted==true"}).json()["_page"]["totalCount"]
    return live + gone


# --------------------------------------------------------------------------------------------


def test_post_exactly_as_printed_is_refused_for_its_trailing_comma(replayer: Replayer) -> None:
    example = _example("Create an MLInstance")
    assert re.search(r",\s*}\s*$", example.body), "the page's body no longer ends with ',}'"
    with pytest.raises(json.JSONDecodeError) as parse_error:
        json.loads(example.body)
    with replayer.client() as client:
        engine = client.post("/engines", json=engine_body()).json()["id"]
        replayer.ids[DOC_ENGINE_ID] = engine
        before = _count(client)
        response = replayer.send(example)
        assert_error(response, 400, "Malformed JSON",
                     f"line {parse_error.value.lineno} column {parse_error.value.colno}")
        assert _count(client) == before


def test_post_as_a_shell_runs_it_sends_no_body(replayer: Replayer) -> None:
    # The page's POST lacks the `\` after the x-sandbox-name header: a shell runs the curl without
    # its content-type and body, then fails on a line starting with `-H`.
    example = _example("Create an MLInstance")
    assert len(example.shell_commands) > 1
    method, url, headers, body = _parse_curl(example.shell_commands[0])
    assert (method, body) == ("POST", None)
    assert "content-type" not in {name.lower() for name, _ in headers}
    with replayer.client() as client:
        before = _count(client)
        response = replayer.http.request(method, replayer._fill(url.replace(
            DOC_HOST + "/data/sensei", replayer.api_url)),
            headers={n: replayer._fill(v) for n, v in headers})
        assert_error(response, 415, "content type")
        assert _count(client) == before
    assert all(len(e.shell_commands) == 1 for e in EXAMPLES if e.section != example.section)


def test_replay_the_page_in_order(replayer: Replayer) -> None:
    create, listing, get, update, delete_by_engine, delete_one = EXAMPLES
    with replayer.client() as client:
        engines = {doc_id: client.post("/engines", json=engine_body()).json()["id"]
                   for doc_id in (DOC_ENGINE_ID, DOC_PUT_ENGINE_ID)}
        replayer.ids.update(engines)

        # -- Create: the page's body with its trailing comma removed ---------------------------
        body_text = _without_trailing_commas(create.body)
        sent = json.loads(body_text)
        response = replayer.send(create, body_text)
        created = assert_contract(response, "POST", "/mlInstances")
        assert response.headers["location"] == f"{replayer.api_url}/mlInstances/{created['id']}"
        assert_doc_shape(created, create.response)
        assert_only_contract_keys(created, "MLInstance")
        assert created["id"] != DOC_MLINSTANCE_ID
        assert created["engineId"] == engines[DOC_ENGINE_ID]
        assert (created["name"], created["description"]) == (sent["name"], sent["description"])
        assert created["createdBy"]["userId"] == _server_user()
        assert created["created"] == created["updated"]
        assert created["deleted"] is False
        # `fp` is stored under its canonical name, as the page's GET example shows it.
        assert [t["name"] for t in created["tasks"]] == ["train", "score", "featurePipeline"]
        assert [t["parameters"] for t in created["tasks"]] == [t["parameters"] for t in sent["tasks"]]
        replayer.ids[DOC_MLINSTANCE_ID] = created["id"]

        # The page's listing shows a second MLInstance, of another Engine; one more shares the
        # first Engine so that the delete by engineId has something to delete.
        other_doc = listing.response["children"][1]
        other_engine = client.post("/engines", json=engine_body()).json()["id"]
        other = client.post("/mlInstances", json={
            "name": other_doc["name"], "description": other_doc["description"],
            "engineId": other_engine}).json()
        sibling = client.post("/mlInstances", json={
            "name": "sibling", "description": "", "engineId": engines[DOC_ENGINE_ID]}).json()

        # -- List -----------------------------------------------------------------------------
        page = assert_contract(replayer.send(listing), "GET", "/mlInstances")
        doc_page = dict(listing.response, children=listing.response["children"][:1] * 3)
        doc_page["_page"] = dict(listing.response["_page"], totalCount=3, count=3)
        assert_doc_shape(page, doc_page)
        assert page["_page"]["property"] == listing.response["_page"]["property"] == "deleted==false"
        assert (page["_page"]["totalCount"], page["_page"]["count"]) == (3, 3)
        assert {c["id"] for c in page["children"]} == {created["id"], other["id"], sibling["id"]}
        for child in page["children"]:
            assert "tasks" not in child   # a listing has the summary, as on the page
            assert_only_contract_keys(child, "MLInstanceSummary")
        listed = next(c for c in page["children"] if c["id"] == created["id"])
        assert listed == {k: v for k, v in created.items() if k != "tasks"}

        # -- Get ------------------------------------------------------------------------------
        fetched = assert_contract(replayer.send(get), "GET", "/mlInstances/{mlInstanceId}")
        assert_doc_shape(fetched, get.response)
        assert fetched == created
        assert [t["name"] for t in fetched["tasks"]] == [t["name"] for t in get.response["tasks"]]

        # -- Update: overwrite, keep created/createdBy, move to the PUT's Engine ----------------
        put_sent = json.loads(update.body)
        response = replayer.send(update)
        updated = assert_contract(response, "PUT", "/mlInstances/{mlInstanceId}")
        assert_doc_shape(updated, update.response)
        assert updated["id"] == created["id"]
        assert updated["engineId"] == engines[DOC_PUT_ENGINE_ID]
        assert updated["created"] == created["created"] != put_sent["created"]
        assert updated["createdBy"] == created["createdBy"] != put_sent["createdBy"]
        assert updated["updated"] > created["updated"]
        # The tasks are replaced, not merged: the featurePipeline task is gone.
        assert updated["tasks"] == put_sent["tasks"]
        assert client.get(f"/mlInstances/{created['id']}").json() == updated

        # -- Delete by engineId ---------------------------------------------------------------
        response = replayer.send(delete_by_engine)
        assert assert_contract(response, "DELETE", "/mlInstances") == delete_by_engine.response
        assert response.json() == {"title": "Success", "status": 200,
                                   "detail": "MLInstances successfully deleted"}
        assert_error(client.get(f"/mlInstances/{sibling['id']}"), 404)
        for survivor in (created, other):   # of other Engines
            assert client.get(f"/mlInstances/{survivor['id']}").status_code == 200

        # -- Delete by id ---------------------------------------------------------------------
        response = replayer.send(delete_one)
        assert assert_contract(response, "DELETE", "/mlInstances/{mlInstanceId}") == \
            delete_one.response
        assert response.json() == {"title": "Success", "status": 200,
                                   "detail": "MLInstance deletion was successful"}
        assert_error(replayer.send(get), 404, created["id"])
        left = client.get("/mlInstances").json()
        assert [c["id"] for c in left["children"]] == [other["id"]]
