"""The environment's Python is chosen from what the pins can install: when a pin has no wheel for
the runtime's own Python (as TensorFlow 2.8 has none past cp310), the next closest Python of this
host that the worker runs on is tried, and the build log says which was chosen and why. The
Pythons an error names are only those that run. And a recipe's own pin replaces a profile's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local_wheels import make_wheel, py310_only_wheel
from runtime.envs import ensure_env, plan_env
from runtime.envs.build import find_uv
from runtime.envs.interpreters import host_pythons
from runtime.envs.layout import BUILD_LOG, META_FILE
from runtime.errors import PythonUnavailable

HOST = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _has_python(minor: str) -> bool:
    return any(p.version.startswith(minor + ".") for p in host_pythons(find_uv()))


needs_310 = pytest.mark.skipif(HOST == "3.10" or not _has_python("3.10"),
                               reason="needs a CPython 3.10 on this host besides the runtime's own")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("py-wheels")
    py310_only_wheel(folder)
    make_wheel(folder, "envtest-py27only", "1.0", {"envtest_py27only.py": ""}, tag="cp27-none-any")
    return folder


@pytest.fixture
def find_links(wheelhouse, monkeypatch):
    monkeypatch.setenv("UV_FIND_LINKS", str(wheelhouse))


@needs_310
def test_a_pin_without_wheels_for_this_python_picks_one_it_has(env_home, find_links):
    info = ensure_env(recipe_dir=None, requirements=["envtest-py310only==1.0"], profile="bare",
                      home=env_home)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = json.loads(subprocess.run(
        [str(info.python), "-c", "import json, sys, envtest_py310only, runtime.worker; "
         "print(json.dumps(list(sys.version_info[:2])))"],
        capture_output=True, text=True, env=env, cwd="/", timeout=120, check=True).stdout)
    assert out == [3, 10]                       # the worker imports there too (checked at build)
    meta = json.loads((info.path / META_FILE).read_text())
    assert meta["python_version"].startswith("3.10.")
    log = (info.path / BUILD_LOG).read_text()
    chosen = next(line for line in log.splitlines() if " chosen: " in line)
    assert chosen.startswith(f"[env] Python {meta['python_version']} (")
    assert f"cannot be installed on Python {HOST}." in chosen
    assert "envtest-py310only==1.0 has no wheels with a matching Python" in chosen
    # The same request again: remembered, no resolution, the same 3.10 environment.
    again = ensure_env(recipe_dir=None, requirements=["envtest-py310only==1.0"], profile="bare",
                       home=env_home)
    assert again.cached and again.key == info.key
    plan = plan_env(recipe_dir=None, requirements=["envtest-py310only==1.0"], profile="bare",
                    home=env_home)
    assert plan.ready and str(plan.base_python) == meta["python"]


def test_pins_no_python_of_the_host_can_install_name_the_ones_tried(env_home, find_links):
    with pytest.raises(PythonUnavailable) as err:
        ensure_env(recipe_dir=None, requirements=["envtest-py27only==1.0"], profile="bare",
                   home=env_home)
    detail = err.value.detail
    assert "cannot be installed on any Python of this host" in detail
    assert "envtest-py27only==1.0 has no wheels with a matching Python" in detail
    tried = detail[detail.index("Tried Python "):].split(" (the worker")[0]
    assert HOST in tried
    for python in host_pythons(find_uv()):       # every other one the worker could use was tried
        minor = tuple(int(n) for n in python.version.split(".")[:2])
        if minor >= (3, 10) and not python.version.startswith(HOST + "."):
            assert python.version in tried, (python.version, tried)
    assert "3.9." not in tried                     # too old for the worker: not tried


def test_the_pythons_an_error_names_are_ones_that_run(env_home, tmp_path, monkeypatch, recipes):
    """A python3.X on PATH that does not run (as a pyenv shim of a version not installed) is not
    one of this host's Pythons."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3.19").write_text("#!/bin/sh\necho 'python3.19: command not found' >&2\nexit 127\n")
    (fake / "python3.19").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    host_pythons.cache_clear()
    try:
        with pytest.raises(PythonUnavailable) as err:
            ensure_env(recipe_dir=recipes / "new_python_recipe", requirements=[], profile="bare",
                       home=env_home)
    finally:
        host_pythons.cache_clear()
    detail = err.value.detail
    assert "this host has Python" in detail and f"{sys.version_info[0]}.{sys.version_info[1]}." in detail
    assert "3.19" not in detail


def test_a_recipe_pin_replaces_the_profiles_and_a_compatible_one_keeps_it(env_home, tmp_path):
    recipe = tmp_path / "r"
    recipe.mkdir()
    (recipe / "setup.py").write_text("from setuptools import setup\n"
                                     "setup(name='r', version='1', install_requires=['numpy<1.24', "
                                     "'pandas>=1.0', 'pyyaml==6.0.1'])\n")
    plan = plan_env(recipe_dir=recipe, requirements=[], profile="python", home=env_home)
    assert "numpy<1.24" in plan.requirements and "numpy==1.26.4" not in plan.requirements
    assert "pandas>=1.0" in plan.requirements and "pandas==1.5.3" in plan.requirements
    # the worker's own pins never give way: the clash is the resolver's to report
    assert "pyyaml==6.0.2" in plan.requirements and "pyyaml==6.0.1" in plan.requirements
