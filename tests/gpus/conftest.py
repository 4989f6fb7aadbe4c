"""GPU lease tests: a fake nvidia-smi on PATH (this host has no GPU), CLI runs of a probe engine
that records the device environment its worker saw."""
from __future__ import annotations

import os

import pytest

from gpu_helpers import FAKE_SMI, HERE, REPO


@pytest.fixture
def gpu_env(tmp_path):
    """Environment for `run` subprocesses: a home, the fake nvidia-smi, the probe engine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES",
                                                            "MLRUNTIME_MAX_CONCURRENT_RUNS")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", MLRUNTIME_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]), FAKE_GPUS="1")
    return env
