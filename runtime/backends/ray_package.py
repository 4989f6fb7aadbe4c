"""What travels with a Ray job: the package uploaded with it (the worker's spec, the job's settings,
the model a score run uses, a user's recipe), the runtime's own code, and a recipe's environment
as the runtime_env `uv` (or `pip`) field, with the pins its local environment was built from.

Nothing here names a path of the submitting machine to the job: a head and workers that share no
disk with the submitter run it. `ray` is not imported here.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ConfigError
from . import SPEC_FILE, WorkerSpec
from .ray_job import JOB_FILE, MODEL_DIR, RECIPE_DIR

__all__ = ["ENV_TOOL", "RecipeJob", "check_python", "cluster_python", "job_code", "recipe_job",
           "stage"]

ENV_TOOL = "MLRUNTIME_RAY_ENV_TOOL"     # uv (default) or pip: the runtime_env field a recipe gets
_STAGE_PREFIX = "mlrt_job_"
_INDEX_VARS = ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_INDEX", "UV_DEFAULT_INDEX",
               "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
_CODE_EXCLUDES = ("__pycache__", "*.pyc")


@dataclass(frozen=True)
class RecipeJob:
    """A user's recipe as a job takes it: its stored folder (packed into the job's package), and
    the pins of its environment (empty: it runs in the cluster's Python, as locally it ran in the
    runtime's own) with the Python that environment was built for."""

    kind: str
    folder: Path
    name: str
    pins: list[str] = field(default_factory=list)
    python_version: Optional[str] = None
    python_note: str = ""

    def runtime_env(self, tool: Optional[str] = None) -> dict[str, Any]:
        """The runtime_env fields that make the recipe's environment on each node, cached by Ray
        per node under the hash of the pins (uv's own cache on the node makes a new one cheap)."""
        if not self.pins:
            return {}
        tool = (tool or os.environ.get(ENV_TOOL) or "uv").strip().lower()
        if tool not in ("uv", "pip"):
            raise ConfigError(f"{ENV_TOOL}={tool!r}: expected uv or pip")
        fields: dict[str, Any] = {tool: {"packages": list(self.pins)}}
        if tool == "uv":   # Ray's default (--no-cache) would download every package again
            fields["uv"]["uv_pip_install_options"] = []
        index = {k: os.environ[k] for k in _INDEX_VARS if os.environ.get(k)}
        if index:          # the index the pins were resolved from
            fields["env_vars"] = index
        return fields


def recipe_job(spec: WorkerSpec, python: Optional[str]) -> Optional[RecipeJob]:
    """The recipe `spec` runs, or None for an engine plugin. `python` is the interpreter of the
    recipe's local environment (None: none was built). A PySpark recipe is refused: Ray runs no
    Spark application of ours."""
    from ..recipes import is_reference, parse_reference

    if not is_reference(spec.engine):
        return None
    kind, folder = parse_reference(spec.engine)
    from ..artifacts import load_recipe_info

    info = load_recipe_info(folder)
    if kind == "pyspark":
        raise ConfigError(
            f"Recipe {info.name!r} is a PySpark recipe: a Ray job does not run Spark applications. "
            "Run it on a Spark cluster instead: run train|score ... --spark-master "
            "spark://HOST:7077 (or a server started with --spark-master spark://HOST:7077)")
    if python is None:
        return RecipeJob(kind=kind, folder=folder, name=info.name)
    pins, meta = _environment_pins(Path(python), info.name)
    return RecipeJob(kind=kind, folder=folder, name=info.name, pins=pins,
                     python_version=meta.get("python_version"),
                     python_note=_python_note(Path(python)))


def _environment_pins(python: Path, recipe_name: str) -> tuple[list[str], dict[str, Any]]:
    """The pins a local recipe environment was built from (its requirements.lock), less the
    recipe's own line (a file:// URL here; the recipe travels in the job's package)."""
    from ..envs.layout import LOCK_FILE, read_meta

    env = python.parent.parent
    try:
        lines = (env / LOCK_FILE).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"The recipe's environment {env} has no readable {LOCK_FILE} ({exc}): "
                          "rebuild it with run envs build --refresh") from exc
    meta = read_meta(env)
    own = meta.get("recipe_name")
    pins = []
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        name, sep, url = line.partition(" @ ")
        if sep and url.strip().startswith("file:"):
            if own and _canonical(name) == _canonical(own):
                continue
            raise ConfigError(f"Recipe {recipe_name!r}: its environment installs {name.strip()} "
                              f"from a file on this machine ({url.strip()}), which a Ray cluster "
                              "cannot install: give it as a requirement of a package index")
        pins.append(line)
    return pins, meta


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _python_note(python: Path) -> str:
    """Why the local environment has the Python it has (the build log's line, when another
    Python than the runtime's was chosen)."""
    from ..envs.layout import BUILD_LOG

    try:
        for line in (python.parent.parent / BUILD_LOG).read_text().splitlines():
            if " chosen: " in line:
                return line.removeprefix("[env] ").strip()
    except OSError:
        pass
    return ""


def cluster_python(address: str) -> Optional[str]:
    """The Python version the Ray cluster at `address` runs (its metadata, from the dashboard);
    None when it cannot be read."""
    import requests

    try:
        resp = requests.get(f"{address.rstrip('/')}/api/v0/cluster_metadata", timeout=10)
        data = resp.json()
        return str(data.get("data", data).get("pythonVersion") or "") or None
    except Exception:   # an older dashboard, a proxy: the job's own install says it then
        return None


def check_python(recipe: RecipeJob, address: str, run_id: str,
                 notify: Callable[[str], None]) -> None:
    """Refuse, before submitting, a recipe whose pins were resolved for another Python (major and
    minor) than the cluster's: its environment could not be installed there."""
    if not recipe.pins or not recipe.python_version:
        return
    cluster = cluster_python(address)
    if cluster is None:
        notify(f"warning: cannot read the Python version of the Ray cluster at {address}; the "
               f"recipe's pins were resolved for Python {recipe.python_version}")
        return
    if _minor(cluster) == _minor(recipe.python_version):
        return
    why = f" ({recipe.python_note})" if recipe.python_note else ""
    raise ConfigError(
        f"Run {run_id}: recipe {recipe.name!r} needs Python {_minor(recipe.python_version)}: its "
        f"environment was resolved for Python {recipe.python_version}{why}; the Ray cluster at "
        f"{address} runs Python {cluster}, where these pins cannot be installed as they are. "
        f"Run it on a cluster of Python {_minor(recipe.python_version)}, or change the recipe's "
        "pins so they install on the cluster's Python. Nothing was submitted")


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


# --- the job's code ------------------------------------------------------------------------------

def job_code(engine: str) -> tuple[str, list[Path]]:
    """(the engine as the job names it, the code packages uploaded with it): the `runtime`
    package always; for an engine plugin of this checkout (`noop`, `retail-sales`), its `module:
    Class` and its top package, so the job needs no installed distribution. The node's Python
    needs Ray and the engine's own libraries (torch, pandas), nothing of the runtime."""
    from ..recipes import is_reference

    runtime_dir = Path(__file__).resolve().parents[1]
    modules = [runtime_dir]
    if is_reference(engine):
        return engine, modules
    from ..engine import installed_engines

    entry = installed_engines().get(engine)
    if entry is not None:
        engine = entry.value
    top = engine.partition(":")[0].split(".")[0]
    if ":" in engine and top != "runtime":
        try:
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            found = None
        locations = list(getattr(found, "submodule_search_locations", None) or [])
        if locations and Path(locations[0]).resolve().parent == runtime_dir.parent:
            modules.append(Path(locations[0]).resolve())   # this checkout's own engines
    return engine, modules


def code_excludes() -> list[str]:
    return list(_CODE_EXCLUDES)


# --- the job's package ---------------------------------------------------------------------------

def stage(spec: WorkerSpec, artifacts: str, return_limit_mb: float,
          recipe: Optional[RecipeJob] = None) -> Path:
    """A package folder uploaded with the job (runtime_env py_modules): the spec, the job's
    settings and, when they travel, the model a score run uses and the recipe (each as one tar
    file, so no upload exclude pattern can drop a folder of theirs)."""
    module = _STAGE_PREFIX + hashlib.sha1(f"{spec.run_id}-{uuid.uuid4()}".encode()).hexdigest()[:16]
    folder = Path(tempfile.mkdtemp(prefix="mlrt-stage-")) / module
    folder.mkdir()
    (folder / "__init__.py").write_text('"""Inputs of one MLInstance Runtime job."""\n')
    model_dir = spec.model_dir
    if artifacts == "return" and spec.model_dir is not None:
        source = Path(spec.model_dir)
        if source.exists():
            _tar(folder / f"{MODEL_DIR}.tar", source, keep_name=source.is_file())
        model_dir = None
    job: dict[str, Any] = {"artifacts": artifacts, "run_dir": str(Path(spec.run_dir).resolve()),
                           "return_limit_mb": return_limit_mb}
    if recipe is not None:
        # The stored recipe (its recipe.json and unpacked tree; not the uploaded archive)
        _tar(folder / f"{RECIPE_DIR}.tar", recipe.folder, skip=("artifact.",))
        job["recipe"] = {"kind": recipe.kind, "name": recipe.name}
        job["model_dir"] = str(spec.model_dir) if spec.model_dir is not None else None
    spec.model_copy(update={"model_dir": model_dir}).write(folder / SPEC_FILE)
    (folder / JOB_FILE).write_text(json.dumps(job))
    return folder


def _tar(target: Path, source: Path, *, keep_name: bool = False, skip: tuple[str, ...] = ()) -> None:
    with tarfile.open(target, "w") as tar:
        if keep_name:
            tar.add(source, arcname=source.name)
            return
        for child in sorted(source.iterdir()):
            if child.name.startswith(skip) or child.name == "__pycache__":
                continue
            tar.add(child, arcname=child.name,
                    filter=lambda info: None if "__pycache__" in info.name.split("/") else info)


def unstage_dir(stage_folder: Path) -> None:
    shutil.rmtree(stage_folder.parent, ignore_errors=True)
