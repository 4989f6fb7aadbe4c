"""`--engine DIR` as a recipe is edited: the same content reuses its Engine, edited content of the
same recipe is the next artifactVersion of that Engine (with its MLInstance and Experiment), and a
recipe whose environment cannot be built registers nothing, its build's lines shown as they come."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from recipe_helpers import FIXTURES, REPO, RETAIL


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_") or k == "MLRUNTIME_UV_CACHE_DIR"}
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _engines(home: Path) -> list[dict]:
    proc = cli(home, "engines", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(cli(home, "engines", "get", row["id"], "--json").stdout)
            for row in json.loads(proc.stdout)["children"]]


def _counts(home: Path) -> tuple[int, ...]:
    from runtime.home import resolve_home
    from runtime.listing import ListQuery
    from runtime.schemas import KINDS
    from runtime.registry import Registry
    from runtime.store import Scope

    registry = Registry.open(resolve_home(home))
    try:
        return tuple(registry.store.list(KINDS[kind], Scope("local", "prod"), ListQuery())[1]
                     for kind in ("engine", "mlInstance", "experiment"))
    finally:
        registry.close()


def _train(home: Path, recipe: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli(home, "train", str(recipe / "old.config.json"), "--engine", str(recipe), "--json",
               "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}", *extra)


def test_an_edited_recipe_is_the_next_version_of_its_engine(tmp_path):
    home, recipe = tmp_path / "home", tmp_path / "old_classes"
    shutil.copytree(FIXTURES / "old_classes", recipe)
    first = _train(home, recipe, "--env-manager", "local")
    assert first.returncode == 0, first.stderr
    again = _train(home, recipe, "--env-manager", "local")
    assert again.returncode == 0, again.stderr
    [engine] = _engines(home)
    first_id, image = engine["id"], engine["artifacts"]["default"]["image"]
    assert image["artifactVersion"] == 1

    jobs = recipe / "oldcls" / "jobs.py"
    jobs.write_text(jobs.read_text() + "\n# tuned\n")
    edited = _train(home, recipe, "--env-manager", "local")
    assert edited.returncode == 0, edited.stderr
    [engine] = _engines(home)
    assert engine["id"] == first_id
    assert engine["artifacts"]["default"]["image"]["artifactVersion"] == 2
    assert engine["artifacts"]["default"]["image"]["sha256"] != image["sha256"]
    assert _counts(home) == (1, 1, 1)          # one Engine, MLInstance and Experiment throughout
    run = json.loads(cli(home, "runs", "show", json.loads(edited.stdout)["runId"], "--json").stdout)
    assert run["run"]["runtime"]["artifact"]["version"] == 2      # each run records the version it ran

    listing = cli(home, "engines", "list")
    header, row = listing.stdout.splitlines()[:2]
    assert "VERSION" in header and row.split()[header.split().index("VERSION")] == "2"


def test_a_recipe_whose_environment_fails_to_build_registers_nothing(tmp_path):
    home, recipe = tmp_path / "home", tmp_path / "old_classes"
    shutil.copytree(FIXTURES / "old_classes", recipe)
    registered = _train(home, recipe, "--env-manager", "local")
    assert registered.returncode == 0, registered.stderr
    before = _engines(home)

    setup = recipe / "setup.py"
    setup.write_text(setup.read_text().replace(
        'packages=["oldcls"],', 'packages=["oldcls"], install_requires=["mlruntime-no-such-package==0.0.1"],'))
    failed = _train(home, recipe)                                   # uv builds its environment
    assert failed.returncode != 0
    assert "[env]" in failed.stderr                                 # the build's lines, as they came
    assert "mlruntime-no-such-package" in failed.stderr
    assert _engines(home) == before and _counts(home) == (1, 1, 1)  # nothing new, nothing changed


def test_a_sweep_runs_a_recipe_on_disk(tmp_path):
    home, recipe = tmp_path / "home", tmp_path / "old_classes"
    shutil.copytree(FIXTURES / "old_classes", recipe)
    proc = cli(home, "sweep", "train", str(recipe / "old.config.json"), "--engine", str(recipe),
               "--env-manager", "local", "-p", "factor=1,3",
               "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    assert [(r["params"]["factor"], r["state"]) for r in rows] == [("1", "DONE"), ("3", "DONE")]
    [engine] = _engines(home)
    for row in rows:        # each trial ran the recipe, with the sweep's environment choice
        run = json.loads(cli(home, "runs", "show", row["runId"], "--json").stdout)["run"]
        assert run["runtime"]["artifact"]["sha256"] == engine["artifacts"]["default"]["image"]["sha256"]
        assert run["runtime"]["artifact"]["envManager"] == "local"


def test_an_environment_build_streams_its_lines_to_the_console(tmp_path):
    """A run of a registered recipe Engine builds its environment inside the run: the build's
    lines (uv's own among them, with their times) reach the console as well as the run's log."""
    home = tmp_path / "home"
    (tmp_path / "engine.json").write_text(json.dumps({"name": "old-classes"}))
    created = cli(home, "engines", "create", str(tmp_path / "engine.json"), "--artifact",
                  str(FIXTURES / "old_classes"), "--json")
    assert created.returncode == 0, created.stderr
    (tmp_path / "instance.json").write_text(json.dumps({
        "name": "old", "engineId": json.loads(created.stdout)["id"],
        "tasks": json.loads((FIXTURES / "old_classes" / "old.config.json").read_text())}))
    proc = cli(home, "train", str(tmp_path / "instance.json"), "--env-manager", "uv",
               "-p", f"trainingDataSetId={RETAIL / 'retail-training.csv'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    resolving = next(i for i, line in enumerate(lines) if line.startswith("[env] resolving"))
    ready = next(i for i, line in enumerate(lines) if "[env] environment" in line and " ready: " in line)
    assert resolving < ready and " MB on disk, built in " in lines[ready]
    assert any(line.startswith("[env]   Resolved ") for line in lines[resolving:ready])   # uv's own
    log = next(home.glob("runs/*/worker.log")).read_text()
    assert lines[ready] in log
