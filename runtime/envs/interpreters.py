"""The Pythons an environment can be made from: this process's own, and the others of this host
that run the worker, chosen by the recipe's python_requires; and what uv or pip said when a
resolution failed because of the Python it was made for.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, PythonUnavailable
from .recipe import RecipeSource

MIN_WORKER_PYTHON = (3, 10)              # the runtime's own source runs in the environment

NEEDS_PYTHON = re.compile(r"does\s+not\s+satisfy\s+Python\s*([<>=!~][^\s,]*(?:\s*,\s*[<>=!~][^\s,]*)*)")
# What uv and pip say when a resolution fails because of the target Python (no wheel for its
# version or ABI, a Requires-Python it does not meet): another Python of the host may do.
# uv wraps its messages to the terminal's width, so any space may be a line break and an indent.
PYTHON_BOUND = re.compile(r"matching\s+Python\s+(?:ABI|version|implementation)\s+tag|does\s+not"
                          r"\s+satisfy\s+Python|current\s+Python\s+version|require\s+a\s+"
                          r"different\s+python\s+version|Requires-Python", re.IGNORECASE)


@dataclass(frozen=True)
class Python:
    path: Path
    version: str            # 3.11.7
    identity: str           # cpython-3.11.7-linux-x86_64: what the key holds


def interpreter(path: Path) -> Python:
    """The interpreter at `path`, asked by running it (a pyenv shim of a version that is not
    installed fails here); its path is the base interpreter it runs (not a shim or a venv's)."""
    out = subprocess.run(
        [str(path), "-I", "-c", "import sys, platform, sysconfig; "
         "print(sys.implementation.name, platform.python_version(), sysconfig.get_platform(), "
         "getattr(sys, '_base_executable', None) or sys.executable)"],
        capture_output=True, text=True, timeout=60, check=True).stdout.split()
    name, version, plat, exe = out[0], out[1], out[2], out[3]
    real = Path(exe) if exe and Path(exe).exists() else Path(path)
    return Python(path=real, version=version, identity=f"{name}-{version}-{plat}")


def own_python() -> Python:
    base = Path(getattr(sys, "_base_executable", None) or sys.executable)
    import platform
    import sysconfig
    version = platform.python_version()
    return Python(path=base if base.exists() else Path(sys.executable), version=version,
                  identity=f"{sys.implementation.name}-{version}-{sysconfig.get_platform()}")


def choose_python(recipe: RecipeSource | None, uv: str | None) -> Python:
    """The runtime's own Python unless the recipe's python_requires excludes it; then the Python
    on this host closest to it that satisfies it (and runs the worker), or PythonUnavailable
    naming what is needed. (What the pins can install is tried later, by the builder.)"""
    own = own_python()
    spec_text = recipe.metadata.python_requires if recipe else None
    if not spec_text:
        return own
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    try:
        spec = SpecifierSet(spec_text)
    except InvalidSpecifier:
        raise ConfigError(f"The recipe's python_requires {spec_text!r} is not a valid version "
                          "specifier") from None
    if spec.contains(own.version, prereleases=True):
        return own
    for candidate in other_pythons(own, recipe, uv):
        return candidate
    raise PythonUnavailable(
        f"The recipe needs Python {spec_text} (python_requires), but this host has "
        f"{describe_pythons(own, uv)}. Install a Python {spec_text} ({dotted(MIN_WORKER_PYTHON)} "
        "or newer: the runtime's worker runs in the environment) and run again",
        needed=spec_text, build_log="")


def other_pythons(failed: Python, recipe: RecipeSource | None, uv: str | None) -> list[Python]:
    """This host's Pythons other than `failed`'s version, one per minor version, that run the
    worker and satisfy the recipe's python_requires: closest to `failed` first, the older one
    first when two are as close (pins too old for a Python are the common case)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    spec = None
    if recipe is not None and recipe.metadata.python_requires:
        try:
            spec = SpecifierSet(recipe.metadata.python_requires)
        except InvalidSpecifier:
            spec = None
    base = version_tuple(failed.version)[:2]
    chosen: dict[tuple[int, ...], Python] = {}
    for python in host_pythons(uv):
        minor = version_tuple(python.version)[:2]
        if minor == base or minor < MIN_WORKER_PYTHON or minor in chosen:
            continue
        if spec is not None and not spec.contains(python.version, prereleases=True):
            continue
        chosen[minor] = python
    return sorted(chosen.values(), key=lambda p: (abs(version_tuple(p.version)[1] - base[1]),
                                                  version_tuple(p.version)))


@functools.lru_cache(maxsize=4)
def host_pythons(uv: str | None) -> tuple[Python, ...]:
    """The CPython interpreters of this host that actually run (each one asked, once per
    process), newest first: python3.X on PATH, the ones uv installed (`uv python dir`), pyenv's
    versions ($PYENV_ROOT, else ~/.pyenv) and the usual system folders. pyenv's shims are not
    asked (slow, and a shim of a version that is not installed fails): its versions are."""
    candidates: list[Path] = []
    for minor in range(8, 20):
        exe = shutil.which(f"python3.{minor}")
        if exe and Path(exe).parent.name != "shims":
            candidates.append(Path(exe))
    if uv:
        try:
            managed = subprocess.run([uv, "python", "dir"], capture_output=True, text=True,
                                     timeout=30).stdout.strip()
            if managed:
                candidates += sorted(Path(managed).glob("cpython-3.*/bin/python3"))
        except (OSError, subprocess.SubprocessError):
            pass
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():
        candidates += sorted(pyenv.glob("3.*/bin/python3"))
    for folder in ("/usr/local/bin", "/usr/bin"):
        candidates += sorted(Path(folder).glob("python3.[0-9]*"))
    unique = list(dict.fromkeys(c for c in candidates
                                if c.is_file() and not c.name.endswith("-config")))

    def ask(path: Path) -> Python | None:
        try:
            python = interpreter(path)
        except (OSError, subprocess.SubprocessError, IndexError, ValueError):
            return None
        return python if python.identity.startswith("cpython-") else None

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = [p for p in pool.map(ask, unique) if p is not None]
    by_identity = {}
    for python in found:
        by_identity.setdefault(python.identity, python)
    return tuple(sorted(by_identity.values(), key=lambda p: version_tuple(p.version),
                        reverse=True))


def describe_pythons(own: Python, uv: str | None) -> str:
    versions = sorted({own.version, *(p.version for p in host_pythons(uv))}, key=version_tuple)
    return "Python " + ", ".join(versions)


def available_pythons(uv: str | None) -> str:
    return "this host has " + describe_pythons(own_python(), uv)


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


# --- what the resolver said about the Python ----------------------------------------------------

def unwrapped(out: str) -> str:
    """uv's output with the lines it wrapped to the terminal's width joined again (a wrapped
    line goes on, indented, on the next)."""
    return re.sub(r"[ \t]*\n[ \t]+(?=[^\s×╰│|])", " ", out)


def python_reason(out: str) -> str:
    """uv's or pip's sentence saying why the resolution needs another Python, shortened."""
    for line in unwrapped(out).splitlines():
        if PYTHON_BOUND.search(line):
            line = re.sub(r"^\W*(?:cause:|hint:|error:)?\s*", "", line.strip(), flags=re.I)
            line = re.sub(r"^Because\s+", "", line)
            line = re.split(r",? and you require|, we can conclude", line)[0]
            return line[:240].rstrip(" ,.")
    return ""


def needed_from(out: str) -> str:
    out = unwrapped(out)
    match = NEEDS_PYTHON.search(out)
    if match:
        return match.group(1).replace(" ", "")
    tags = re.search(r"following Python (?:ABI|version) tags?: (.+)", out)
    if tags:
        return "a Python with wheels: " + tags.group(1).replace("`", "").strip().rstrip(".")
    return "another Python"
