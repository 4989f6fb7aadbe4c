"""Fixtures for the lanes suite: a real `run serve` with scoped tokens and data roots.

Reuses tests/api/live_server.py (a real uvicorn process on a free loopback port that stops exactly
what it started). Every test works in its own sandbox of a token's grant, or in its own server.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from lanes_helpers import lanes_server


@pytest.fixture(scope="module")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with lanes_server(tmp_path_factory.mktemp("lanes")) as started:
        yield started
