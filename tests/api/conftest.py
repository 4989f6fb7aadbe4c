"""Fixtures for the HTTP suite: a real `run serve` process on a free loopback port.

The server is started once per session (the auth tests start their own, with a token) and each
test works in its own sandbox, so tests never see each other's objects and can run in any order.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Callable, Iterator

import httpx
import pytest
import store_params

from live_server import MAX_BODY_MB, LiveServer, live_server, new_sandbox, sensei_client


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    """One server per store for the session, started when a module first asks for it."""
    started: dict[str, LiveServer] = {}
    with ExitStack() as stack:
        def get(kind: str, pg_server=None) -> LiveServer:
            if kind not in started:
                env = {}
                if kind == "postgresql":
                    url = pg_server.create_database(store_params.database_name("api_server"))
                    env = store_params.store_env(url)
                home = tmp_path_factory.mktemp(f"sensei-{kind}") / "home"
                started[kind] = stack.enter_context(
                    live_server(home, "--max-body-mb", str(MAX_BODY_MB), env=env))
            return started[kind]

        yield get


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, servers: Callable[..., LiveServer],
           store_kind: str) -> LiveServer:
    """The session's server; on each store in a module marked `stores` (tests/store_params.py)."""
    if store_kind == "postgresql":
        return servers(store_kind, request.getfixturevalue("pg_server"))
    return servers(store_kind)


@pytest.fixture
def sandbox() -> str:
    return new_sandbox()


@pytest.fixture
def client(server: LiveServer, sandbox: str) -> Iterator[httpx.Client]:
    with sensei_client(server.api_url, sandbox) as c:
        yield c
