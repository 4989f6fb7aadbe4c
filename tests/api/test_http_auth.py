"""Bearer tokens on a live server, and the refusal to listen publicly without them.

A server started with `--token secret-token=jane@example.com` (on 127.0.0.1 only: this suite never
binds another address) must refuse requests without that token and record its user as the
creator. Without tokens, `run serve --host 0.0.0.0` must exit before binding anything.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from live_server import LiveServer, free_port, live_server, new_sandbox, sensei_client, server_env
from contract import assert_contract, assert_error, engine_body, mlinstance_body, repo_root

TOKEN, USER = "secret-token", "jane@example.com"


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("sensei-auth") / "home"
    with live_server(home, "--token", f"{TOKEN}={USER}") as live:
        yield live


def _count(server: LiveServer, sandbox: str) -> int:
    with sensei_client(server.api_url, sandbox, token=TOKEN) as c:
        return sum(c.get("/engines", params={"property": p}).json()["_page"]["totalCount"]
                   for p in ("deleted==false", "deleted==true"))


@pytest.mark.parametrize("authorization, detail", [
    (None, "Missing bearer token"),
    ("", "Missing bearer token"),
    ("Bearer", "Missing bearer token"),
    (f"Basic {TOKEN}", "Missing bearer token"),
    ("Bearer wrong-token", "not valid"),
    (f"Bearer {TOKEN}x", "not valid"),
    (f"Bearer {TOKEN[:-1]}", "not valid"),
])
def test_requests_without_the_token_get_401_and_change_nothing(
        token_server: LiveServer, authorization: str | None, detail: str) -> None:
    sandbox = new_sandbox()
    headers = {"x-sandbox-name": sandbox, "x-gw-ims-org-id": "TESTORG@AdobeOrg",
               "x-api-key": "k"}
    if authorization is not None:
        headers["Authorization"] = authorization
    with httpx.Client(base_url=token_server.api_url, headers=headers, timeout=30.0) as c:
        assert_error(c.get("/engines"), 401, detail)
        assert_error(c.post("/engines", json=engine_body()), 401, detail)
        assert_error(c.post("/engines", files=[("engine", (None, '{"name": "x"}'))]), 401)
        assert_error(c.get("/insights/metrics", params={"algorithm": "regression"}), 401)
        # Authentication comes before reading the body: even a malformed one gets 401.
        assert_error(c.post("/mlInstances", content=b"{,", headers={
            "content-type": "application/json"}), 401)
    assert _count(token_server, sandbox) == 0


def test_the_token_user_becomes_the_creator(token_server: LiveServer) -> None:
    sandbox = new_sandbox()
    with sensei_client(token_server.api_url, sandbox, token=TOKEN) as c:
        engine = assert_contract(c.post("/engines", json=engine_body()), "POST", "/engines")
        assert engine["createdBy"] == {"userId": USER}
        instance = assert_contract(c.post("/mlInstances", json=mlinstance_body(engine["id"])),
                                   "POST", "/mlInstances")
        assert instance["createdBy"]["userId"] == USER
        # A client cannot claim another creator.
        body = mlinstance_body(engine["id"], createdBy={"userId": "mallory@example.com"})
        updated = assert_contract(c.put(f"/mlInstances/{instance['id']}", json=body),
                                  "PUT", "/mlInstances/{mlInstanceId}")
        assert updated["createdBy"]["userId"] == USER
        listed = assert_contract(c.get("/mlInstances"), "GET", "/mlInstances")
        assert [(i["id"], i["createdBy"]["userId"]) for i in listed["children"]] == \
            [(instance["id"], USER)]
    assert _count(token_server, sandbox) == 1


def _serve_cli() -> list[str]:
    """The installed `run` console script when there is one, else the module."""
    script = shutil.which("run", path=str(Path(sys.executable).parent))
    return [script, "serve"] if script else [sys.executable, "-m", "runtime.cli.main", "serve"]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_public_bind_without_tokens_exits_before_binding(tmp_path: Path, host: str) -> None:
    port = free_port()
    home = tmp_path / "home"
    result = subprocess.run([*_serve_cli(), "--host", host, "--port", str(port),
                             "--home", str(home)],
                            cwd=repo_root(), env=server_env(), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert f"Refusing to listen on {host!r} without tokens" in result.stderr
    assert "--token" in result.stderr
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    assert "Serving the Sensei ML API" not in output and "Uvicorn running" not in output
    assert _port_is_free(port)
    assert not home.exists()   # nothing opened: the refusal comes first
