"""Fixtures for the lanes suite: a real `run serve` with scoped tokens and data roots.

Reuses tests/api/live_server.py (a real uvicorn process on a free loopback port that stops exactly
what it started). One token server serves the whole suite; every test works in its own sandbox (or the
tokens tests in their grants' sandboxes), or starts its own server.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from lanes_helpers import lanes_server


@pytest.fixture(scope="session")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with lanes_server(tmp_path_factory.mktemp("lanes")) as started:
        yield started
