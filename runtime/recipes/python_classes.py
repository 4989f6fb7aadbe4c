"""Class-based Python recipes (Trainer.train / Scorer.score, and the older Training/Scoring groups
naming classes, with an optional Evaluation group): the recipe reads and writes everything itself;
the model lives under modelPATH.

Called as the platform's TensorFlow/class runtime called them: `Trainer().train(config)`,
`Scorer().score(config)`; with an evaluator, training first calls its `split(config)` (the recipe
loads its own data, so no frame is passed), then `train(config)`, then
`evaluate(test_part, model, config)` (the second part of the split, what train returned, the same
config: the evaluator finds the trained model under config["modelPATH"]); the metrics it returns
are the run's metrics and its Insight. `TF_CONFIG` is set for every call unless the user set it.

The runtime records a digest of the model folder the trainer wrote, and a scorer runs only on a
folder with that digest: a class recipe's scorer may unpickle what it finds there."""
from __future__ import annotations

import inspect
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ..artifacts import RecipeInfo
from ..digests import digest
from ..engine import Metric, TaskContext
from ..errors import ConfigError
from ..tasks import SCORE, TRAIN
from .base import RecipeEngine
from .python_functions import _metrics, _own_method

ROLES = {TRAIN: (("Trainer.train", None), ("Training", None)),
         SCORE: (("Scorer.score", None), ("Scoring", None))}
METHODS = {TRAIN: "train", SCORE: "score"}
EVALUATION_GROUPS = ("Evaluation", "Evaluator.evaluate")
TF_CONFIG = "TF_CONFIG"


def engine_for(recipe_dir: Path, info: RecipeInfo) -> type[RecipeEngine]:
    return ClassRecipe.build(recipe_dir, info)


def single_worker_tf_config() -> str:
    """What the platform set for a TensorFlow job of one worker: a cluster of this process alone,
    on a free loopback port (MultiWorkerMirroredStrategy and friends parse it; nothing listens
    there until TensorFlow itself does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]},
                       "task": {"type": "worker", "index": 0}})


@contextmanager
def tf_config() -> Iterator[None]:
    """TF_CONFIG set for the recipe's calls unless the user's environment has one; put back as it
    was afterwards (a warm worker runs the next recipe in the same process)."""
    if os.environ.get(TF_CONFIG) is not None:
        yield
        return
    os.environ[TF_CONFIG] = single_worker_tf_config()
    try:
        yield
    finally:
        os.environ.pop(TF_CONFIG, None)


class ClassRecipe(RecipeEngine):
    def __init__(self) -> None:
        super().__init__()
        self._test_part: Any = None

    def _instance(self, task: str) -> Any:
        for group, _ in ROLES.get(task, ()):
            eps = self.recipe.entry_points.get(group) or {}
            targets = [t for n, t in eps.items() if ":" in t and n != "evaluator"]
            if targets:
                cls = self.load_target(targets[0])
                return cls() if isinstance(cls, type) else cls
        raise ConfigError(f"Recipe {self.recipe.name!r} declares no class for its {task} task "
                          f"(entry point groups: {', '.join(sorted(self.recipe.entry_points))})")

    def _call(self, ctx: TaskContext) -> Any:
        obj = self._instance(ctx.task)
        method = getattr(obj, METHODS[ctx.task], None)
        if not callable(method):
            raise ConfigError(f"Recipe {self.recipe.name!r}: {type(obj).__name__} has no "
                              f"{METHODS[ctx.task]}(config) method")
        config = self.config(ctx)
        for key in ("modelPATH", "logsPATH"):
            if config.get(key):
                Path(config[key]).mkdir(parents=True, exist_ok=True)
        with tf_config():
            return method(config)

    # --- the evaluator -----------------------------------------------------------------------

    def evaluator(self) -> Any:
        """The Evaluation entry point's instance (`evaluator = pkg.mod:Evaluator`, else the
        group's only class), or None when the recipe declares none."""
        target = None
        for group in EVALUATION_GROUPS:
            eps = self.recipe.entry_points.get(group) or {}
            classes = [t for t in eps.values() if ":" in t]
            target = eps.get("evaluator") or (classes[0] if len(classes) == 1 else None)
            if target:
                break
        if target is None:
            for group, _ in ROLES[TRAIN]:   # the older layout may name it beside the trainer
                target = (self.recipe.entry_points.get(group) or {}).get("evaluator")
                if target:
                    break
        return self.instance_of(target)

    def _split(self, evaluator: Any, config: dict[str, Any]) -> Any:
        """The evaluator's own split(config): its second part is what evaluate() gets. A recipe
        whose evaluator keeps the base class's split (which splits a loaded frame, and a class
        recipe loads none) gets None."""
        own = _own_method(evaluator, "split")
        if own is None:
            return None
        try:
            params = [p for p in inspect.signature(own).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        with tf_config():
            parts = own(config, None) if len(params) >= 2 else own(config)
        try:
            _train, test = parts
        except (TypeError, ValueError):
            raise ConfigError(f"Recipe {self.recipe.name!r}: {type(evaluator).__name__}.split() "
                              "must return (train, test)") from None
        return test

    # --- the engine's stages -----------------------------------------------------------------

    def load_data(self, ctx: TaskContext, uri: str) -> Any:
        if ctx.task not in METHODS:
            raise ConfigError(f"Recipe {self.recipe.name!r} is class-based (a trainer and a "
                              "scorer): it has no feature pipeline task")
        return None       # the recipe reads its own data

    def train(self, ctx: TaskContext, data: Any) -> Any:
        evaluator = self.evaluator()
        if evaluator is not None:
            if _own_method(evaluator, "evaluate") is None:
                raise ConfigError(
                    f"Recipe {self.recipe.name!r}: its evaluator {type(evaluator).__name__} does "
                    "not implement evaluate(self, data, model, config): a class-based recipe "
                    "scores and writes its own output, so the runtime has no scored rows to "
                    "compute metrics from; return [{name, value, valueType}] from evaluate()")
            self._test_part = self._split(evaluator, self.config(ctx))
        return self._call(ctx)

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)   # the trainer wrote it (modelPATH)
        self.model_digest = "sha256:" + digest(directory)

    def evaluate(self, ctx: TaskContext, model: Any, data: Any) -> list[Metric]:
        evaluator = self.evaluator()
        if evaluator is None:
            return []
        with tf_config():
            found = _own_method(evaluator, "evaluate")(self._test_part, model, self.config(ctx))
        if isinstance(found, dict) and "name" not in found:   # {name: value}, as some recipes do
            found = [{"name": k, "value": v} for k, v in found.items()]
        return _metrics(found)

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        expected = self.expected_digest(ctx, Path(directory))
        self.refuse_changed(Path(directory), expected, "sha256:" + digest(Path(directory)))
        return Path(directory)

    def score(self, ctx: TaskContext, model: Any, data: Any) -> Any:
        return self._call(ctx)

    def save_output(self, ctx: TaskContext, frame: Any) -> Optional[str]:
        return self.config(ctx).get("scoringResultsDataSetId")   # the scorer wrote it
