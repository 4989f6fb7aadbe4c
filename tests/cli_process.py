"""A `run ...` command as the tests start it (imported by name from every folder: tests/ is on
pytest's pythonpath): a real process of this interpreter with the runtime's settings cleared but
the home given and the suite's one uv cache kept, failing the test with its output when it exits
non-zero; and the JSON summary a `--json` run prints last."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest


def run_cli(home: Path, *args: str, cwd: Path, timeout_s: float, check: bool = True,
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    run_env["MLRUNTIME_HOME"] = str(home)
    if os.environ.get("MLRUNTIME_UV_CACHE_DIR"):          # the suite's one uv cache (conftest)
        run_env["MLRUNTIME_UV_CACHE_DIR"] = os.environ["MLRUNTIME_UV_CACHE_DIR"]
    run_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args], cwd=cwd, env=run_env,
                          capture_output=True, text=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        pytest.fail(f"run {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])
