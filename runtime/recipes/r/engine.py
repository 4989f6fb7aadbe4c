"""R recipes (type R): the platform's applicationTrainer / applicationScorer / applicationEvaluator
reference classes, run by one `Rscript` per task inside the worker's process group.

The worker (a Python process in the `python` profile's environment) writes the task's request,
starts R on the runtime's driver (driver.R) -- or, where runs are warm, has the warm R parent of
its key fork an R child that runs the same driver (warm.py) --, streams R's output into the run's
log as it comes and reads the small JSON result the driver leaves. Training: the evaluator's split(config) when the
recipe has one, train(config, train_part) or train(config), then the metrics named in
evaluation.metrics on the test part; the Model is the modelPATH folder with its digest. Scoring:
the digest checked, score(config); the recipe writes its output data set itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from ...artifacts import RecipeInfo
from ...digests import digest
from ...engine import Metric, TaskContext
from ...errors import ConfigError, MLRuntimeError
from ...tasks import SCORE, TRAIN
from ..base import RecipeEngine
from . import host

DRIVER = Path(__file__).resolve().parent / "driver.R"
DATA_SET_KEYS = ("trainingDataSetId", "scoringDataSetId", "scoringResultsDataSetId",
                 "featuresDataSetId")
_DATA_SUFFIXES = (".csv", ".parquet", ".json", ".jsonl", ".tsv", ".txt", ".pq")
REQUEST_DIR = "r"


class RRecipeFailed(MLRuntimeError):
    """The recipe's R code raised an error: its message, the condition's class and the method."""

    status, title, slug = 500, "R Recipe Failed", "r-recipe-failed"


def engine_for(recipe_dir: Path, info: RecipeInfo) -> type[RecipeEngine]:
    return RRecipe.build(recipe_dir, info)


def absolute_data_sets(config: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Data set ids that are relative paths, made absolute: R recipes setwd(modelPATH) before
    they read, so a relative path would resolve under the model folder."""
    out = dict(config)
    for key in DATA_SET_KEYS:
        value = out.get(key)
        if not isinstance(value, str) or not value.strip() or "://" in value:
            continue
        path = Path(value.strip()).expanduser()
        if path.is_absolute():
            continue
        if (cwd / path).exists() or path.suffix.lower() in _DATA_SUFFIXES or "/" in value:
            out[key] = str((cwd / path).resolve())
    return out


def output_folders(config: dict[str, Any]) -> None:
    """The folder of an output data set given as a path exists before R writes into it."""
    for key in ("scoringResultsDataSetId", "featuresDataSetId"):
        value = config.get(key)
        if isinstance(value, str) and Path(value).is_absolute() and \
                Path(value).suffix.lower() in _DATA_SUFFIXES:
            Path(value).parent.mkdir(parents=True, exist_ok=True)


class RRecipe(RecipeEngine):
    preload = ()        # nothing of the recipe's runs in a Python parent

    def __init__(self) -> None:
        super().__init__()
        self._metrics: list[Metric] = []
        self.train_called_at: Optional[float] = None

    # --- the R child ---------------------------------------------------------------------------

    def r_config(self, ctx: TaskContext) -> dict[str, Any]:
        config = absolute_data_sets(self.config(ctx), Path.cwd())
        # The platform's UI filled tenantId in (the output columns' prefix); a stand-in otherwise.
        org = str(config.get("ML_FRAMEWORK_IMS_TENANT_ID") or config.get("sandboxName") or "local")
        config.setdefault("tenantId", "_" + "".join(c for c in org if c.isalnum() or c == "_"))
        return config

    def _environment(self) -> dict[str, str]:
        home = self.recipe_dir.resolve().parents[1]      # HOME/recipes/<sha256>
        rscript = host.find_rscript()
        lib = host.ensure_library(home, rscript)
        env = dict(os.environ)
        env.setdefault("TZ", "UTC")     # else lubridate asks timedatectl, and warns every run
        env["R_LIBS"] = os.pathsep.join(filter(None, [str(lib), os.environ.get("R_LIBS")]))
        env["RETICULATE_PYTHON"] = sys.executable
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def run_r(self, ctx: TaskContext, task: str) -> dict[str, Any]:
        root = self.recipe.root_dir(self.recipe_dir)
        folder = Path(ctx.artifact_dir or ".") / REQUEST_DIR
        folder.mkdir(parents=True, exist_ok=True)
        result_path = folder / f"{task}-result.json"
        result_path.unlink(missing_ok=True)
        config = self.r_config(ctx)
        output_folders(config)
        for key in ("modelPATH", "logsPATH"):
            if config.get(key):
                Path(config[key]).mkdir(parents=True, exist_ok=True)
        request = {"task": task, "config": config, "result": str(result_path),
                   "files": [str(p) for p in host.recipe_files(root)]}
        request_path = folder / f"{task}-request.json"
        request_path.write_text(json.dumps(request))
        env = self._environment()
        rscript = host.find_rscript()
        tail: list[str] = []
        proc = self._warm_child(rscript, env, request_path)
        if proc is None:
            # One Rscript in the worker's own process group: a cancel or maxRuntime stops it
            # with the worker. Its output is copied into the run's log line by line, as it comes.
            proc = subprocess.Popen([str(rscript), "--no-save", "--no-restore", str(DRIVER),
                                     str(request_path)], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        pump = threading.Thread(target=_pump, args=(proc.stdout, tail), daemon=True)
        pump.start()
        code = proc.wait()
        pump.join(timeout=10)
        result: dict[str, Any] = {}
        if result_path.is_file():
            result = json.loads(result_path.read_text() or "{}")
        if result.get("ok") and code == 0:
            return result
        error = result.get("error") or {}
        if error:
            raise RRecipeFailed(
                f"R recipe {self.recipe.name!r} failed in {error.get('method')}: "
                f"{error.get('message')} (R condition class: {error.get('class')})")
        ended = ("its warm R parent went away before the R child ended" if getattr(
            proc, "lost", False) else f"Rscript exited with {code}")
        raise RRecipeFailed(f"R recipe {self.recipe.name!r}: {ended} before "
                            f"the {task} task finished; its last output: "
                            f"{' | '.join(tail[-6:]) or 'none'}")

    def _warm_child(self, rscript: Path, env: dict[str, str], request_path: Path) -> Any:
        """The run's R child forked by the warm R parent of its key (runtime/recipes/r/warm.py),
        its output on a pipe of ours; None: Rscript starts cold (the log says why, if not the
        default: no parent listening and none to start)."""
        from . import warm

        home = self.recipe_dir.resolve().parents[1]
        read_fd, write_fd = os.pipe()
        try:
            child, why = warm.spawn(home, rscript, env, request_path, write_fd)
        finally:
            os.close(write_fd)
        if child is None:
            os.close(read_fd)
            if why:
                print(f"[r] cold R start: {why}", flush=True)
            return None
        print(f"[r] forked by the warm R parent {child.parent_pid} (its run {child.runs}): "
              f"R child {child.pid}", flush=True)
        child.stdout = os.fdopen(read_fd, "rb")
        return child

    # --- the engine's stages -----------------------------------------------------------------

    def load_data(self, ctx: TaskContext, uri: str) -> Any:
        if ctx.task not in (TRAIN, SCORE):
            raise ConfigError(f"Recipe {self.recipe.name!r} is an R recipe (a trainer and a "
                              "scorer): it has no feature pipeline task")
        return None       # the recipe reads its own data

    def train(self, ctx: TaskContext, data: Any) -> Any:
        result = self.run_r(ctx, "train")
        self.train_called_at = result.get("train_called_at")
        self._metrics = [Metric(name=str(m["name"]), value=float(m["value"]),
                                valueType=str(m.get("valueType") or "double"))
                         for m in result.get("metrics") or [] if m.get("value") is not None]
        return Path(self.config(ctx).get("modelPATH") or ".")

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)   # the trainer wrote it (modelPATH)
        self.model_digest = "sha256:" + digest(directory)

    def evaluate(self, ctx: TaskContext, model: Any, data: Any) -> list[Metric]:
        return list(self._metrics)

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        # readRDS is as unsafe as unpickling: only a folder with the digest this runtime wrote.
        expected = self.expected_digest(ctx, Path(directory))
        self.refuse_changed(Path(directory), expected, "sha256:" + digest(Path(directory)))
        return Path(directory)

    def score(self, ctx: TaskContext, model: Any, data: Any) -> Any:
        self.run_r(ctx, "score")
        return None

    def save_output(self, ctx: TaskContext, frame: Any) -> Optional[str]:
        return self.r_config(ctx).get("scoringResultsDataSetId")   # the scorer wrote it


def _pump(stream: Any, tail: list[str]) -> None:
    out = sys.stdout
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        out.write(line)
        out.flush()
        tail.append(line.rstrip())
        del tail[:-20]
    stream.close()


__all__ = ["RRecipe", "RRecipeFailed", "engine_for", "absolute_data_sets"]
