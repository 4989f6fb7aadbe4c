"""Helpers of the GPU lease tests (imported by name: `from gpu_helpers import ...`, a unique module
name): a fake nvidia-smi (this host has no GPU), CLI runs of a probe engine that records the
device environment its worker saw."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

from waiting import until

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
    def recorded() -> Optional[dict]:
        for path in probe_dir.glob("*.json"):
            try:
                return json.loads(path.read_text())
            except ValueError:   # being written
                return None
        return None

    return until(recorded, timeout_s=timeout_s, what=f"a worker's record in {probe_dir}")


def running(pid: int) -> bool:
    """Whether `pid` runs: a zombie (killed, not yet reaped) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return not stat[stat.rindex(b")") + 2:].startswith(b"Z")


def run_cli(env, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
