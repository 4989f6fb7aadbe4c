"""Helpers of the GPU lease tests (imported by name: `from gpu_helpers import ...`, a unique module
name): a fake nvidia-smi (this host has no GPU), CLI runs of a probe engine that records the
device environment its worker saw."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# nvidia-smi answers the dispatcher's query (4 fields) and `run gpus`'s (5 fields, memory used).
FAKE_SMI = """#!/bin/sh
case "$*" in
  *memory.used*)
    echo "0, GPU-aaaa-0000, NVIDIA H100 80GB HBM3, 1234, 81559"
    [ "$FAKE_GPUS" = 2 ] && echo "1, GPU-bbbb-1111, NVIDIA A10, 0, 23028" ;;
  *)
    echo "0, GPU-aaaa-0000, NVIDIA H100 80GB HBM3, 81559"
    [ "$FAKE_GPUS" = 2 ] && echo "1, GPU-bbbb-1111, NVIDIA A10, 23028" ;;
esac
exit 0
"""


def probe_instance(tmp_path: Path, *, gpus: str | None = None, name: str = "probe") -> Path:
    data = tmp_path / "tiny.csv"
    data.write_text("a,b\n1,2\n")
    params = [{"key": "trainingDataSetId", "value": str(data)}]
    if gpus is not None:
        params.append({"key": "gpus", "value": gpus})
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "engineId": "gpu_probe:GpuProbe",
                                "tasks": [{"name": "train", "parameters": params}]}))
    return path


def start_run(env, target: Path, probe_dir: Path, *args: str) -> subprocess.Popen:
    probe_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "train", str(target),
                             "-p", f"probe_dir={probe_dir}", "--quiet", "--json", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def probe(probe_dir: Path, timeout_s: float = 60.0) -> dict:
    """What the run's worker recorded (waits for it to start)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        files = list(probe_dir.glob("*.json"))
        if files:
            try:
                return json.loads(files[0].read_text())
            except ValueError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no worker started in {probe_dir} within {timeout_s} s")


def run_cli(env, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
