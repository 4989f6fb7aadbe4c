"""What an Engine's `artifacts.default.image` names, checked when the Engine is written.

A recipe (uploaded `defaultArtifact`, a local folder or archive, a `file://` URI) is stored
content-addressed and its digest, kind and version are written on the Engine (server-owned keys:
a client cannot set them). An installed plugin name or an importable `module:Class` passes as
before. Anything else is a 400 now, never a run that fails later.
"""
from __future__ import annotations

import importlib.util
import re
from typing import Any, Optional

from ..artifact_store import location_for, location_for_home_only
from ..artifacts import (ArtifactInfo, InvalidArtifact, home_root, load_recipe_info, recipes_dir,
                         store_artifact, stored_artifact, stored_source)
from ..locations import ARCHIVE_SUFFIXES, local_path, names_a_path
from ..recipe_kinds import kind_named, refuse_engine_type
from . import reference

SERVER_KEYS = ("sha256", "recipeKind", "artifactVersion")
_MODULE_CLASS = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _image(data: dict[str, Any]) -> dict[str, Any]:
    return data.setdefault("artifacts", {}).setdefault("default", {}).setdefault("image", {})


def _old_image(doc: Optional[dict[str, Any]]) -> dict[str, Any]:
    return (((doc or {}).get("artifacts") or {}).get("default") or {}).get("image") or {}


def apply_engine_artifact(data: dict[str, Any], upload: Optional[bytes], home: Any,
                          previous: Optional[dict[str, Any]] = None) -> Optional[ArtifactInfo]:
    """Checks and stores the Engine's default artifact in place in `data` (the validated body)."""
    _refuse_other_languages(data)
    has_image = bool(_old_image(data)) or upload
    image = _image(data) if has_image else {}
    for key in SERVER_KEYS:
        image.pop(key, None)
    location = image.get("location")
    info: Optional[ArtifactInfo] = None
    if upload:
        info = store_artifact(upload, None, home)
        image["location"] = (info.archive or info.dir).as_uri()
    elif isinstance(location, str) and location.strip():
        location = location.strip()
        if names_a_path(location, ARCHIVE_SUFFIXES):
            info = _kept(location, previous, home) or store_artifact(location, None, home)
        else:
            _check_plugin(location)
    if info is None:
        return None
    # Every server of the registry must be able to run it: put to the shared location (a bucket;
    # a folder already holds it).
    location_for(home).put_recipe(info.sha256, info.dir, info.archive)
    old = _old_image(previous)
    version = int(old.get("artifactVersion") or 0)
    if old.get("sha256") != info.sha256:
        version += 1
    image.update(sha256=info.sha256, recipeKind=info.recipe.kind, artifactVersion=max(version, 1))
    image.setdefault("name", info.recipe.name)
    image.setdefault("packagingType", info.kind)
    engine_type = kind_named(info.recipe.kind).engine_types[0]
    image.setdefault("executionType", engine_type)
    data.setdefault("type", engine_type)
    return info


def _kept(location: str, previous: Optional[dict[str, Any]], home: Any) -> Optional[ArtifactInfo]:
    """The Engine's own recipe when a replacement keeps the location it shows and that path is
    not on this host (stored by another server of the registry): found by its sha256 here, or
    fetched from the shared location."""
    old = _old_image(previous)
    sha = old.get("sha256")
    if not sha or location != str(old.get("location") or "").strip():
        return None
    path = local_path(location)
    if path is None or path.exists():
        return None
    if stored_artifact(home, sha) is None:
        _fetch_recipe(sha, home)
    return stored_artifact(home, sha)


def _refuse_other_languages(data: dict[str, Any]) -> None:
    """An Engine of a type the recipe kinds' table refuses (R, Spark's Scala), or whose languages
    no runnable kind accepts, is a 400 now rather than a 201 whose runs fail."""
    raw = data.get("language") or []
    languages = [str(x).strip() for x in ([raw] if isinstance(raw, str) else raw) if str(x).strip()]
    refuse_engine_type(str(data.get("type") or "").strip(), languages)


def _check_plugin(location: str) -> None:
    from ..engine import installed_engines

    installed = installed_engines()
    if location in installed:
        return
    if _MODULE_CLASS.match(location):
        module = location.split(":", 1)[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return
        raise InvalidArtifact(f"artifacts.default.image.location {location!r} names module "
                              f"{module!r}, which is not importable here; expected an installed "
                              "engine plugin, an importable 'module:Class', or a recipe")
    names = ", ".join(sorted(installed)) or "none"
    raise InvalidArtifact(
        f"artifacts.default.image.location {location!r} is neither a recipe (a local folder or "
        f"archive, or a file:// URI of one), nor an installed engine plugin ({names}), nor a "
        "'module:Class' path")


def recipe_reference_for(engine_doc: dict[str, Any], home: Any) -> Optional[str]:
    """`recipe:<kind>:<stored folder>` for an Engine whose artifact is a recipe, else None."""
    image = _old_image(engine_doc)
    sha = image.get("sha256")
    if not sha:
        return None
    folder = recipes_dir(home_root(home)) / sha
    if not (folder / "recipe.json").is_file():
        _fetch_recipe(sha, home)
    if not (folder / "recipe.json").is_file():
        from ..errors import ConfigError

        location = location_for(home)
        where = (f"neither stored at {folder} nor in {location.url}" if location.remote
                 else f"no longer stored at {folder}")
        raise ConfigError(f"Engine {engine_doc.get('id')} ({engine_doc.get('name')}): its recipe "
                          f"artifact sha256:{sha} is {where}; register the recipe again")
    return reference(load_recipe_info(folder).kind, folder)


def _fetch_recipe(sha: str, home: Any) -> None:
    """A recipe this store lacks, stored as if registered here once its sha256 is checked: from
    the home's own store (registered before MLRUNTIME_ARTIFACTS named a shared folder), else
    fetched from the shared location (a bucket); nothing when neither has it."""
    import shutil
    import uuid

    store = recipes_dir(home_root(home))
    own = location_for_home_only(home).recipes_root / sha
    if own.parent != store and (own / "recipe.json").is_file():
        _store_checked(stored_source(own), sha, home)
        return
    store.mkdir(parents=True, exist_ok=True)
    work = store / f".fetch-{sha[:12]}-{uuid.uuid4().hex[:8]}"
    try:
        _store_checked(location_for(home).fetch_recipe(sha, work), sha, home)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _store_checked(source: Any, sha: str, home: Any) -> None:
    if source is None:
        return
    info = store_artifact(source, None, home)
    if info.sha256 != sha:
        raise InvalidArtifact(f"The recipe found for sha256:{sha} ({source}) stored as "
                              f"sha256:{info.sha256}")
