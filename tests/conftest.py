"""Shared fixtures: a fresh runtime home and registry per test."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def home(tmp_path):
    from runtime.home import resolve_home

    return resolve_home(tmp_path / "home")


@pytest.fixture
def registry(home):
    from runtime.service import Registry

    reg = Registry.open(home)
    yield reg
    reg.close()


@pytest.fixture
def caller():
    from runtime.service import Caller

    return Caller.local(org="TestOrg@AdobeOrg", sandbox="test", user_id="tester@example.com")
