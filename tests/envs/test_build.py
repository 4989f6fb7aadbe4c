"""ensure_env: isolation, reuse keyed on the resolution, failures that leave nothing, one build
for concurrent callers, and a Python the host lacks named before anything runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.envs import PROFILES, ensure_env, envs_dir, plan_env, uv_cache_dir
from runtime.envs.layout import FREEZE_FILE, LOCK_FILE, META_FILE
from runtime.errors import ConfigError, EnvBuildError, PythonUnavailable

REPO = Path(__file__).resolve().parents[2]


def in_env(info, code: str) -> str:
    """Run `code` with the environment's interpreter, as the worker would be started (the
    caller's PYTHONPATH and virtualenv do not leak in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(info.python), "-c", code], capture_output=True, text=True,
                          env=env, cwd="/", timeout=120, check=True).stdout.strip()


def leftovers(home: Path) -> list[str]:
    tmp = envs_dir(home) / ".tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def env_names(home: Path) -> set[str]:
    root = envs_dir(home)
    return {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.is_dir() else set()


# --- the pandas 1.x environment -----------------------------------------------------------------

def test_python_profile_env_has_the_image_pins_not_the_hosts(python_env):
    import pandas as host_pandas

    versions = json.loads(in_env(python_env, (
        "import json, pandas, numpy, sklearn, pyarrow, pydantic, yaml; print(json.dumps({"
        "'pandas': pandas.__version__, 'numpy': numpy.__version__, 'sklearn': sklearn.__version__,"
        "'pyarrow': pyarrow.__version__, 'pydantic': pydantic.VERSION}))")))
    pins = dict(r.split("==") for r in PROFILES["python"].requirements)
    assert versions["pandas"] == pins["pandas"] == "1.5.3"
    assert versions["numpy"] == pins["numpy"]
    assert versions["sklearn"] == pins["scikit-learn"]
    assert versions["pyarrow"] == pins["pyarrow"]
    assert versions["pydantic"] == pins["pydantic"]
    assert host_pandas.__version__.split(".")[0] != "1"   # the host really has another pandas


def test_env_is_isolated_from_the_host(python_env):
    out = json.loads(in_env(python_env, (
        "import json, sys, site, importlib.util as u; print(json.dumps({"
        "'prefix': sys.prefix, 'user_site': site.ENABLE_USER_SITE, "
        "'torch': u.find_spec('torch') is not None, 'fastapi': u.find_spec('fastapi') is not None,"
        "'path': sys.path}))")))
    assert out["prefix"] == str(python_env.path)
    assert out["torch"] is False and out["fastapi"] is False   # the host has both
    assert not out["user_site"]
    host_site = [p for p in sys.path if p.endswith("site-packages")]
    assert host_site and not set(host_site) & set(out["path"])


def test_recipe_is_installed_with_its_entry_points_and_runs_pandas1_code(python_env):
    out = in_env(python_env, (
        "import importlib.metadata as md, pandas as pd\n"
        "eps = {ep.name: ep for ep in md.entry_points(group='Training')}\n"
        "mod = eps['training_pipeline'].load()\n"
        "frame = pd.DataFrame({'date': ['2010-02-05', '2010-02-12', None]})\n"
        "print(mod.train({}, frame))"))
    assert out == "{'weeks': [5, 6]}"


def test_worker_and_compat_are_on_the_env_path(python_env):
    out = json.loads(in_env(python_env, (
        "import json, sys, runtime, runtime.worker; "
        "print(json.dumps({'runtime': runtime.__file__, 'path': sys.path}))")))
    assert Path(out["runtime"]).resolve() == (REPO / "runtime" / "__init__.py").resolve()
    assert str(REPO / "runtime" / "compat") in out["path"]
    # only the runtime package comes through, never the folder holding it (its engines, tests...)
    assert str(REPO) not in out["path"]


def test_lock_freeze_and_metadata_stored_beside_the_env(python_env):
    lock = (python_env.path / LOCK_FILE).read_text().splitlines()
    assert "pandas==1.5.3" in lock and "numpy==1.26.4" in lock
    assert any(line.startswith("envtest-pandas1 @ file://") for line in lock)
    freeze = (python_env.path / FREEZE_FILE).read_text()
    assert "pandas==1.5.3" in freeze and "envtest-pandas1" in freeze
    meta = json.loads((python_env.path / META_FILE).read_text())
    assert meta["key"] == python_env.key and meta["profile"] == "python"
    assert meta["recipe_name"] == "envtest-pandas1" and meta["tool"] == "uv"


def test_packages_are_hard_linked_from_the_uv_cache_under_the_home(python_env, env_home):
    cache = uv_cache_dir(env_home)
    assert cache.is_dir()
    init = next(python_env.path.glob("lib/python*/site-packages/pandas/__init__.py"))
    assert init.stat().st_nlink >= 2          # the same file as in the cache
    assert init.stat().st_dev == cache.stat().st_dev


# --- reuse ----------------------------------------------------------------------------------------

def test_second_call_reuses_the_env_without_building(python_env, env_home, recipes):
    built = (python_env.path / META_FILE).stat().st_mtime_ns
    again = ensure_env(recipe_dir=recipes / "pandas1_recipe", requirements=[], profile="python",
                       home=env_home)
    assert again.cached and again.key == python_env.key and again.python == python_env.python
    assert (python_env.path / META_FILE).stat().st_mtime_ns == built


def test_resolving_again_lands_on_the_same_env(python_env, env_home, recipes):
    again = ensure_env(recipe_dir=recipes / "pandas1_recipe", requirements=[], profile="python",
                       home=env_home, refresh=True)
    assert again.cached and again.key == python_env.key


def test_key_is_the_resolution_not_the_text(bare_env, env_home):
    # other spellings of the same set: a different request, the same resolved pins, one env
    respelled = ensure_env(recipe_dir=None, requirements=["PyYAML==6.0.2", "pydantic>=2.10,<2.10.7"],
                           profile="bare", home=env_home)
    assert respelled.key == bare_env.key and respelled.cached


def test_same_recipe_elsewhere_shares_the_env(python_env, env_home, recipes, tmp_path):
    import shutil
    moved = shutil.copytree(recipes / "pandas1_recipe", tmp_path / "elsewhere")
    again = ensure_env(recipe_dir=moved, requirements=[], profile="python", home=env_home)
    assert again.key == python_env.key and again.cached


def test_plan_env_says_ready_without_resolving(python_env, env_home, recipes):
    plan = plan_env(recipe_dir=recipes / "pandas1_recipe", requirements=[], profile="python",
                    home=env_home)
    assert plan.ready and plan.key == python_env.key and plan.python == python_env.python
    assert python_env.key in plan.describe()
    fresh = plan_env(recipe_dir=None, requirements=["six==1.16.0"], profile="bare", home=env_home)
    assert not fresh.ready and fresh.key is None and "new environment" in fresh.describe()


# --- failures leave nothing ----------------------------------------------------------------------

def test_undeclared_import_fails_the_build_and_leaves_nothing(env_home, recipes, bare_env):
    before = env_names(env_home)
    with pytest.raises(EnvBuildError) as err:
        ensure_env(recipe_dir=recipes / "undeclared_recipe", requirements=[], profile="bare",
                   home=env_home)
    assert err.value.step == "import check"
    assert "No module named 'pandas'" in err.value.detail
    assert "install_requires" in err.value.detail
    assert "Training:training_pipeline" in err.value.build_log
    assert env_names(env_home) == before and leftovers(env_home) == []


def test_unsatisfiable_pins_surface_uvs_message(env_home, bare_env):
    before = env_names(env_home)
    with pytest.raises(EnvBuildError) as err:
        ensure_env(recipe_dir=None, requirements=["pydantic<2"], profile="bare", home=env_home)
    assert err.value.step == "resolve"
    assert "unsatisfiable" in err.value.build_log or "No solution found" in err.value.build_log
    assert "pydantic" in err.value.build_log
    assert env_names(env_home) == before and leftovers(env_home) == []


def test_bad_requirement_text_is_a_config_error_before_anything(env_home):
    with pytest.raises(ConfigError, match="Invalid requirement 'pandas=='"):
        ensure_env(recipe_dir=None, requirements=["pandas=="], profile="bare", home=env_home)
    with pytest.raises(ConfigError, match="Unknown environment profile 'gpu'"):
        ensure_env(recipe_dir=None, requirements=[], profile="gpu", home=env_home)


def test_python_requires_the_host_lacks_fails_naming_it(env_home, recipes):
    before = env_names(env_home)
    with pytest.raises(PythonUnavailable) as err:
        ensure_env(recipe_dir=recipes / "new_python_recipe", requirements=[], profile="bare",
                   home=env_home)
    assert err.value.needed == ">=3.99"
    assert "needs Python >=3.99" in err.value.detail and "this host has Python" in err.value.detail
    assert env_names(env_home) == before and leftovers(env_home) == []


def test_pins_that_need_a_python_the_host_lacks_fail_naming_it(env_home, recipes, bare_env):
    pkg = (recipes / "needs_py399").as_uri()
    with pytest.raises(PythonUnavailable) as err:
        ensure_env(recipe_dir=None, requirements=[f"envtest-needs-py399 @ {pkg}"], profile="bare",
                   home=env_home)
    assert err.value.needed == ">=3.99"
    assert "need Python >=3.99" in err.value.detail
    assert "does not satisfy Python>=3.99" in err.value.build_log   # uv's own words, kept


# --- concurrency -----------------------------------------------------------------------------------

_RACER = r"""
import json, sys, time
from pathlib import Path
from runtime.envs import ensure_env
home, go = Path(sys.argv[1]), Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
info = ensure_env(recipe_dir=None, requirements=["six==1.16.0"], profile="bare", home=home)
print(json.dumps({"key": info.key, "cached": info.cached}))
"""


def test_concurrent_callers_build_a_new_env_once(env_home, bare_env, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(env_home), str(go)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    time.sleep(0.5)   # both are polling for the start signal
    go.touch()
    results = []
    for proc in racers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["key"] == results[1]["key"]
    assert sorted(r["cached"] for r in results) == [False, True]   # one built, one reused
    built = envs_dir(env_home) / results[0]["key"]
    assert (built / META_FILE).is_file() and leftovers(env_home) == []
    log = (built / "build.log").read_text()
    assert log.count("building environment") == 1


# --- the venv + pip fallback ------------------------------------------------------------------------

def test_pip_fallback_builds_the_same_env(tmp_path, bare_env, monkeypatch):
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)   # index settings are part of the key
    home = tmp_path / "home"
    info = ensure_env(recipe_dir=None, requirements=[], profile="bare", home=home, tool="pip")
    assert info.tool == "pip" and not info.cached
    assert info.key == bare_env.key      # same interpreter, same pins: the same key
    out = in_env(info, "import pydantic, yaml, runtime.worker; print(pydantic.VERSION)")
    assert out == "2.10.6"
    # built in a staging folder and renamed: the scripts were pointed at the final place
    activate = (info.path / "bin" / "activate").read_text()
    assert str(info.path) in activate and ".tmp" not in activate
    assert leftovers(home) == []


# --- the platform's own artifact format: an egg ----------------------------------------------------

def test_unpacked_egg_recipe_is_installed_with_its_entry_points(env_home, tmp_path):
    egg = tmp_path / "egg_recipe-1.0-py3.11.egg"
    (egg / "EGG-INFO").mkdir(parents=True)
    (egg / "EGG-INFO" / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: egg-recipe\nVersion: 1.0\n")
    (egg / "EGG-INFO" / "entry_points.txt").write_text("[Training]\ntraining_pipeline = eggrec.pipeline\n")
    (egg / "EGG-INFO" / "requires.txt").write_text("six==1.16.0\n")
    (egg / "eggrec").mkdir()
    (egg / "eggrec" / "__init__.py").write_text("")
    (egg / "eggrec" / "pipeline.py").write_text("import six\n\ndef train(config, data):\n"
                                                "    return 'py3' if six.PY3 else 'py2'\n")
    info = ensure_env(recipe_dir=egg, requirements=[], profile="bare", home=env_home)
    out = in_env(info, "import importlib.metadata as md\n"
                       "(ep,) = md.entry_points(group='Training')\n"
                       "print(ep.name, ep.load().train({}, None), md.version('egg-recipe'))")
    assert out == "training_pipeline py3 1.0"
    assert "six==1.16.0" in (info.path / "requirements.lock").read_text()
