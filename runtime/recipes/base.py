"""What every Python recipe adapter shares: the flat config_properties, imports from the recipe,
and model files that are loaded only when their digest is the one this runtime recorded."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Optional

from pydantic import ConfigDict

from ..artifacts import RecipeInfo
from ..engine import Engine, EngineParams, TaskContext
from ..errors import ConfigError, EngineNotFound, MLRuntimeError
from ..tasks import TASK_NAMES
from . import ENV_MARKER, compat_path


class ModelRefused(MLRuntimeError):
    status, title, slug = 400, "Model Refused", "model-refused"


class RecipeParams(EngineParams):
    """A recipe's parameters are its own: every key is kept, values as given (strings)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    trainingDataSetId: Optional[str] = None
    scoringDataSetId: Optional[str] = None
    scoringResultsDataSetId: Optional[str] = None
    featuresDataSetId: Optional[str] = None


class RecipeEngine(Engine):
    """Base of the recipe adapters; `engine_for` subclasses it per stored recipe."""

    kind = "python"
    accepts_extra_keys = True
    params = {task: RecipeParams for task in TASK_NAMES}
    # The worker passes data-set ids through: the recipe's own loaders and savers use them.
    loads_data_sets: ClassVar[bool] = True
    saves_output: ClassVar[bool] = True
    score_input = "raw"
    # The profile's libraries; what a recipe imports besides, its warm parent learns from its runs.
    # The recipe's own code is never imported there.
    preload = ("numpy", "pandas")
    recipe_dir: ClassVar[Path]
    recipe: ClassVar[RecipeInfo]

    def __init__(self) -> None:
        self.model_digest: Optional[str] = None
        self._evaluator: Any = None

    @classmethod
    def build(cls, recipe_dir: Path, info: RecipeInfo) -> type["RecipeEngine"]:
        return type(f"{cls.__name__}[{info.name}]", (cls,), {
            "name": info.name, "recipe_dir": Path(recipe_dir), "recipe": info,
            "description": f"{info.kind} recipe {info.name} {info.version or ''}".strip()})

    # --- configuration -----------------------------------------------------------------------

    def config(self, ctx: TaskContext) -> dict[str, Any]:
        """The flat config_properties the platform handed a recipe: every resolved key."""
        values = ctx.params.model_dump(by_alias=True, exclude_none=True)
        extra = getattr(ctx.params, "__pydantic_extra__", None) or {}
        values.update(extra)
        return {k: _plain(v) for k, v in values.items()}

    # --- importing the recipe ----------------------------------------------------------------

    _paths_ready: ClassVar[bool] = False

    def _ready_imports(self) -> None:
        if RecipeEngine._paths_ready:
            return
        root = str(self.recipe.import_dir(self.recipe_dir))
        if root not in sys.path:
            sys.path.insert(0, root)
        compat = str(compat_path())
        # In a recipe environment a .pth file put compat/ on the path already; under
        # --env-manager local it goes last, so it shadows nothing the runtime's environment has.
        if compat not in sys.path and not os.environ.get(ENV_MARKER):
            sys.path.append(compat)
        RecipeEngine._paths_ready = True

    def instance_of(self, target: Optional[str]) -> Any:
        """The evaluator an entry point names (a class is instantiated), built once per engine
        object; None when `target` is empty."""
        if not target:
            return None
        if self._evaluator is None:
            cls = self.load_target(target)
            self._evaluator = cls() if isinstance(cls, type) else cls
        return self._evaluator

    def entry(self, group: str, name: str) -> str:
        target = (self.recipe.entry_points.get(group) or {}).get(name)
        if not target:
            raise ConfigError(f"Recipe {self.recipe.name!r} declares no {name!r} entry point in "
                              f"group {group!r}")
        return target

    def load_target(self, target: str) -> Any:
        """The module (`pkg.mod`) or attribute (`pkg.mod:Class`) an entry point names."""
        self._ready_imports()
        module_name, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name.strip())
        except ImportError as exc:
            raise EngineNotFound(f"Recipe {self.recipe.name!r}: cannot import {module_name!r} "
                                 f"({exc}); is it a dependency the recipe does not declare?") \
                from exc
        for part in filter(None, attr.strip().split(".")):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise EngineNotFound(f"Recipe {self.recipe.name!r}: module {module_name!r} has no "
                                     f"{attr!r}") from None
        return obj

    # --- model digests -----------------------------------------------------------------------

    @staticmethod
    def expected_digest(ctx: TaskContext, directory: Path) -> str:
        expected = getattr(ctx, "model_digest", None)
        if not expected:
            raise ModelRefused(
                f"The model at {directory} has no digest recorded by this runtime (uploaded "
                "through POST /models, or written by something else): a recipe's model is "
                "pickled Python, and this runtime loads only models it trained itself. Train "
                "the recipe here to score with it")
        return expected

    @staticmethod
    def refuse_changed(directory: Path, expected: str, actual: str) -> None:
        if expected != actual:
            raise ModelRefused(
                f"The model at {directory} changed since this runtime wrote it (sha256 "
                f"{actual.removeprefix('sha256:')[:16]}..., recorded "
                f"{expected.removeprefix('sha256:')[:16]}...): refusing to load it. Train again "
                "to get a model this runtime can trust")

    def save_output(self, ctx: TaskContext, frame: Any) -> Optional[str]:
        return None


def _plain(value: Any) -> Any:
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
        value = value.decode() if isinstance(value, bytes) else value
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return value
