"""A Ray job whose Python lacks the installed runtime: the job's entrypoint says which Python lacks
`mlinstance-runtime` and how to fix it, instead of "installed engines: none".

No cluster needed: the entrypoint (`python -m runtime.backends.ray_job STAGE`) runs as Ray runs it —
the checkout's source importable from the working directory, the staged spec package on the
path — under a bare `python -m venv` that sees this environment's packages (pydantic, ...) but not
the `mlinstance-runtime` distribution nor its editable install.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.backends import WorkerSpec
from ray_head import python_without_runtime
from runtime.backends.ray import DISTRIBUTION, _stage, restore_bundle, runtime_missing, split_bundle

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return python_without_runtime(tmp_path_factory.mktemp("bare"))


@pytest.fixture(scope="module")
def working_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's source as a job's working_dir holds it, without the build's
    `*.egg-info` (which would register the entry points from the working directory)."""
    folder = tmp_path_factory.mktemp("working_dir")
    for package in ("runtime", "engines"):
        (folder / package).symlink_to(REPO / package)
    return folder


def _run_job(python: Path, cwd: Path, tmp_path: Path, engine: str) -> subprocess.CompletedProcess:
    spec = WorkerSpec(run_id="r-no-runtime", engine=engine, mode="train",
                      values={"trainingDataSetId": str(tmp_path / "train.csv")},
                      run_dir=tmp_path / "run")
    stage = _stage(spec, "return", 64)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLRUNTIME_", "PYTHON"))}
    env["PYTHONPATH"] = str(stage.parent)   # what runtime_env py_modules does for the package
    return subprocess.run([str(python), "-m", "runtime.backends.ray_job", stage.name], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_bare_python_really_lacks_the_distribution(bare_python: Path,
                                                      working_dir: Path) -> None:
    code = ("from importlib import metadata\n"
            "import pydantic, runtime\n"
            f"try:\n    metadata.distribution({DISTRIBUTION!r}); print('installed')\n"
            "except metadata.PackageNotFoundError:\n    print('missing')\n")
    out = subprocess.run([str(bare_python), "-c", code], cwd=working_dir, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "missing", out.stderr


def test_job_names_the_python_and_the_fixes(bare_python: Path, working_dir: Path,
                                            tmp_path: Path) -> None:
    proc = _run_job(bare_python, working_dir, tmp_path, "retail-sales")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    log, bundle = split_bundle(proc.stdout)
    assert "installed engines: none" not in proc.stdout + proc.stderr
    assert f"({bare_python}) has no {DISTRIBUTION} installed" in log
    assert "--pip" in log and "Docker image" in log and "pip install" in log
    # The reason travels back with the artifacts, so the run's FAILED status says it too.
    assert bundle is not None
    result = restore_bundle(bundle, tmp_path / "local-run")
    assert result["state"] == "FAILED"
    assert result["error"]["type"] == "RuntimeNotInstalled"
    assert str(bare_python) in result["error"]["message"]


def test_an_import_path_engine_needs_no_distribution() -> None:
    assert runtime_missing("engines.noop:NoopEngine") is None
    assert runtime_missing("retail-sales") is None   # this interpreter has it installed
