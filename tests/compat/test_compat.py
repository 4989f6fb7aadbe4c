"""The platform's libraries (runtime/compat) as a recipe's interpreter sees them.

Every scenario runs in a subprocess (tests/compat/scenarios.py), never in this process, so compat
never lands on the suite's sys.path: once with the runtime's own interpreter (compat put on
PYTHONPATH as a recipe environment's .pth would), once in the platform's Python image profile
(pandas 1.x, numpy 1.x), an environment built with runtime.envs.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPAT = REPO / "runtime" / "compat"
SCENARIOS = Path(__file__).with_name("scenarios.py")
NAMES = sorted(node.name for node in ast.parse(SCENARIOS.read_text()).body
               if isinstance(node, ast.FunctionDef) and node.name.startswith("scenario_"))


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLRUNTIME_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def _run_scenarios(python: str, work: Path, env: dict[str, str]) -> dict[str, str]:
    out = work / "results.json"
    proc = subprocess.run([python, str(SCENARIOS), str(out), str(work / "data")],
                          capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert proc.returncode == 0 and out.exists(), (
        f"exit status {proc.returncode}, results {'written' if out.exists() else 'not written'}"
        f"\n{proc.stdout}{proc.stderr}")
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runtime_interpreter(tmp_path_factory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("compat-runtime")
    env = _clean_env(PYTHONPATH=os.pathsep.join([str(COMPAT), str(REPO)]))
    return _run_scenarios(sys.executable, work, env)


@pytest.fixture(scope="module")
def pandas1_interpreter(tmp_path_factory) -> dict[str, str]:
    from runtime.envs import ensure_env

    home = tmp_path_factory.mktemp("compat-envs")
    info = ensure_env(recipe_dir=None, requirements=[], profile="python", home=home)
    work = tmp_path_factory.mktemp("compat-pandas1")
    return _run_scenarios(str(info.python), work, _clean_env())


@pytest.mark.parametrize("scenario", NAMES)
def test_scenario_in_the_runtime_interpreter(runtime_interpreter, scenario):
    assert runtime_interpreter[scenario] == "ok", runtime_interpreter[scenario]


@pytest.mark.parametrize("scenario", NAMES)
def test_scenario_with_pandas_1_and_numpy_1(pandas1_interpreter, scenario):
    assert pandas1_interpreter["versions"]["pandas"].startswith("1.")
    assert pandas1_interpreter["versions"]["numpy"].startswith("1.")
    assert pandas1_interpreter[scenario] == "ok", pandas1_interpreter[scenario]


def test_the_scenarios_were_all_found():
    assert len(NAMES) >= 12 and "scenario_where_each_operator" in NAMES


@pytest.mark.parametrize("name", ["platform_sdk", "ml", "sdk"])
def test_compat_is_not_importable_from_the_runtime(name, tmp_path):
    assert importlib.util.find_spec(name) is None, f"{name} leaked onto the suite's sys.path"
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                          text=True, cwd=tmp_path, env=_clean_env())
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


def test_compat_is_no_package_of_runtime_and_packaging_installs_no_top_level_shims():
    assert not (COMPAT / "__init__.py").exists()
    from setuptools import find_namespace_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    packages = find_namespace_packages(where=str(REPO), include=find["include"],
                                       exclude=find.get("exclude", ()))
    top_level = {p.split(".", 1)[0] for p in packages}
    assert top_level <= {"runtime", "engines"}, top_level
    assert "runtime.compat.platform_sdk" in packages   # shipped as files for recipe envs only
