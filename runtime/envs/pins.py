"""Requirement lines as the builder handles them: validated, normalised into pins, the profile's
pins a recipe's own requirement replaces, and the platform library a failed check is about.
"""
from __future__ import annotations

import re
from typing import Sequence

from ..errors import ConfigError
from .profiles import WORKER_REQUIREMENTS, Profile, provided_by_runtime

# A problem line of `uv pip check` ("The package `a` requires `b==1`, but it's not installed") or
# `pip check` ("a 1.0 requires b, which is not installed.", "a 1.0 has requirement b==2, ...").
CHECK_PROBLEM = re.compile(r"\brequires\b|has requirement|is not supported|incompatible", re.I)
_MISSING_REQUIREMENT = re.compile(
    r"requires `?([A-Za-z0-9][A-Za-z0-9._-]*)[^,]*?`?,? (?:but it's|which is) not installed")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def normalize_pin(line: str) -> str:
    name, sep, rest = line.partition("==")
    if not sep:
        return line.strip()
    return f"{canonical(name.strip())}=={rest.strip()}"


def validate_requirement(line: str) -> None:
    from packaging.requirements import InvalidRequirement, Requirement
    try:
        Requirement(line)
    except InvalidRequirement as exc:
        raise ConfigError(f"Invalid requirement {line!r}: {exc}") from None


def profile_pins(profile: Profile, own: Sequence[str], say) -> list[str]:
    """The profile's pins, less each image pin that the recipe's own requirement for the same
    package excludes: the profile stands for the platform's image, where installing a recipe that
    asks for `numpy<1.24` replaced the image's numpy. The worker's own needs always stay (a clash
    with them is the resolver's error)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted: dict[str, list] = {}
    for line in own:
        req = Requirement(line)
        wanted.setdefault(canonicalize_name(req.name), []).append(req)
    out = []
    for pin in profile.requirements:
        req = Requirement(pin)
        name = canonicalize_name(req.name)
        version = next(iter(req.specifier)).version
        clash = [r for r in wanted.get(name, ())
                 if r.url or not r.specifier.contains(version, prereleases=True)]
        if clash and pin not in WORKER_REQUIREMENTS:
            say(f"{name}: the recipe asks for {clash[0]}, which replaces the profile's {pin}")
            continue
        out.append(pin)
    return out


def provided_requirement(line: str) -> str | None:
    """The platform library a check's "requires X, which is not installed" line is about."""
    match = _MISSING_REQUIREMENT.search(line)
    return provided_by_runtime(match.group(1)) if match else None
