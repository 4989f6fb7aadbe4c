"""Users' own Engines: one adapter per recipe kind, each an `Engine` built over a stored recipe.

An Engine whose artifact is a recipe runs as `recipe:<kind>:<stored recipe folder>`;
`runtime.engine.load_engine` hands such a reference to `load_recipe_engine`. Building the adapter
class reads only recipe.json: recipe code is imported by the stages, inside the worker.
"""
from __future__ import annotations

from pathlib import Path

from ..artifacts import RecipeInfo, inspect_recipe, load_recipe_info
from ..errors import EngineNotFound
from ..recipe_kinds import runnable_kinds

__all__ = ["PREFIX", "compat_path", "detect", "load_recipe_engine", "parse_reference",
           "reference"]

PREFIX = "recipe:"
# Set by the environment builder inside a recipe's own environment (its .pth puts compat/ on the
# path); without it the worker runs in the runtime's environment (--env-manager local).
ENV_MARKER = "MLRUNTIME_RECIPE_ENV"


def compat_path() -> Path:
    """runtime/compat: our platform_sdk, ml.runtime... and sdk packages (recipe processes only)."""
    return Path(__file__).resolve().parent.parent / "compat"


def reference(kind: str, recipe_dir: Path) -> str:
    return f"{PREFIX}{kind}:{Path(recipe_dir).resolve()}"


def is_reference(ref: str) -> bool:
    return ref.startswith(PREFIX)


def parse_reference(ref: str) -> tuple[str, Path]:
    body = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    kind, sep, folder = body.partition(":")
    names = [k.name for k in runnable_kinds()]
    if not sep or kind not in names or not folder:
        raise EngineNotFound(f"Malformed recipe reference {ref!r}: expected "
                             f"'recipe:<{'|'.join(names)}>:<stored recipe folder>'")
    return kind, Path(folder)


def detect(artifact_dir: Path) -> str:
    """The kind of the recipe unpacked in `artifact_dir` (a runnable row of
    runtime.recipe_kinds.KINDS); an InvalidArtifact when it is none."""
    return inspect_recipe(Path(artifact_dir)).kind


def load_recipe_engine(ref: str) -> type:
    kind, folder = parse_reference(ref)
    if not (folder / "recipe.json").is_file():
        raise EngineNotFound(f"The recipe of engine reference {ref!r} is not stored at {folder} "
                             "(was the runtime home moved or pruned?)")
    info: RecipeInfo = load_recipe_info(folder)
    if info.kind != kind:
        raise EngineNotFound(f"Engine reference {ref!r} says {kind}, but the stored recipe is "
                             f"{info.kind}")
    return next(k for k in runnable_kinds() if k.name == kind).engine_class(folder, info)
