"""Engines that fail on purpose, loaded by the worker subprocess as `failing_engines:<Class>`.

The tests put this folder on the worker's PYTHONPATH; each engine fails in `train` in one way.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime.engine import Engine


class _Base(Engine):
    kind = "python"
    params = {}

    def save_model(self, ctx, model, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)

    def load_model(self, ctx, directory):
        return None

    def score(self, ctx, model, data):
        return data


class RaisingEngine(_Base):
    name = "raising"

    def train(self, ctx, features):
        print("about to fail: checking columns")
        raise ValueError("column 'weeklySales' is missing")


class ExitingEngine(_Base):
    name = "exiting"

    def train(self, ctx, features):
        sys.exit(3)


class OomKilledEngine(_Base):
    """What the kernel's OOM killer does to a process: SIGKILL, no chance to clean up."""

    name = "oom-killed"

    def train(self, ctx, features):
        os.kill(os.getpid(), signal.SIGKILL)


class SegfaultEngine(_Base):
    name = "segfault"

    def train(self, ctx, features):
        ctypes.string_at(0)


class SleepingEngine(_Base):
    """Starts a child that ignores SIGTERM (so cancel must escalate), writes its pid, then sleeps."""

    name = "sleeping"

    def train(self, ctx, features):
        # The child writes its pid once it ignores SIGTERM: a cancel that the test sends after
        # seeing the file always needs the SIGKILL, however slowly the child's Python started.
        pid_file = ctx.artifact_dir / "child.pid"
        subprocess.Popen([sys.executable, "-c",
                          "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid())); "
                          "os.replace(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(120)", str(pid_file)])
        print("child started", flush=True)
        time.sleep(120)


class ProbeEngine(_Base):
    """Reports what the worker set up, as metrics: threads, device, whether torch got imported."""

    name = "probe"

    def train(self, ctx, features):
        ctx.log_metric("torch_imported", float("torch" in sys.modules))
        ctx.log_metric("threads", float(ctx.threads))
        ctx.log_metric("omp_threads", float(os.environ.get("OMP_NUM_THREADS", "0")))
        ctx.log_metric("cuda_hidden", float(os.environ.get("CUDA_VISIBLE_DEVICES") == ""))
        ctx.log_metric("own_session", float(os.getsid(0) == os.getpid()))
        progress = ctx.progress(4, "probe steps")
        for _ in range(4):
            progress.update(1)
        progress.close()
        return None


class CudaProbeEngine(_Base):
    """Touches the device it was given: how many GPUs torch sees, and one computation on ctx.device."""

    name = "cuda-probe"

    def train(self, ctx, features):
        import torch

        ctx.log_metric("cuda_device_count", float(torch.cuda.device_count()))
        x = torch.ones(256, 256, device=ctx.device)
        ctx.log_metric("sum", float((x @ x).sum().item()))
        return None
