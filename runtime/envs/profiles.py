"""Runtime profiles: the pinned sets a recipe environment starts from, written down in one place.

A profile stands for one of the platform's runtime images. Its `version` goes into every
environment key, so changing a pin (and bumping the version) builds new environments instead of
silently changing old ones. README's "Recipe environments" section lists these pins; a test keeps
the two in step.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["DEFAULT_PROFILE", "PLATFORM_LIBRARIES", "PROFILES", "Profile", "WORKER_REQUIREMENTS",
           "get_profile", "provided_by_runtime"]

# What `python -m runtime.worker` itself imports inside a recipe environment (the runtime's own
# source reaches the environment through a .pth file, its dependencies do not): pydantic 2 for the
# spec and the engine contract, pyyaml for parameter files and application.yaml, threadpoolctl to
# set a warm child's thread pools (runtime.forkserver: its parent imported BLAS with one thread).
WORKER_REQUIREMENTS: tuple[str, ...] = (
    "pydantic==2.10.6",
    "pyyaml==6.0.2",
    "threadpoolctl==3.5.0",
)


# The platform's own libraries, which its runtime images supplied and this runtime provides itself
# (runtime/compat): a requirement naming one is never installed, so the package it would install
# (a top-level `sdk` from PyPI's model-authoring-sdk-pyspark, say) cannot shadow ours. Keys are
# canonical distribution names (PEP 503); values the compat packages that stand for them.
PLATFORM_LIBRARIES: dict[str, tuple[str, ...]] = {
    "model-authoring-sdk-pyspark": ("sdk",),   # the PySpark recipes' SDK (requirements.txt)
    "model-authoring-sdk": ("sdk",),           # its older name (`#egg=model_authoring_sdk`)
    "platform-sdk": ("platform_sdk",),         # the Platform SDK for Python (`platform_sdk`)
    "ml-runtime": ("ml",),                     # `ml.runtime`, spelled as a requirement
}


def provided_by_runtime(requirement: str) -> str | None:
    """The canonical name of the platform library `requirement` names, or None for any other
    requirement (unparsable text is left to the caller's validation)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        name = canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return None
    return name if name in PLATFORM_LIBRARIES else None


@dataclass(frozen=True)
class Profile:
    name: str
    version: int                       # bump whenever `requirements` change
    requirements: tuple[str, ...]      # exact pins (name==version), worker needs included
    description: str


PROFILES: dict[str, Profile] = {
    profile.name: profile for profile in (
        Profile(
            name="python",
            version=2,
            description="the platform's Python image (adobe/acp-dsw-ml-runtime-python): pandas 1.x, "
                        "numpy 1.x, scikit-learn, pyarrow",
            requirements=(
                "pandas==1.5.3",        # the last 1.x: Series.dt.week, positional dropna(0, ...)
                "numpy==1.26.4",        # the last 1.x
                "scikit-learn==1.3.2",  # the last release built against numpy 1.x only
                "scipy==1.11.4",        # scikit-learn's, pinned so it stays on numpy 1.x
                "pyarrow==14.0.2",      # Parquet for pandas 1.5 and DatasetWriter
                *WORKER_REQUIREMENTS,
            ),
        ),
        Profile(
            name="bare",
            version=2,
            description="only what the runtime's worker needs; the recipe brings everything else",
            requirements=WORKER_REQUIREMENTS,
        ),
    )
}

DEFAULT_PROFILE = "python"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"Unknown environment profile {name!r}: expected one of "
                          f"{', '.join(sorted(PROFILES))}") from None
