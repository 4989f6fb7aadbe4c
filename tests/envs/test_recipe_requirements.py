"""Reading a recipe's requirements without running it: setup.py, setup.cfg, pyproject.toml,
requirements.txt, an unpacked egg, a wheel."""
from __future__ import annotations

import textwrap
import zipfile
from pathlib import Path

import pytest

from runtime.envs import read_requirements, recipe_digest
from runtime.envs.recipe import recipe_source
from runtime.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_setup_py_literals_and_module_level_names(tmp_path):
    write(tmp_path / "setup.py", """
        from setuptools import setup
        BASE = ["numpy>=1.20"]
        REQUIRED = BASE + ["scikit-learn==1.3.2", "six"]
        setup(name="r", version="1", install_requires=REQUIRED, python_requires=">=3.8")
    """)
    found = read_requirements(tmp_path)
    assert found.requirements == ["numpy>=1.20", "scikit-learn==1.3.2", "six"]
    assert found.python_requires == ">=3.8" and not found.dynamic
    assert found.sources == ["setup.py"]


def test_setup_py_computed_requirements_are_flagged_dynamic(tmp_path):
    write(tmp_path / "setup.py", """
        import setuptools
        setuptools.setup(name="r", install_requires=open("deps.txt").read().splitlines())
    """)
    assert read_requirements(tmp_path).dynamic


def test_setup_py_that_lists_nothing(tmp_path):
    write(tmp_path / "setup.py", "from setuptools import setup\nsetup(name='r', version='1')\n")
    found = read_requirements(tmp_path)
    assert found.requirements == [] and found.python_requires is None and not found.dynamic


def test_setup_py_with_a_syntax_error_is_a_config_error(tmp_path):
    write(tmp_path / "setup.py", "setup(name='r',\n")
    with pytest.raises(ConfigError, match="not valid Python"):
        read_requirements(tmp_path)


def test_setup_cfg(tmp_path):
    write(tmp_path / "setup.cfg", """
        [metadata]
        name = r
        [options]
        python_requires = >=3.9
        install_requires =
            pandas<2
            # a comment
            pyarrow>=14; python_version >= "3.8"
    """)
    found = read_requirements(tmp_path)
    assert found.requirements == ["pandas<2", 'pyarrow>=14; python_version >= "3.8"']
    assert found.python_requires == ">=3.9"


def test_pyproject_static_and_file_dynamic(tmp_path):
    write(tmp_path / "pyproject.toml", """
        [project]
        name = "r"
        requires-python = ">=3.10"
        dynamic = ["dependencies"]
        [tool.setuptools.dynamic]
        dependencies = {file = ["reqs/base.txt"]}
    """)
    write(tmp_path / "reqs" / "base.txt", "scipy==1.11.4\n")
    found = read_requirements(tmp_path)
    assert found.requirements == ["scipy==1.11.4"] and found.python_requires == ">=3.10"
    assert not found.dynamic


def test_requirements_txt_follows_includes_and_refuses_options(tmp_path):
    write(tmp_path / "setup.py", "from setuptools import setup\nsetup(name='r', install_requires=['six'])\n")
    write(tmp_path / "requirements.txt", "xgboost==1.7.6  # the model\n-r more.txt\nsix\n")
    write(tmp_path / "more.txt", "lightgbm\\\n==4.1.0\n")
    found = read_requirements(tmp_path)
    assert found.requirements == ["six", "xgboost==1.7.6", "lightgbm==4.1.0"]
    assert found.sources == ["setup.py", "requirements.txt"]
    write(tmp_path / "requirements.txt", "--index-url https://example.invalid/simple\npandas\n")
    with pytest.raises(ConfigError, match="options in a recipe's requirements file"):
        read_requirements(tmp_path)
    write(tmp_path / "requirements.txt", "-r ../outside.txt\n")
    with pytest.raises(ConfigError, match="outside the recipe"):
        read_requirements(tmp_path)


def test_unpacked_egg(tmp_path):
    egg = tmp_path / "recipe-1.0-py3.7.egg"
    write(egg / "EGG-INFO" / "PKG-INFO", "Metadata-Version: 2.1\nName: my-recipe\nVersion: 1.0\n"
                                          "Requires-Python: >=3.6\n")
    write(egg / "EGG-INFO" / "requires.txt", "numpy\n\n[:python_version < \"3.8\"]\nimportlib-metadata\n"
                                             "\n[plots]\nmatplotlib\n")
    write(egg / "myrecipe" / "__init__.py", "")
    found = read_requirements(egg)
    assert found.requirements == ["numpy", 'importlib-metadata; python_version < "3.8"']
    assert found.python_requires == ">=3.6"
    assert recipe_source(egg).kind == "egg"


def test_wheel_file(tmp_path):
    wheel = tmp_path / "my_recipe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("my_recipe-1.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: my-recipe\nVersion: 1.0\nRequires-Python: >=3.8\n"
                    "Requires-Dist: pandas (<2)\nRequires-Dist: pytest ; extra == 'test'\n\nbody\n")
        zf.writestr("my_recipe/__init__.py", "")
    found = read_requirements(wheel)
    assert found.requirements == ["pandas (<2)"] and found.python_requires == ">=3.8"
    assert recipe_source(wheel).kind == "wheel"


def test_a_folder_that_is_no_package_is_refused(tmp_path):
    write(tmp_path / "train.py", "print('hi')\n")
    with pytest.raises(ConfigError, match="not an installable Python package"):
        recipe_source(tmp_path)


def test_digest_is_content_not_place_nor_build_leftovers(tmp_path):
    a = tmp_path / "a"
    write(a / "setup.py", "from setuptools import setup\nsetup(name='r')\n")
    write(a / "r" / "__init__.py", "X = 1\n")
    b = tmp_path / "b"
    write(b / "setup.py", "from setuptools import setup\nsetup(name='r')\n")
    write(b / "r" / "__init__.py", "X = 1\n")
    write(b / "r.egg-info" / "PKG-INFO", "leftover\n")
    write(b / "r" / "__pycache__" / "x.pyc", "junk\n")
    assert recipe_digest(a) == recipe_digest(b)
    write(b / "r" / "__init__.py", "X = 2\n")
    assert recipe_digest(a) != recipe_digest(b)
