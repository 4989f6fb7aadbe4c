"""Fixtures for the HTTP suite: a real `run serve` process on a free loopback port.

The server is started once per session (the auth tests start their own, with a token) and each
test works in its own sandbox, so tests never see each other's objects and can run in any order.
"""
from __future__ import annotations

from typing import Iterator

import httpx
import pytest

from live_server import MAX_BODY_MB, LiveServer, live_server, new_sandbox, sensei_client


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("sensei") / "home"
    with live_server(home, "--max-body-mb", str(MAX_BODY_MB)) as live:
        yield live


@pytest.fixture
def sandbox() -> str:
    return new_sandbox()


@pytest.fixture
def client(server: LiveServer, sandbox: str) -> Iterator[httpx.Client]:
    with sensei_client(server.api_url, sandbox) as c:
        yield c
