"""A recipe run's extras, for the execution layer: the keys the platform injected into
config_properties, and the recipe's own environment (built once, see runtime/envs)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, TextIO

from ..artifacts import RecipeInfo
from ..recipe_kinds import kind_named
from ..tasks import SCORE, TRAIN

ENV_MANAGERS = ("uv", "local")
ENV_MANAGER_VAR = "MLRUNTIME_ENV_MANAGER"
MODEL_SUBDIR = "model"        # the worker's model folder inside the run folder
LOCAL_CLIENT_ID = "mlruntime-local"


def default_env_manager() -> str:
    value = (os.environ.get(ENV_MANAGER_VAR) or "uv").strip().lower()
    if value not in ENV_MANAGERS:
        from ..errors import ConfigError

        raise ConfigError(f"{ENV_MANAGER_VAR}={value!r}: expected one of {', '.join(ENV_MANAGERS)}")
    return value


def injected_values(values: dict[str, Any], *, mode: str, org: str, sandbox: str, run_dir: Path,
                    model_dir: Optional[Path]) -> dict[str, Any]:
    """`values` with the keys the platform handed every recipe. The run's own folders and sandbox
    always win; credentials get local stand-ins unless the configuration sets them."""
    out = dict(values)
    credentials = {
        "ML_FRAMEWORK_IMS_USER_CLIENT_ID": LOCAL_CLIENT_ID,
        "ML_FRAMEWORK_IMS_CLIENT_ID": LOCAL_CLIENT_ID,
        "ML_FRAMEWORK_IMS_TENANT_ID": org,
        "ML_FRAMEWORK_IMS_ORG_ID": org,
        "ML_FRAMEWORK_IMS_TOKEN": "local-user-token",
        "ML_FRAMEWORK_IMS_ML_TOKEN": "local-service-token",
        "USER_SCRATCH_SPACE_PARAMS": str(run_dir / "scratch"),
    }
    for key, value in credentials.items():
        out.setdefault(key, value)
    out["sandboxId"] = sandbox
    out["sandboxName"] = sandbox
    if mode == TRAIN:
        out["modelPATH"] = str(run_dir / MODEL_SUBDIR)
    elif mode == SCORE and model_dir is not None:
        out["modelPATH"] = str(model_dir)
    out["logsPATH"] = str(run_dir / "logs")
    return out


def recipe_python(info: RecipeInfo, recipe_dir: Path, *, home: Any, extra_pip: list[str],
                  log: Optional[TextIO], env_manager: str) -> Optional[Path]:
    """The interpreter the recipe's worker runs with: its own environment (built once, by its
    kind's environment builder in runtime.recipe_kinds), or None for the runtime's own
    (--env-manager local, or a kind that runs here)."""
    kind = kind_named(info.kind)
    if env_manager == "local" and not kind.environment_always:
        return None
    build = kind.environment_builder()
    return build(info, recipe_dir, home=home, extra_pip=extra_pip, log=log)


def python_environment(info: RecipeInfo, recipe_dir: Path, *, home: Any, extra_pip: list[str],
                       log: Optional[TextIO], profile: Optional[str] = None,
                       pins: tuple[str, ...] = ()) -> Path:
    """A Python recipe's own uv environment: its requirements, then `pins` and --pip's."""
    # A stored recipe never changes (its folder is named by its digest): once this process has
    # its environment, a later run only checks that the interpreter is still there.
    key = _key(info, recipe_dir, extra_pip, home)
    known = _READY.get(key)
    if known is not None and known.is_file():
        if log is not None:
            log.write(f"[env] environment ready: {known.parent.parent}\n")
        return known
    from ..envs import ensure_env

    env = ensure_env(recipe_dir=info.root_dir(recipe_dir), requirements=list(info.requirements),
                     extra_pip=[*pins, *extra_pip], home=home, log=log,
                     **({"profile": profile} if profile else {}))
    _READY[key] = Path(env.python)
    return Path(env.python)


def pyspark_environment(info: RecipeInfo, recipe_dir: Path, *, home: Any, extra_pip: list[str],
                        log: Optional[TextIO]) -> Optional[Path]:
    """A PySpark recipe's interpreter: this one when it has all the recipe needs, else an
    environment of the runtime's Spark stack, pinned, under the recipe's own needs."""
    if not extra_pip:
        # The platform ran PySpark recipes on its runtime image, whose libraries their requirements
        # mostly name again: when this interpreter (which has pyspark) satisfies every requirement
        # that is not a platform library, the recipe runs here rather than in a copy of it.
        platform, here, unmet = _sort_requirements(info.requirements)
        if not unmet:
            if log is not None and info.requirements:
                log.write("[env] no environment to build: " + "; ".join(filter(None, [
                    here and f"this runtime's interpreter satisfies {', '.join(here)}",
                    platform and f"{', '.join(platform)}: the platform's, provided by the "
                                 "runtime (runtime/compat)"])) + "\n")
            return None
    return python_environment(info, recipe_dir, home=home, extra_pip=extra_pip, log=log,
                              profile="bare", pins=tuple(pyspark_pins()))


_READY: dict[tuple, Path] = {}


def _sort_requirements(requirements: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(the platform's own libraries, which runtime/compat provides; those this interpreter
    satisfies, markers that exclude this platform included; the rest)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    from ..envs.profiles import provided_by_runtime

    platform, here, unmet = [], [], []
    for line in requirements:
        if provided_by_runtime(line):
            platform.append(line)
            continue
        try:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate():
                here.append(line)                # not for this platform
            elif requirement.url:
                unmet.append(line)               # a URL is for an environment to install
            elif requirement.specifier.contains(version(requirement.name), prereleases=True):
                here.append(line)
            else:
                unmet.append(line)
        except (InvalidRequirement, PackageNotFoundError):
            unmet.append(line)
    return platform, here, unmet


def pyspark_pins() -> list[str]:
    """pyspark and what its driver needs (py4j; pandas, numpy, pyarrow for toPandas and Arrow) at
    the runtime's own versions: a PySpark recipe's environment talks to the same Spark."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in ("pyspark", "py4j", "pandas", "numpy", "pyarrow"):
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            if name == "pyspark":
                from ..errors import MissingDependency

                raise MissingDependency("pyspark", "spark") from None
    return pins


def _key(info: RecipeInfo, recipe_dir: Path, extra_pip: list[str], home: Any) -> tuple:
    return (str(Path(recipe_dir).resolve()), tuple(info.requirements), tuple(extra_pip), str(home))


def environment_known(info: RecipeInfo, recipe_dir: Path, extra_pip: list[str], home: Any) -> bool:
    """Whether this process already has the recipe's environment (nothing to prepare)."""
    known = _READY.get(_key(info, recipe_dir, extra_pip, home))
    return known is not None and known.is_file()


def engine_extra_pip(engine_doc: dict[str, Any]) -> list[str]:
    """Extra requirements named on the Engine: `artifacts.default.image.requirements` (a list or
    comma-separated text)."""
    from ..schemas import engine_image

    return engine_image(engine_doc).extra_requirements


def check_recipe_model(model: dict[str, Any]) -> None:
    """A recipe scores only with a Model this runtime trained (and recorded a digest for)."""
    if not model.get("modelArtifactDigest"):
        from .base import ModelRefused

        raise ModelRefused(
            f"Model {model.get('id')} ({model.get('name')}) has no digest recorded by this runtime "
            "(uploaded through POST /models, or trained by another engine): a recipe's model is "
            "pickled Python, and this runtime loads only models it trained itself. Train the "
            "recipe here to score with it")
