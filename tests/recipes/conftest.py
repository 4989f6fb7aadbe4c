"""Recipe tests: recipe folders written for these tests (fixtures/), zipped or tarred on demand
(the helpers live in recipe_helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from recipe_helpers import FIXTURES


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
