"""Helpers of the R recipe tests (imported by name: `from r_helpers import ...`; a unique module
name, unlike `conftest`): the test recipes in fixtures/ (the platform's R layout), the retail
data, a CLI helper, and the skip naming the install command where this host has no Rscript."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cli_process import run_cli, summary  # noqa: F401 (summary: for the tests)

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
    return run_cli(home, *args, cwd=cwd, timeout_s=RUN_TIMEOUT_S, check=check,
                   env={"PYTHONPATH": str(REPO), **(env or {})})


