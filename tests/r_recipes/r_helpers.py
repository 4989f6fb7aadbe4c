"""Helpers of the R recipe tests (imported by name: `from r_helpers import ...`; a unique module
name, unlike `conftest`): the test recipes in fixtures/ (the platform's R layout), the retail
data, a CLI helper, and the skip naming the install command where this host has no Rscript."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
REPO = HERE.parents[1]
RETAIL = REPO.parent / "shared" / "data" / "retail"
RUN_TIMEOUT_S = 300


def needs_r():
    from runtime.recipes.r.host import APT_COMMAND

    return pytest.mark.skipif(shutil.which("Rscript") is None,
                              reason=f"R recipes need R; install it with: {APT_COMMAND}")


def cli(home: Path, cwd: Path, *args: str, env: dict | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    run_env.update(MLRUNTIME_HOME=str(home), PYTHONPATH=str(REPO), **(env or {}))
    if os.environ.get("MLRUNTIME_UV_CACHE_DIR"):          # the suite's one uv cache
        run_env["MLRUNTIME_UV_CACHE_DIR"] = os.environ["MLRUNTIME_UV_CACHE_DIR"]
    proc = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args], cwd=cwd, env=run_env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if check and proc.returncode != 0:
        pytest.fail(f"run {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


