"""The extension points are tables: every recipe kind of runtime.recipe_kinds has its adapter and
environment builder importable (loaded only when asked), and every installed backend declares
what it is, so the planner, the run path and the CLI name none."""
from __future__ import annotations

import argparse
import inspect
import subprocess
import sys

import pytest

from runtime.backends import (Backend, backend_class, backend_options_from, engine_kinds,
                              installed_backends, submit_backend)
from runtime.recipe_kinds import KINDS, RecipeInfo, kind_named, runnable_kinds, runs_text


def test_importing_the_table_imports_no_adapter():
    """The adapters and their libraries (pandas, pyspark) load only when a recipe of the kind runs."""
    code = ("import sys, runtime.recipe_kinds, runtime.artifacts; "
            "print(sorted(m for m in sys.modules if m.startswith(('runtime.recipes.', 'pandas', "
            "'pyspark', 'ray', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("kind", runnable_kinds(), ids=lambda k: k.name)
def test_every_runnable_kind_has_an_importable_adapter_and_environment(kind):
    assert kind.adapter and kind.environment and kind.runs and kind.engine_types
    module, _, name = kind.adapter.partition(":")
    adapter = getattr(__import__(module, fromlist=[name]), name)
    assert callable(adapter) and list(inspect.signature(adapter).parameters)[:2] == ["recipe_dir", "info"]
    environment = kind.environment_builder()
    assert {"home", "extra_pip", "log"} <= set(inspect.signature(environment).parameters)
    assert kind.engine_kind in engine_kinds()          # some installed backend runs its engines
    assert kind_named(kind.name) is kind


def test_kinds_are_named_once_and_refused_ones_say_what_runs():
    names = [k.name for k in KINDS]
    assert len(names) == len(set(names))
    assert "Scala" in {k.title for k in KINDS if not k.runnable}   # refused, by name
    for kind in runnable_kinds():
        assert kind.runs in runs_text()
    with pytest.raises(ValueError, match="unknown recipe kind"):
        RecipeInfo(kind="scala", name="x")


@pytest.mark.parametrize("name", sorted(installed_backends()))
def test_every_installed_backend_declares_itself(name):
    cls = backend_class(name)
    assert issubclass(cls, Backend)
    assert isinstance(cls.on_cluster, bool) and isinstance(cls.local_gpus, bool)
    assert cls.engine_kinds and all(isinstance(k, str) for k in cls.engine_kinds)
    accepted = set(inspect.signature(cls.__init__).parameters)
    assert set(cls.cli_options.values()) <= accepted   # each CLI option is a constructor keyword
    if cls.takes_warm_pools:
        assert "warm" in accepted


def test_cli_options_and_submit_come_from_the_declarations():
    args = argparse.Namespace(spark_master="local[2]", backend=None)
    assert backend_options_from(args) == {"pyspark": {"master": "local[2]"}}
    assert backend_options_from(argparse.Namespace(spark_master=None)) == {}
    assert backend_class(submit_backend()).on_cluster
