"""An engine that reports where it runs: which interpreter, which prefix, which pandas. Loaded by
the worker as `env_probe:EnvProbeEngine` with this folder on its PYTHONPATH."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime.engine import Engine


class EnvProbeEngine(Engine):
    name = "env-probe"
    kind = "python"
    params = {}

    def train(self, ctx, features):
        import pandas

        ctx.log_metric("pandas_major", float(pandas.__version__.split(".")[0]))
        ctx.log_metric("rows_seen", float(len(features)))
        Path(ctx.artifact_dir, "probe.json").write_text(json.dumps({
            "prefix": sys.prefix, "executable": sys.executable, "pandas": pandas.__version__}))
        return {}

    def save_model(self, ctx, model, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)

    def load_model(self, ctx, directory):
        return None

    def score(self, ctx, model, data):
        return data
