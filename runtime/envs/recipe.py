"""What a recipe asks of its environment, read from its files without running them.

The reading itself is runtime.recipe_metadata's (the artifact store reads the same files the same
way); this module adds what installing needs: which kind of installable the recipe is, its
content digest (part of the environment key), and the refusal of requirement-file options (index
settings belong to the runtime's configuration, not to a recipe). A setup.py whose
`install_requires` is computed (not a literal) lists it in `dynamic`: the environment builder then
lets uv read the metadata by building the package, the way pip would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..digests import digest
from ..errors import ConfigError
from ..recipe_metadata import (PROJECT_FILES, RecipeMetadata, project_marker, read_recipe_metadata,
                               read_requirement_file)

__all__ = ["RecipeSource", "read_requirements", "recipe_digest", "recipe_source",
           "requirements_file"]


@dataclass(frozen=True)
class RecipeSource:
    """A recipe as the builder installs it: `kind` is `project` (a source folder uv/pip can
    install), `wheel` (a .whl file), `egg` (an unpacked egg folder or an .egg file) or `dist-info`
    (an unpacked wheel), copied into site-packages as it is."""

    path: Path
    kind: str
    digest: str
    metadata: RecipeMetadata


def recipe_source(path: Path) -> RecipeSource:
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"Recipe {path} does not exist")
    kind = _kind(path)
    return RecipeSource(path=path, kind=kind, digest=recipe_digest(path),
                        metadata=read_requirements(path))


def _kind(path: Path) -> str:
    if path.is_file():
        if path.suffix == ".whl":
            return "wheel"
        if path.suffix == ".egg":
            return "egg"
        raise ConfigError(f"Recipe {path} is a file but neither a wheel (.whl) nor an egg (.egg)")
    marker = project_marker(path)
    if marker in PROJECT_FILES:
        return "project"
    if marker == "EGG-INFO":
        return "egg"
    if marker == "dist-info":
        return "dist-info"
    raise ConfigError(f"Recipe folder {path} has no {', '.join(PROJECT_FILES)}, EGG-INFO or "
                      "*.dist-info: it is not an installable Python package")


def recipe_digest(path: Path) -> str:
    """SHA-256 over the recipe's files (relative names and contents), build leftovers excluded,
    so the same recipe unpacked in two places has one digest (the `environment` scheme: existing
    environments are keyed by it)."""
    return digest(Path(path), scheme="environment")


def read_requirements(path: Path) -> RecipeMetadata:
    """The recipe's declared requirements and `python_requires`, without running its code; an
    option line in its requirements file is a ConfigError."""
    return _without_options(read_recipe_metadata(Path(path)))


def requirements_file(path: Path) -> list[str]:
    """The requirement lines of a requirements file given with --pip (`-r` followed beside it)."""
    path = Path(path).expanduser().resolve()
    return _without_options(read_requirement_file(path, root=path.parent)).requirements


def _without_options(metadata: RecipeMetadata) -> RecipeMetadata:
    if metadata.requirement_options:
        raise ConfigError(f"{metadata.requirement_options[0]}: options in a recipe's "
                          "requirements file are not supported (index settings belong to the "
                          "runtime's configuration: UV_INDEX_URL, UV_EXTRA_INDEX_URL)")
    return metadata
