"""Engines for the warm-worker tests, loaded by the worker as `warm_engines:<Class>` (the tests put
this folder and tests/backends on the worker's PYTHONPATH, which is part of the warm parent's
key)."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from failing_engines import _Base   # tests/backends: a do-nothing engine to build on

LEAKED = False   # a run sets it; the next run must find it False again


class LeakyEngine(_Base):
    """Reports what an earlier run could have left behind, then leaves all of it behind itself:
    an environment variable, a module global, an attribute on a stdlib module, an imported
    module, a running thread, a changed working directory."""

    name = "leaky"

    def train(self, ctx, features):
        global LEAKED
        found = {
            "env_leak": "WARM_TEST_LEAK" in os.environ,
            "global_leak": LEAKED,
            "stdlib_leak": hasattr(json, "warm_test_leak"),
            "module_leak": "xml.dom.minidom" in sys.modules,
            "thread_leak": any(t.name == "warm-test-leak" for t in threading.enumerate()),
            "cwd_leak": os.getcwd() == "/",
        }
        for name, value in found.items():
            ctx.log_metric(name, float(value))
        ctx.log_metric("pid", float(os.getpid()))
        os.environ["WARM_TEST_LEAK"] = "1"
        LEAKED = True
        json.warm_test_leak = 1
        import xml.dom.minidom  # noqa: F401
        threading.Thread(target=time.sleep, args=(30,), name="warm-test-leak", daemon=True).start()
        os.chdir("/")
        return None


class PoolsProbeEngine(_Base):
    """Reports the thread counts this run's pools have: BLAS/OpenMP (threadpoolctl), torch."""

    name = "pools-probe"
    preload = ("numpy", "torch")

    def train(self, ctx, features):
        import numpy
        import torch
        from threadpoolctl import threadpool_info

        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        ctx.log_metric("blas_threads", float(min(blas)) if blas else -1.0)
        ctx.log_metric("torch_threads", float(torch.get_num_threads()))
        ctx.log_metric("ctx_threads", float(ctx.threads))
        ctx.log_metric("numpy_draw", float(numpy.random.random()))
        ctx.log_metric("cuda_initialized", float(torch.cuda.is_initialized()))
        return None


class ThreadedImportEngine(_Base):
    """Declares a module that starts a thread when imported: no warm parent may import it."""

    name = "threaded-import"
    preload = ("threaded_module",)

    def train(self, ctx, features):
        import threaded_module

        ctx.log_metric("imported", float(threaded_module.STARTED))
        return None


class SlowEngine(_Base):
    """Waits until the file named by its run folder's `go` exists (at most 60 s)."""

    name = "slow"

    def train(self, ctx, features):
        deadline = time.monotonic() + 60
        go = Path(ctx.artifact_dir) / "go"
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        ctx.log_metric("went", float(go.exists()))
        return None
