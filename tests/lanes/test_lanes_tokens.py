"""Tokens scoped to an org and sandboxes, on a real server; the tokens file's forms and errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lanes_helpers import BOB, NOOP_ENGINE, ORG, ROOT, client
from live_server import new_sandbox
from runtime.api.auth import TokenGrant, parse_tokens
from runtime.errors import ServerConfigError


def _error(response, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail"} and body["status"] == status
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    return body["detail"]


def test_a_scoped_token_reaches_its_sandboxes_and_is_their_creator(lanes: dict) -> None:
    server = lanes["server"]
    for sandbox in ("sbx1", "sbx2"):
        with client(server, sandbox) as c:
            engine = c.post("/engines", json=NOOP_ENGINE)
            assert engine.status_code == 201, engine.text
            assert engine.json()["createdBy"] == {"userId": "alice@example.com"}
            assert c.get(f"/engines/{engine.json()['id']}").status_code == 200


def test_another_sandbox_or_org_is_403_naming_it_and_writes_nothing(lanes: dict) -> None:
    server = lanes["server"]
    with client(server, "bob") as c:   # alice's token, bob's sandbox
        _error(c.get("/engines"), 403, "'bob'", "sbx1", "alice@example.com")
        _error(c.post("/engines", json=NOOP_ENGINE), 403, "sandbox 'bob'")
    with client(server, "sbx1", org="OTHER@AdobeOrg") as c:
        _error(c.get("/engines"), 403, "org 'OTHER@AdobeOrg'", ORG)
        _error(c.post("/engines", json=NOOP_ENGINE), 403, "OTHER@AdobeOrg")
    with client(server, "bob", token=BOB) as c:   # nothing reached bob's sandbox
        listed = c.get("/engines", params={"property": "deleted==false"})
        assert listed.status_code == 200
        assert all(e["createdBy"]["userId"] == "bob@example.com" for e in listed.json()["children"])
    with client(server, "sbx1", token=BOB) as c:   # and bob cannot reach alice's
        _error(c.get("/engines"), 403, "'sbx1'", "'bob'")


def test_missing_headers_mean_the_tokens_own_org_and_first_sandbox(lanes: dict) -> None:
    server = lanes["server"]
    import httpx

    with httpx.Client(base_url=server.api_url, timeout=30,
                      headers={"Authorization": f"Bearer {BOB}"}) as c:
        created = c.post("/engines", json=NOOP_ENGINE)
        assert created.status_code == 201, created.text
    with client(server, "bob", token=BOB) as c:
        assert c.get(f"/engines/{created.json()['id']}").status_code == 200


def test_a_plain_string_token_reaches_any_org_and_sandbox(lanes: dict) -> None:
    server = lanes["server"]
    for org in (ORG, "ANY@AdobeOrg"):
        with client(server, new_sandbox(), token=ROOT, org=org) as c:
            created = c.post("/engines", json=NOOP_ENGINE)
            assert created.status_code == 201 and \
                created.json()["createdBy"]["userId"] == "root@example.com"


def test_a_wrong_token_is_still_401_not_403(lanes: dict) -> None:
    with client(lanes["server"], "sbx1", token="nope") as c:
        _error(c.get("/engines"), 401, "not valid")


def test_tokens_from_flags_env_and_files(tmp_path: Path) -> None:
    tokens = parse_tokens(["t1=jane@example.com", "t2"], env="e1=env@example.com,e2")
    assert tokens == {"t1": TokenGrant("jane@example.com"), "t2": TokenGrant("api-user"),
                      "e1": TokenGrant("env@example.com"), "e2": TokenGrant("api-user")}
    json_file = tmp_path / "tokens.json"
    json_file.write_text(json.dumps({"a": "ann", "b": {"user": "bob", "org": ORG,
                                                       "sandboxes": ["s1", "s2"]},
                                     "c": {"user": "cy", "sandboxes": "only"}}))
    parsed = parse_tokens([], str(json_file), env="")
    assert parsed["a"] == TokenGrant("ann")
    assert parsed["b"] == TokenGrant("bob", ORG, ("s1", "s2"))
    assert parsed["c"] == TokenGrant("cy", None, ("only",))
    yaml_file = tmp_path / "tokens.yaml"
    yaml_file.write_text("tok:\n  user: yan\n  org: O@AdobeOrg\n")
    assert parse_tokens([], str(yaml_file), env="")["tok"] == TokenGrant("yan", "O@AdobeOrg")


@pytest.mark.parametrize("entry, needle", [
    ({"user": "bob", "sandbox": ["x"]}, "unknown key(s) sandbox"),
    ({"org": ORG}, "non-empty \"user\""),
    ({"user": "bob", "sandboxes": []}, "non-empty list"),
    ({"user": "bob", "sandboxes": [1]}, "non-empty list"),
    ({"user": "bob", "org": 5}, "\"org\""),
    (["bob"], "user id or to an object"),
    ("  ", "empty user id"),
])
def test_a_bad_tokens_file_entry_is_refused_without_showing_the_token(
        tmp_path: Path, entry: object, needle: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"VERYSECRETTOKEN": entry}))
    with pytest.raises(ServerConfigError) as info:
        parse_tokens([], str(path), env="")
    assert needle in info.value.detail and "VERYSECRETTOKEN" not in info.value.detail


def test_an_unparsable_tokens_file_does_not_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"VERYSECRETTOKEN": "jane", oops}')
    with pytest.raises(ServerConfigError) as info:
        parse_tokens([], str(path), env="")
    assert "JSONDecodeError" in info.value.detail and "VERYSECRETTOKEN" not in info.value.detail
