"""Class-based Python recipes (Trainer.train / Scorer.score, and the older Training/Scoring groups
naming classes): the recipe reads and writes everything itself; the model lives under modelPATH.

The runtime records a digest of the model folder the trainer wrote, and a scorer runs only on a
folder with that digest: a class recipe's scorer may unpickle what it finds there."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..artifacts import RecipeInfo, tree_digest
from ..engine import TaskContext
from ..errors import ConfigError
from ..tasks import SCORE, TRAIN
from .base import RecipeEngine

ROLES = {TRAIN: (("Trainer.train", None), ("Training", None)),
         SCORE: (("Scorer.score", None), ("Scoring", None))}
METHODS = {TRAIN: "train", SCORE: "score"}


def engine_for(recipe_dir: Path, info: RecipeInfo) -> type[RecipeEngine]:
    return ClassRecipe.build(recipe_dir, info)


class ClassRecipe(RecipeEngine):
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
        return method(config)

    def load_data(self, ctx: TaskContext, uri: str) -> Any:
        if ctx.task not in METHODS:
            raise ConfigError(f"Recipe {self.recipe.name!r} is class-based (a trainer and a "
                              "scorer): it has no feature pipeline task")
        return None       # the recipe reads its own data

    def train(self, ctx: TaskContext, data: Any) -> Any:
        return self._call(ctx)

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)   # the trainer wrote it (modelPATH)
        self.model_digest = "sha256:" + tree_digest(directory)

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        expected = self.expected_digest(ctx, Path(directory))
        self.refuse_changed(Path(directory), expected, "sha256:" + tree_digest(Path(directory)))
        return Path(directory)

    def score(self, ctx: TaskContext, model: Any, data: Any) -> Any:
        return self._call(ctx)

    def save_output(self, ctx: TaskContext, frame: Any) -> Optional[str]:
        return self.config(ctx).get("scoringResultsDataSetId")   # the scorer wrote it
