"""Recipe environments are real: built with uv from the package index (PyPI), into a home made
for this test session. The builds are few and shared: one pandas 1.x environment for a recipe and
one bare environment, built once per session; tests that need their own home build bare ones."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runtime.envs import EnvInfo, ensure_env

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "recipes"


@pytest.fixture(scope="session")
def env_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("envs-home")


@pytest.fixture(scope="session")
def recipes(tmp_path_factory) -> Path:
    """A copy of tests/envs/recipes: building a source folder may leave *.egg-info in it."""
    target = tmp_path_factory.mktemp("recipes") / "recipes"
    shutil.copytree(RECIPES, target)
    return target


@pytest.fixture(scope="session")
def python_env(env_home, recipes) -> EnvInfo:
    """The pandas 1.x ("python" profile) environment of a recipe written for that image."""
    return ensure_env(recipe_dir=recipes / "pandas1_recipe", requirements=[], profile="python",
                      home=env_home)


@pytest.fixture(scope="session")
def bare_env(env_home) -> EnvInfo:
    return ensure_env(recipe_dir=None, requirements=[], profile="bare", home=env_home)
