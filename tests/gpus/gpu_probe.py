"""A test engine for GPU leases: records what device environment its worker saw, holds its
(pretend) GPU for `hold_ms`, and may leave a child in its process group holding it after the
worker itself exits or is killed (`child_ms`), the way a DataLoader worker or a stray subprocess
keeps GPU memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from runtime.engine import TRAIN, Engine, EngineParams, TaskContext


class ProbeParams(EngineParams):
    hold_ms: int = Field(0, ge=0)
    child_ms: int = Field(0, ge=0)
    probe_dir: str = ""
    trainingDataSetId: Optional[str] = None


class GpuProbe(Engine):
    name = "gpu-probe"
    kind = "python"
    description = "Records CUDA_VISIBLE_DEVICES and holds it a while (tests)"
    params = {TRAIN: ProbeParams}

    def train(self, ctx: TaskContext, features: Any) -> dict[str, Any]:
        p = ctx.params
        seen = {"pid": os.getpid(),
                "pgid": os.getpgid(0),
                "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER"),
                "device": str(ctx.device), "start": time.time()}
        if p.child_ms:   # same process group: it holds the "GPU" after we are gone
            child = subprocess.Popen([sys.executable, "-c",
                                      f"import time; time.sleep({p.child_ms / 1000.0})"])
            seen["child"] = child.pid
        out = Path(p.probe_dir) / f"{os.getpid()}.json"
        out.write_text(json.dumps(seen))
        time.sleep(p.hold_ms / 1000.0)
        seen["end"] = time.time()
        out.write_text(json.dumps(seen))
        return seen

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "model.json").write_text(json.dumps(model))

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        return json.loads((Path(directory) / "model.json").read_text())
