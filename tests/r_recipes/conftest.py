"""R recipe tests: module-wide fixtures (a work folder with the recipes and data, one home)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from r_helpers import FIXTURES, RETAIL


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder holding copies of the recipes and data/ (the retail CSVs): the CLI runs there, so
    the data set ids it is given are relative paths."""
    root = tmp_path_factory.mktemp("r-recipes")
    (root / "data").mkdir()
    for name in ("retail-training.csv", "retail-scoring.csv"):
        shutil.copy(RETAIL / name, root / "data" / name)
    for recipe in FIXTURES.iterdir():
        shutil.copytree(recipe, root / recipe.name)
    return root


@pytest.fixture(scope="module")
def home(workdir: Path) -> Path:
    return workdir / "home"
