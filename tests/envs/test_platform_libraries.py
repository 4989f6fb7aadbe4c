"""The platform's own libraries (model-authoring-sdk-pyspark, platform_sdk, ml.runtime) are the
runtime's to provide: a recipe naming one never gets it installed, wherever it names it, and our
compat packages win over anything installed under their names.

A local folder serves a stand-in model-authoring-sdk-pyspark (a top-level `sdk` lacking
sdk.evaluation.evaluator, as PyPI's does) and an ordinary package, through UV_FIND_LINKS /
PIP_FIND_LINKS: the ordinary one is installed (the folder really was an index), the stand-in is not."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from local_wheels import helper_wheel, platform_sdk_stand_in
from runtime.envs import ensure_env, plan_env
from runtime.envs.build import find_uv
from runtime.envs.layout import BUILD_LOG, FREEZE_FILE, LOCK_FILE, compat_dir
from runtime.envs.profiles import PLATFORM_LIBRARIES, provided_by_runtime

SUBSTITUTED = ("[env] model-authoring-sdk-pyspark: provided by the runtime (runtime/compat/sdk), "
               "not installed")

# A recipe as the platform's PySpark sample is packaged: setup.py computes install_requires from
# requirements.txt (so only a build can read it), and the recipe imports our sdk's evaluator.
SETUP_PY = """
    from setuptools import setup

    with open("requirements.txt") as fh:
        required = fh.read().splitlines()

    setup(name="envtest-platform-libs", version="1.0", packages=["platformlibs"],
          install_requires=required,
          entry_points={"Training": ["training_pipeline=platformlibs.pipeline"]})
"""
PIPELINE_PY = """
    import envtest_localhelper
    import sdk
    from sdk.evaluation.evaluator import MLEvaluator   # ours has it; the stand-in does not


    def train(config, data):
        return {"helper": envtest_localhelper.VALUE, "sdk": sdk.__file__}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def in_env(python: Path, code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env,
                          cwd="/", timeout=120, check=True).stdout.strip()


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    platform_sdk_stand_in(folder)
    helper_wheel(folder)
    return folder


@pytest.fixture(scope="module")
def platform_recipe(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("platform-recipe") / "recipe"
    write(root / "setup.py", SETUP_PY)
    write(root / "requirements.txt", "model-authoring-sdk-pyspark==0.9.0\nenvtest-localhelper==1.0\n")
    write(root / "platformlibs" / "__init__.py", "")
    write(root / "platformlibs" / "pipeline.py", PIPELINE_PY)
    return root


@pytest.fixture(scope="module")
def platform_env(env_home, platform_recipe, wheelhouse):
    """Built with uv from PyPI plus the local folder; the caller names the SDK again (--pip)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UV_FIND_LINKS", str(wheelhouse))
        return ensure_env(recipe_dir=platform_recipe, requirements=["model_authoring_sdk"],
                          profile="bare", home=env_home)


def test_the_list_names_each_platform_library_by_any_spelling():
    assert provided_by_runtime("model-authoring-sdk-pyspark") == "model-authoring-sdk-pyspark"
    assert provided_by_runtime("Model_Authoring.SDK-PySpark==0.3.0") == "model-authoring-sdk-pyspark"
    assert provided_by_runtime("model_authoring_sdk") == "model-authoring-sdk"
    assert provided_by_runtime("platform_sdk>=1.0; python_version >= '3'") == "platform-sdk"
    assert provided_by_runtime("ml.runtime") == "ml-runtime"
    assert provided_by_runtime("numpy==1.26.4") is None and provided_by_runtime("sdk") is None
    for packages in PLATFORM_LIBRARIES.values():   # each stands for a package compat/ really has
        assert all((compat_dir() / p / "__init__.py").is_file() for p in packages)


def test_the_sdk_is_not_installed_and_the_recipe_imports_ours(platform_env):
    log = (platform_env.path / BUILD_LOG).read_text()
    assert SUBSTITUTED in log
    assert ("[env] model-authoring-sdk: provided by the runtime (runtime/compat/sdk), not installed"
            in log)
    lock = (platform_env.path / LOCK_FILE).read_text()
    freeze = (platform_env.path / FREEZE_FILE).read_text()
    assert "envtest-localhelper==1.0" in lock      # the local folder was used as an index ...
    assert "model-authoring-sdk" not in lock and "model-authoring-sdk" not in freeze   # ... not for this
    out = json.loads(in_env(platform_env.python, (
        "import json, importlib.metadata as md\n"
        "(ep,) = md.entry_points(group='Training')\n"
        "print(json.dumps(ep.load().train({}, None)))")))
    assert out["helper"] == 42
    assert Path(out["sdk"]).resolve() == (compat_dir() / "sdk" / "__init__.py").resolve()


def test_compat_wins_over_an_installed_sdk(platform_env, wheelhouse):
    """Even installed by hand into the environment, the stand-in `sdk` does not shadow ours."""
    subprocess.run([find_uv(), "pip", "install", "--python", str(platform_env.python), "--no-deps",
                    "--quiet", str(next(wheelhouse.glob("model_authoring_sdk_pyspark-*.whl")))],
                   check=True, capture_output=True, timeout=120)
    out = json.loads(in_env(platform_env.python, (
        "import json, sys, importlib.metadata as md, sdk, sdk.evaluation.evaluator\n"
        "print(json.dumps({'sdk': sdk.__file__, 'stand_in': hasattr(sdk, 'STAND_IN'),\n"
        "  'installed': md.version('model-authoring-sdk-pyspark'), 'path': sys.path}))")))
    assert out["installed"] == "0.9.0"           # it is there ...
    assert not out["stand_in"]                   # ... and ours is the one imported
    assert Path(out["sdk"]).resolve() == (compat_dir() / "sdk" / "__init__.py").resolve()
    site = next(i for i, p in enumerate(out["path"]) if p.endswith("site-packages"))
    assert out["path"].index(str(compat_dir())) < site   # before site-packages, after the stdlib
    assert out["path"].index(str(compat_dir())) > next(
        i for i, p in enumerate(out["path"]) if p.endswith(("lib/python3.11", "lib/python3.10")))


@pytest.mark.parametrize("layout", ["setup.py", "setup.cfg", "pyproject.toml", "requirements.txt"])
def test_every_way_of_naming_it_is_substituted(tmp_path, layout, env_home):
    """Read statically from each file a recipe may declare requirements in (nothing resolved)."""
    recipe = tmp_path / "r"
    if layout == "setup.py":
        write(recipe / "setup.py", """
            from setuptools import setup
            setup(name="r", version="1", install_requires=["six==1.16.0", "platform_sdk"])
        """)
    elif layout == "setup.cfg":
        write(recipe / "setup.cfg", """
            [metadata]
            name = r
            [options]
            install_requires =
                six==1.16.0
                platform-sdk>=1
        """)
    elif layout == "pyproject.toml":
        write(recipe / "pyproject.toml", """
            [project]
            name = "r"
            version = "1"
            dependencies = ["six==1.16.0", "ml.runtime"]
        """)
    else:
        write(recipe / "setup.py", "from setuptools import setup\nsetup(name='r', version='1')\n")
        write(recipe / "requirements.txt", "six==1.16.0\nmodel-authoring-sdk-pyspark\n")
    plan = plan_env(recipe_dir=recipe, requirements=[], profile="bare", home=env_home)
    assert "six==1.16.0" in plan.requirements
    assert not [r for r in plan.requirements if provided_by_runtime(r)], plan.requirements


def test_pip_fallback_takes_out_what_the_recipes_metadata_brought(tmp_path, platform_recipe,
                                                                  wheelhouse):
    """venv + pip cannot exclude a package from a resolution: what the recipe's computed
    install_requires brought in is uninstalled, and ours is imported."""
    home = tmp_path / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIP_FIND_LINKS", " ".join(filter(None, [str(wheelhouse),
                                                              os.environ.get("PIP_FIND_LINKS")])))
        info = ensure_env(recipe_dir=platform_recipe, requirements=[], profile="bare", home=home,
                          tool="pip")
    log = (info.path / BUILD_LOG).read_text()
    assert SUBSTITUTED in log
    freeze = (info.path / FREEZE_FILE).read_text()
    assert "envtest-localhelper==1.0" in freeze and "model-authoring-sdk" not in freeze
    out = in_env(info.python, "import sdk.evaluation.evaluator as e; print(e.__file__)")
    assert Path(out).is_relative_to(compat_dir())
