"""Function-based Python recipes (entry-point groups Training, Scoring, Evaluation).

Called exactly as the platform did: `load(config)`, `train(config, data) -> model`,
`score(config, data, model)`, `save(config, prediction)`; with an evaluator, training splits,
trains on the train part, scores the validation part and computes `evaluation.metrics`. The model
object is pickled by this runtime and unpickled only when its SHA-256 is the one recorded.
"""
from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any, Optional

from ..artifacts import RecipeInfo
from ..digests import digest
from ..engine import Metric, TaskContext
from ..errors import ConfigError
from ..tasks import SCORE, TRAIN
from .base import RecipeEngine

MODEL_FILE = "model.pkl"
PICKLE_PROTOCOL = 4      # readable by every Python 3 a recipe environment may have


def engine_for(recipe_dir: Path, info: RecipeInfo) -> type[RecipeEngine]:
    return FunctionRecipe.build(recipe_dir, info)


class FunctionRecipe(RecipeEngine):
    def __init__(self) -> None:
        super().__init__()
        self._validation: Any = None

    def _role(self, group: str, name: str, function: str) -> Any:
        module = self.load_target(self.entry(group, name))
        func = getattr(module, function, None)
        if not callable(func):
            raise ConfigError(f"Recipe {self.recipe.name!r}: {self.entry(group, name)} (entry "
                              f"point {name}) has no function {function}()")
        return func

    def load_data(self, ctx: TaskContext, uri: str) -> Any:
        if ctx.task == TRAIN:
            return self._role("Training", "training_dataloader", "load")(self.config(ctx))
        if ctx.task == SCORE:
            return self._role("Scoring", "scoring_dataloader", "load")(self.config(ctx))
        raise ConfigError(f"Recipe {self.recipe.name!r} is function-based (Training and Scoring): "
                          "it has no feature pipeline task")

    def evaluator(self) -> Any:
        return self.instance_of((self.recipe.entry_points.get("Evaluation") or {}).get("evaluator"))

    def train(self, ctx: TaskContext, data: Any) -> Any:
        config = self.config(ctx)
        train_part = data
        evaluator = self.evaluator()
        if evaluator is not None:
            train_part, self._validation = _split(evaluator, config, data)
        return self._role("Training", "training_pipeline", "train")(config, train_part)

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        try:
            payload = pickle.dumps(model, protocol=PICKLE_PROTOCOL)
        except Exception as exc:
            raise ConfigError(f"Recipe {self.recipe.name!r}: the object train() returned "
                              f"({type(model).__name__}) cannot be pickled: {exc}") from exc
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(payload)
        self.model_digest = "sha256:" + digest(payload)

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise ConfigError(f"The model folder {directory} has no {MODEL_FILE}: it was not "
                              f"written by a run of a function-based recipe")
        expected = self.expected_digest(ctx, Path(directory))
        payload = path.read_bytes()   # hashed and unpickled from the same bytes
        self.refuse_changed(path, expected, "sha256:" + digest(payload))
        self._ready_imports()         # the model's classes may live in the recipe
        return pickle.loads(payload)

    def score(self, ctx: TaskContext, model: Any, data: Any) -> Any:
        return self._role("Scoring", "scoring_pipeline", "score")(self.config(ctx), data, model)

    def save_output(self, ctx: TaskContext, frame: Any) -> Optional[str]:
        config = self.config(ctx)
        self._role("Scoring", "scoring_datasaver", "save")(config, frame)
        return config.get("scoringResultsDataSetId")

    def evaluate(self, ctx: TaskContext, model: Any, data: Any) -> list[Metric]:
        evaluator = self.evaluator()
        if evaluator is None or self._validation is None:
            return []
        config = self.config(ctx)
        own = _own_method(evaluator, "evaluate")
        if own is not None and not _accepts(own, "scored"):
            # the older AbstractEvaluator: the recipe scores and computes its metrics itself
            return _metrics(own(self._validation, model, config))
        scored = self.score(ctx, model, self._validation)
        if callable(getattr(evaluator, "evaluate", None)):
            # ml.runtime...Evaluator (or a recipe's override taking `scored`): the named metrics
            return _metrics(evaluator.evaluate(self._validation, model, config, scored=scored))
        return _metrics(_compute(config, self._validation, scored, self.recipe.name))


def _accepts(method: Any, name: str) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _compute(config: dict[str, Any], validation: Any, scored: Any, recipe: str) -> list[dict]:
    """The metrics of `evaluation.metrics`, for an evaluator class with no evaluate() at all."""
    from ..metrics import compute_metrics

    names = [n.strip() for n in str(config.get("evaluation.metrics") or "").split(",") if n.strip()]
    if not names:
        return []
    label = config.get("evaluation.labelColumn")
    if not label:
        raise ConfigError(f"Recipe {recipe!r} evaluates {', '.join(names)} but names no "
                          "evaluation.labelColumn")
    prediction = config.get("evaluation.predictionColumn") or "prediction"
    for frame, column, what in ((validation, label, "validation data"),
                                (scored, prediction, "scored validation data")):
        if column not in getattr(frame, "columns", ()):
            raise ConfigError(f"Recipe {recipe!r}: the {what} has no column {column!r}")
    return compute_metrics(names, validation[label].to_numpy(), scored[prediction].to_numpy())


def _split(evaluator: Any, config: dict[str, Any], data: Any) -> tuple[Any, Any]:
    split = evaluator.split
    try:
        params = [p for p in inspect.signature(split).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = [None, None]
    parts = split(config, data) if len(params) >= 2 else split(config)
    try:
        train, validation = parts
    except (TypeError, ValueError):
        raise ConfigError("The recipe's evaluator split() must return (train, validation)") from None
    return train, validation


def _own_method(obj: Any, name: str) -> Any:
    """`obj.name` when the recipe itself defines it (not a base class of our compat packages)."""
    for klass in type(obj).__mro__:
        if name in vars(klass):
            module = getattr(klass, "__module__", "") or ""
            if module.startswith(("ml.", "platform_sdk", "sdk.", "runtime.")) or klass is object:
                return None
            return getattr(obj, name)
    return None


def _metrics(items: Any) -> list[Metric]:
    out = []
    for item in items or []:
        if isinstance(item, dict):
            name, value, value_type = item.get("name"), item.get("value"), item.get("valueType")
        else:
            name, value = getattr(item, "name", None), getattr(item, "value", None)
            value_type = getattr(item, "valueType", None) or getattr(item, "value_type", None)
        try:
            out.append(Metric(name=str(name), value=float(value), valueType=value_type or "double"))
        except (TypeError, ValueError):
            raise ConfigError(f"The recipe's evaluator returned a metric without a name and a "
                              f"numeric value: {item!r}") from None
    return out
