"""Build (or find) the virtual environment a recipe runs in.

resolve -> key -> lock -> build in a temporary folder -> check -> rename into place:

- The key is a digest of what was *resolved* (the interpreter, the sorted pins uv or pip chose,
  the index settings, the profile's version, the recipe's content digest), never of the text of
  requirement files: two spellings of one set share an environment, and a new release of an
  unpinned dependency gets a new one.
- One file lock per key: concurrent runs that need the same new environment build it once; the
  others wait and reuse it. A failed build leaves nothing behind.
- The environment is isolated (no system site-packages, no user site): an import the recipe did
  not declare fails at build time, when its entry points are imported as the last check.
- uv's cache lives in HOME/cache/uv, on the same file system as HOME/envs, so packages are
  hard-linked from the cache rather than copied, and the cache persists across builds.

The last resolution of a request is remembered for `MLRUNTIME_ENV_RESOLVE_TTL_S` seconds (default
one day) so that second and later runs cost no index round trip; after that, or with
`refresh=True`, the request is resolved again and lands on the same key when nothing changed.
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence, TextIO

from ..digests import digest
from ..errors import ConfigError, EnvBuildError, PythonUnavailable
from ..recipe_metadata import read_recipe_metadata
from .profiles import (DEFAULT_PROFILE, PLATFORM_LIBRARIES, WORKER_REQUIREMENTS, Profile,
                       get_profile, provided_by_runtime)
from .recipe import RecipeSource, recipe_source, requirements_file

__all__ = ["EnvInfo", "EnvPlan", "ensure_env", "envs_dir", "plan_env", "uv_cache_dir",
           "find_uv", "runtime_source_root", "compat_dir"]

LAYOUT_VERSION = 1                       # of the folder layout below; part of every key
META_FILE = "mlruntime-env.json"         # written last before the rename: its presence = complete
LOCK_FILE = "requirements.lock"
IN_FILE = "requirements.in"
FREEZE_FILE = "pip-freeze.txt"
BUILD_LOG = "build.log"
LAST_USED = "last-used"
PTH_FILE = "mlruntime.pth"
RUNTIME_LINK_DIR = "runtime-src"         # <env>/runtime-src/runtime -> the runtime package
MIN_WORKER_PYTHON = (3, 10)              # the runtime's own source runs in the environment

ENV_RESOLVE_TTL = "MLRUNTIME_ENV_RESOLVE_TTL_S"
ENV_TOOL = "MLRUNTIME_ENV_TOOL"          # uv (default) | pip: force the fallback
ENV_MAX_SIZE = "MLRUNTIME_ENVS_MAX_SIZE"
DEFAULT_RESOLVE_TTL_S = 24 * 3600
DEFAULT_TIMEOUT_S = 1800.0
# Index settings change what a pin means (the same name==version from another index may be
# another file), so they are part of the key.
_INDEX_VARS = {
    "uv": ("UV_INDEX", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
           "UV_INDEX_STRATEGY", "UV_NO_INDEX"),
    "pip": ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"),
}
_NEEDS_PYTHON = re.compile(r"does\s+not\s+satisfy\s+Python\s*([<>=!~][^\s,]*(?:\s*,\s*[<>=!~][^\s,]*)*)")
# A problem line of `uv pip check` ("The package `a` requires `b==1`, but it's not installed") or
# `pip check` ("a 1.0 requires b, which is not installed.", "a 1.0 has requirement b==2, ...").
_CHECK_PROBLEM = re.compile(r"\brequires\b|has requirement|is not supported|incompatible", re.I)
_MISSING_REQUIREMENT = re.compile(
    r"requires `?([A-Za-z0-9][A-Za-z0-9._-]*)[^,]*?`?,? (?:but it's|which is) not installed")
# What uv and pip say when a resolution fails because of the target Python (no wheel for its
# version or ABI, a Requires-Python it does not meet): another Python of the host may do.
# uv wraps its messages to the terminal's width, so any space may be a line break and an indent.
_PYTHON_BOUND = re.compile(r"matching\s+Python\s+(?:ABI|version|implementation)\s+tag|does\s+not"
                           r"\s+satisfy\s+Python|current\s+Python\s+version|require\s+a\s+"
                           r"different\s+python\s+version|Requires-Python", re.IGNORECASE)


@dataclass(frozen=True)
class EnvInfo:
    """A ready environment: `python` is its interpreter (start the worker with it)."""

    python: Path
    key: str
    path: Path
    cached: bool = False            # True when an existing environment was reused
    tool: str = "uv"


@dataclass(frozen=True)
class EnvPlan:
    """What `ensure_env` would do, without building: for --dry-run / --explain."""

    key: str | None                 # None when the request was never resolved (not yet built)
    path: Path | None
    python: Path | None             # the environment's interpreter once it exists
    base_python: Path               # the interpreter the environment is made from
    ready: bool
    profile: str
    requirements: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.ready:
            return f"{self.python} (environment {self.key}, profile {self.profile}, ready)"
        return (f"a new environment (profile {self.profile}, Python from {self.base_python}; "
                "built before the run starts)")


# --- locations -------------------------------------------------------------------------------

def _home_root(home) -> Path:
    """A runtime home: a path, or a `runtime.home.Home` (its `root`)."""
    if not isinstance(home, (str, os.PathLike)):
        home = home.root
    return Path(home).expanduser().resolve()


def envs_dir(home) -> Path:
    return _home_root(home) / "envs"


ENV_UV_CACHE_DIR = "MLRUNTIME_UV_CACHE_DIR"


def uv_cache_dir(home) -> Path:
    """HOME/cache/uv, or one cache shared by several homes (MLRUNTIME_UV_CACHE_DIR): keep it on
    the homes' file system, or packages are copied instead of hard-linked."""
    shared = os.environ.get(ENV_UV_CACHE_DIR)
    return Path(shared).expanduser() if shared else _home_root(home) / "cache" / "uv"


def runtime_source_root() -> Path:
    """The folder holding the `runtime` package this process runs."""
    return Path(__file__).resolve().parents[2]


def _runtime_package() -> Path:
    return Path(__file__).resolve().parents[1]


def compat_dir() -> Path:
    """runtime/compat: the platform's libraries (platform_sdk, ml, sdk), for recipe envs only."""
    return Path(__file__).resolve().parents[1] / "compat"


@functools.lru_cache(maxsize=1)
def find_uv() -> str | None:
    """The uv binary of the `uv` package (a dependency of the runtime), else one on PATH; None
    when neither runs here (then environments are built with venv + pip)."""
    candidates = []
    try:
        from uv import find_uv_bin
        candidates.append(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    if shutil.which("uv"):
        candidates.append(shutil.which("uv"))
    for candidate in candidates:
        try:
            subprocess.run([candidate, "--version"], capture_output=True, timeout=30, check=True)
            return candidate
        except (OSError, subprocess.SubprocessError):
            continue
    return None


# --- the entry point --------------------------------------------------------------------------

def ensure_env(*, recipe_dir: Path | None, requirements: Sequence[str], profile: str = DEFAULT_PROFILE,
               extra_pip: Sequence[str] = (), home, log: TextIO | None = None,
               tool: str | None = None, refresh: bool = False,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> EnvInfo:
    """The environment for this recipe + profile + requirements, built if it does not exist.

    Raises PythonUnavailable (the pins need a Python this host lacks), EnvBuildError (resolution,
    install or check failed; `.build_log` has uv's/pip's output) or ConfigError (bad input).
    """
    builder = _Builder(home=home, recipe_dir=recipe_dir, requirements=requirements,
                       profile=profile, extra_pip=extra_pip, log=log, tool=tool,
                       timeout_s=timeout_s)
    return builder.ensure(refresh=refresh)


def plan_env(*, recipe_dir: Path | None, requirements: Sequence[str], profile: str = DEFAULT_PROFILE,
             extra_pip: Sequence[str] = (), home) -> EnvPlan:
    """Whether the environment `ensure_env` would return exists, without resolving or building
    (no network): the remembered resolution of the same request, if any."""
    builder = _Builder(home=home, recipe_dir=recipe_dir, requirements=requirements,
                       profile=profile, extra_pip=extra_pip, log=None, tool=None,
                       timeout_s=DEFAULT_TIMEOUT_S)
    return builder.plan()


# --- the builder ------------------------------------------------------------------------------

class _Builder:
    def __init__(self, *, home, recipe_dir, requirements, profile, extra_pip, log, tool,
                 timeout_s) -> None:
        self.root = envs_dir(home)
        self.cache = uv_cache_dir(home)
        self.profile: Profile = get_profile(profile)
        self.log = log
        self.timeout_s = timeout_s
        self.transcript: list[str] = []
        self.last_output, self.last_returncode = "", 0   # of the last command run
        self.recipe: RecipeSource | None = recipe_source(Path(recipe_dir)) if recipe_dir else None
        self.tool, self.uv = _choose_tool(tool)
        self.python = _choose_python(self.recipe, self.uv)
        self.requested = self._requested(requirements, extra_pip)
        # remembered under the request as asked: the Python may change while resolving
        self.memo_path = self.root / ".resolved" / f"{self.request_digest()}.json"

    # what was asked, as requirement lines (the recipe itself is added at resolution time)
    def _requested(self, requirements: Sequence[str], extra_pip: Sequence[str]) -> list[str]:
        own: list[str] = []          # the recipe's and the caller's: these win over the profile's
        if self.recipe is not None:
            own += self.recipe.metadata.requirements
        own += [str(r) for r in requirements]
        for item in extra_pip:
            item = str(item).strip()
            if item.endswith(".txt") and Path(item).expanduser().is_file():
                own += requirements_file(Path(item))
            elif item:
                own.append(item)
        own = [line.strip() for line in own if line.strip()]
        for line in own:
            _validate_requirement(line)
        self.substituted: dict[str, str] = {}      # platform library -> the line that named it
        kept = []
        for line in own:
            name = provided_by_runtime(line)
            if name is None:
                kept.append(line)
            elif name not in self.substituted:
                self.substituted[name] = line
                packages = ", ".join(f"runtime/compat/{p}" for p in PLATFORM_LIBRARIES[name])
                self._say(f"{name}: provided by the runtime ({packages}), not installed")
        lines = _profile_pins(self.profile, kept, self._say) + kept
        out, seen = [], set()
        for line in lines:
            if line not in seen:
                seen.add(line)
                out.append(line)
        return out

    def index_settings(self) -> dict[str, str]:
        return {k: os.environ[k] for k in _INDEX_VARS[self.tool] if os.environ.get(k)}

    def request_digest(self) -> str:
        """The request as asked (not resolved): only for remembering the last resolution."""
        doc = {"layout": LAYOUT_VERSION, "profile": [self.profile.name, self.profile.version],
               "requested": sorted(self.requested), "python": [str(self.python.path),
                                                                  self.python.version],
               "recipe": self.recipe.digest if self.recipe else None,
               "recipe_kind": self.recipe.kind if self.recipe else None,
               "index": self.index_settings(), "tool": self.tool,
               "runtime": str(_runtime_package()), "provided": sorted(PLATFORM_LIBRARIES)}
        return digest(doc)[:32]

    # --- the remembered resolution ------------------------------------------------------------

    def _remembered_key(self, *, max_age_s: float | None) -> str | None:
        path = self.memo_path
        try:
            doc = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return None
        if max_age_s is not None and age > max_age_s:
            return None
        key = doc.get("key")
        return key if isinstance(key, str) and _is_ready(self.root / key) else None

    def _remember(self, key: str) -> None:
        _atomic_write(self.memo_path, json.dumps({"key": key, "resolved": time.time()}))

    # --- plan and ensure ---------------------------------------------------------------------

    def plan(self) -> EnvPlan:
        key = self._remembered_key(max_age_s=None)
        path = self.root / key if key else None
        base = _read_meta(path).get("python") if path else None   # the Python it was made from
        return EnvPlan(key=key, path=path, python=_env_python(path) if path else None,
                       base_python=Path(base) if base else self.python.path, ready=key is not None,
                       profile=self.profile.name, requirements=list(self.requested))

    def ensure(self, *, refresh: bool) -> EnvInfo:
        if not refresh:
            ttl = float(os.environ.get(ENV_RESOLVE_TTL) or DEFAULT_RESOLVE_TTL_S)
            key = self._remembered_key(max_age_s=ttl)
            if key is not None:
                return self._reuse(key, "remembered resolution")
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        if self.tool == "uv":
            lock_lines, recipe_name = self._resolve_fitting(self._resolve_uv)
            key = self._key(lock_lines, recipe_name)
            with _key_lock(self.root, key, self.timeout_s, self._say):
                if _is_ready(self.root / key):
                    self._remember(key)
                    return self._reuse(key, "resolved to an existing environment")
                info = self._build(key, lock_lines, recipe_name, venv=None)
        else:
            # pip resolves inside a fresh venv (the only place its pip is sure to exist)
            staging = self._staging_dir("resolve")

            def resolve_pip() -> tuple[list[str], str | None]:
                shutil.rmtree(staging, ignore_errors=True)     # an earlier Python's attempt
                self._make_venv_pip(staging)
                return self._resolve_pip(staging)
            try:
                lock_lines, recipe_name = self._resolve_fitting(resolve_pip)
                key = self._key(lock_lines, recipe_name)
                with _key_lock(self.root, key, self.timeout_s, self._say):
                    if _is_ready(self.root / key):
                        self._remember(key)
                        return self._reuse(key, "resolved to an existing environment")
                    info = self._build(key, lock_lines, recipe_name, venv=staging)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        self._remember(key)
        _auto_prune(self.root, keep=key, say=self._say)
        return info

    def _reuse(self, key: str, why: str) -> EnvInfo:
        path = self.root / key
        _touch(path / LAST_USED)
        meta = _read_meta(path)
        self._say(f"environment {key} ready ({why}): {path}")
        return EnvInfo(python=_env_python(path), key=key, path=path, cached=True,
                       tool=meta.get("tool", self.tool))

    # --- resolution ---------------------------------------------------------------------------

    def _resolve_fitting(self, resolve) -> tuple[list[str], str | None]:
        """`resolve()` for the chosen Python; when the pins cannot be installed on it (no wheels
        for its version, a Requires-Python it does not meet), for each other Python of this host
        that the worker runs on, closest version first, until one resolves. The build log says
        which was chosen and why."""
        try:
            return resolve()
        except EnvBuildError as exc:
            if not self._python_bound(exc):
                raise
            first_error, failed, output = exc, self.python, self.last_output
        why = _python_reason(output) or first_error.detail
        tried = [failed]
        for candidate in _other_pythons(failed, self.recipe, self.uv):
            self._say(f"no solution for Python {failed.version} ({why}): trying Python "
                      f"{candidate.version} ({candidate.path})")
            self.python = candidate
            try:
                found = resolve()
            except EnvBuildError as exc:
                if not self._python_bound(exc):
                    raise
                tried.append(candidate)
                continue
            self._say(f"Python {candidate.version} ({candidate.path}) chosen: the requirements "
                      f"cannot be installed on Python {failed.version} ({why})")
            return found
        self.python = failed
        versions = ", ".join(p.version for p in tried)
        tail = (f" Tried Python {versions} (the worker needs {_dotted(MIN_WORKER_PYTHON)} or newer); "
                f"{_available_pythons(self.uv)}.")
        if isinstance(first_error, PythonUnavailable):
            raise PythonUnavailable(first_error.detail.rstrip(".") + "." + tail,
                                    needed=first_error.needed, build_log=self._transcript())
        raise PythonUnavailable(
            f"The recipe's requirements cannot be installed on any Python of this host: {why}."
            f"{tail} Install a Python these pins support, or change the pins",
            needed=_needed_from(output), build_log=self._transcript())

    def _python_bound(self, exc: EnvBuildError) -> bool:
        """Whether a failed resolution failed because of the Python it was made for."""
        return isinstance(exc, PythonUnavailable) or (
            exc.step == "resolve" and bool(_PYTHON_BOUND.search(self.last_output)))

    def _input_lines(self) -> list[str]:
        lines = list(self.requested)
        if self.recipe is not None and self.recipe.kind in ("project", "wheel"):
            lines.append(self.recipe.path.as_uri())   # the recipe itself: uv reads its metadata
        return lines

    def _resolve_uv(self) -> tuple[list[str], str | None]:
        self._say(f"resolving {len(self.requested)} requirements (profile {self.profile.name} "
                  f"v{self.profile.version}) for Python {self.python.version} with uv")
        with tempfile.TemporaryDirectory(prefix="resolve-", dir=self._tmp_root()) as tmp:
            req_in = Path(tmp, IN_FILE)
            req_in.write_text("\n".join(self._input_lines()) + "\n")
            # The platform's libraries stay out even where the recipe's own metadata names them
            # (a setup.py computing install_requires, a wheel's Requires-Dist).
            excludes = Path(tmp, "excludes.txt")
            excludes.write_text("\n".join(sorted(PLATFORM_LIBRARIES)) + "\n")
            out = Path(tmp, LOCK_FILE)
            self._run([self.uv, "pip", "compile", str(req_in), "-o", str(out), "--python",
                       str(self.python.path), "--excludes", str(excludes), "--no-header",
                       "--no-annotate", "--no-python-downloads"], step="resolve")
            lines = [line.strip() for line in out.read_text().splitlines()
                     if line.strip() and not line.lstrip().startswith("#")]
        return lines, self._recipe_line_name(lines)

    def _resolve_pip(self, venv: Path) -> tuple[list[str], str | None]:
        """pip has no resolver without an install: install into the staging venv, then read
        what it installed (that is the resolution; the build then only checks it)."""
        self._say(f"resolving and installing {len(self.requested)} requirements (profile "
                  f"{self.profile.name} v{self.profile.version}) for Python "
                  f"{self.python.version} with pip")
        req_in = venv / IN_FILE
        req_in.write_text("\n".join(self._input_lines()) + "\n")
        self._run([*self._pip(venv), "install", "--progress-bar", "off", "-r", str(req_in)],
                  step="resolve")
        lines = _installed(_env_python(venv))
        # pip cannot leave a package out of a resolution: one that came in through the recipe's
        # own metadata is taken out again
        came = [line.partition("==")[0].partition(" @ ")[0] for line in lines]
        unwanted = [name for name in came if name in PLATFORM_LIBRARIES]
        if unwanted:
            for name in unwanted:
                self._say(f"{name}: provided by the runtime, removed after pip installed it")
            self._run([*self._pip(venv), "uninstall", "--yes", "--quiet", *unwanted],
                      step="resolve")
            lines = _installed(_env_python(venv))
        return lines, self._recipe_line_name(lines)

    def _recipe_line_name(self, lines: list[str]) -> str | None:
        if self.recipe is None:
            return None
        if self.recipe.kind not in ("project", "wheel"):
            return _egg_name(self.recipe.path) if self.recipe.kind == "egg" else None
        uri = self.recipe.path.as_uri()
        for line in lines:
            name, sep, url = line.partition(" @ ")
            if sep and url.strip() == uri:
                return _canonical(name)
        raise EnvBuildError(f"the resolution of the recipe's environment does not list the recipe "
                            f"({uri})", build_log=self._transcript())

    def _key(self, lock_lines: list[str], recipe_name: str | None) -> str:
        uri = self.recipe.path.as_uri() if self.recipe else None
        pins = []
        for line in lock_lines:
            name, sep, url = line.partition(" @ ")
            # the recipe counts by content, not by where it was unpacked
            pins.append(f"{_canonical(name)} @ recipe:{self.recipe.digest}"
                        if sep and url.strip() == uri else _normalize_pin(line))
        doc = {"layout": LAYOUT_VERSION, "python": self.python.identity,
               # the environment links this runtime's package: another checkout gets its own
               "runtime": str(_runtime_package()),
               "pins": sorted(pins), "index": self.index_settings(),
               "profile": f"{self.profile.name}@{self.profile.version}",
               "recipe": [self.recipe.kind, self.recipe.digest] if self.recipe else None}
        return digest(doc)[:16]

    # --- the build ----------------------------------------------------------------------------

    def _build(self, key: str, lock_lines: list[str], recipe_name: str | None,
               venv: Path | None) -> EnvInfo:
        final = self.root / key
        _remove_stale(self.root, key)
        if final.exists():    # a folder without its metadata: a build that was cut short
            shutil.rmtree(final, ignore_errors=True)
        tmp = self._staging_dir(key)
        origins = [tmp] if venv is None else [venv, tmp]   # where scripts may point
        started = time.monotonic()
        try:
            if venv is None:
                self._say(f"building environment {key} with uv in {tmp}")
                self._run([self.uv, "venv", str(tmp), "--python", str(self.python.path),
                           "--relocatable", "--no-python-downloads", "--quiet"], step="venv")
            else:
                self._say(f"building environment {key} with venv + pip in {tmp}")
                os.rename(venv, tmp)
            python = _env_python(tmp)
            lock_file = tmp / LOCK_FILE
            lock_file.write_text("\n".join(lock_lines) + "\n")
            (tmp / IN_FILE).write_text("\n".join(self._input_lines()) + "\n")
            if self.tool == "uv":
                self._run([self.uv, "pip", "sync", str(lock_file), "--python", str(python),
                           "--link-mode", "hardlink", "--no-python-downloads"],
                          step="install")
            # (pip: installed while resolving)
            site = _site_packages(python)
            if self.recipe is not None and self.recipe.kind in ("egg", "dist-info"):
                _copy_unpacked(self.recipe, site, self._say)
            _write_pth(tmp, site)
            self._check(python, recipe_name)
            freeze = (self._run([self.uv, "pip", "freeze", "--python", str(python)], step="freeze")
                      if self.tool == "uv" else "\n".join(_installed(python, seeds=True)) + "\n")
            (tmp / FREEZE_FILE).write_text(freeze)
            meta = {"key": key, "profile": self.profile.name, "profile_version": self.profile.version,
                    "python": str(self.python.path), "python_version": self.python.version,
                    "tool": self.tool, "recipe": str(self.recipe.path) if self.recipe else None,
                    "recipe_digest": self.recipe.digest if self.recipe else None,
                    "recipe_name": recipe_name, "index": self.index_settings(),
                    "created": time.time(), "build_s": round(time.monotonic() - started, 3),
                    "pins": len(lock_lines)}
            self._say(f"environment {key} checked in {meta['build_s']:.1f} s")
            (tmp / BUILD_LOG).write_text(self._transcript())
            _atomic_write(tmp / META_FILE, json.dumps(meta, indent=2))
            _touch(tmp / LAST_USED)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _relink_scripts(final, origins)
        self._say(f"environment {key} ready: {meta['pins']} packages, {_size_mb(final):,.0f} MB "
                  f"on disk, built in {meta['build_s']:.1f} s: {final}")
        return EnvInfo(python=_env_python(final), key=key, path=final, cached=False, tool=self.tool)

    def _check(self, python: Path, recipe_name: str | None) -> None:
        command = ([self.uv, "pip", "check", "--python", str(python)] if self.tool == "uv"
                   else [*self._pip(python.parent.parent), "check"])
        out = self._run(command, step="check", check=False)
        if self.last_returncode != 0:
            # a package requiring a platform library is satisfied: the runtime provides it
            problems = [line for line in out.splitlines() if _CHECK_PROBLEM.search(line)]
            if not problems or any(_provided_requirement(line) is None for line in problems):
                self._fail("check", out)
            names = sorted({_provided_requirement(line) for line in problems})
            self._say(f"check: {', '.join(names)} required but not installed: provided by the "
                      "runtime")
        # The worker must start, and every entry point of the recipe must import, in isolation.
        self._run([str(python), "-I", "-c", _CHECK_SCRIPT, recipe_name or "", str(compat_dir())],
                  step="import check", cwd=self.root)

    # --- helpers ------------------------------------------------------------------------------

    def _make_venv_pip(self, target: Path) -> None:
        # Seeding pip into every environment (ensurepip) is most of a venv's cost: when this
        # process has a pip, that pip installs into the environment (`pip --python`) instead.
        self._host_pip = _host_pip()
        self._run([str(self.python.path), "-m", "venv", str(target),
                   *(["--without-pip"] if self._host_pip else [])], step="venv")

    def _pip(self, env: Path) -> list[str]:
        if getattr(self, "_host_pip", None):
            return [sys.executable, "-m", "pip", "--python", str(_env_python(env))]
        return [str(_env_python(env)), "-m", "pip"]

    def _tmp_root(self) -> Path:
        path = self.root / ".tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _staging_dir(self, label: str) -> Path:
        return self._tmp_root() / f"{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _say(self, line: str) -> None:
        self.transcript.append(f"[env] {line}")
        if self.log is not None:
            try:
                self.log.write(f"[env] {line}\n")
                self.log.flush()
            except (OSError, ValueError):
                pass

    def _transcript(self) -> str:
        return "\n".join(self.transcript) + "\n"

    def _run(self, command: list[str], *, step: str, cwd: Path | None = None,
             check: bool = True) -> str:
        env = {**os.environ, "UV_CACHE_DIR": str(self.cache), "UV_LINK_MODE": "hardlink",
               "UV_PYTHON_DOWNLOADS": "never", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PYTHONNOUSERSITE": "1"}
        for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX"):
            env.pop(var, None)   # the build sees only the environment being built
        if self.tool == "pip":
            env["PIP_CACHE_DIR"] = str(self.cache.parent / "pip")
        started = time.monotonic()
        # The tool's lines reach the log as they come (a terminal sees uv download and install,
        # with its sizes and times), not once it is done.
        echo = step != "freeze"
        lines: list[str] = []
        try:
            proc = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise EnvBuildError(f"{step}: cannot run {command[0]}: {exc}",
                                build_log=self._transcript()) from exc

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                lines.append(line)
                if echo and line.strip():
                    self._say(f"  {line}")

        reader = threading.Thread(target=pump, name=f"env-{step}", daemon=True)
        reader.start()
        try:
            returncode = proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reader.join(timeout=5)
            raise EnvBuildError(f"{step} took longer than {self.timeout_s:g} s",
                                build_log=self._transcript()) from None
        reader.join()
        out = "\n".join(lines) + ("\n" if lines else "")
        self.last_output, self.last_returncode = out, returncode
        self._say(f"{step}: {time.monotonic() - started:.1f} s")
        if returncode != 0 and check:
            self._fail(step, out)
        return out

    def _record(self, out: str) -> None:
        for line in out.rstrip().splitlines():
            self._say(f"  {line}")

    def _fail(self, step: str, out: str) -> None:
        match = _NEEDS_PYTHON.search(_unwrapped(out))
        if match and step == "resolve":
            needed = match.group(1).replace(" ", "")
            raise PythonUnavailable(
                f"The recipe's requirements need Python {needed}, but the environment would use "
                f"Python {self.python.version} ({self.python.path}); {_available_pythons(self.uv)}. "
                f"Install a Python {needed} on this host, or change the pins",
                needed=needed, build_log=self._transcript())
        last = next((line.strip() for line in reversed(out.strip().splitlines())
                     if line.strip()), "")
        hint = ""
        if step == "import check" and "ModuleNotFoundError" in out:
            hint = (" (the environment holds only the profile's packages and what the recipe "
                    "declares: add the missing one to install_requires or requirements.txt, or "
                    "pass it with --pip)")
        raise EnvBuildError(f"{step} failed: {last}{hint}", build_log=self._transcript(),
                            step=step)


# Run inside the new environment with -I: the worker imports, and so does every entry point the
# recipe's distribution declares (console scripts aside).
_CHECK_SCRIPT = r"""
import sys, traceback
import importlib.metadata as md
import runtime.worker  # noqa: F401  (the worker must start in this environment)
import importlib.util, os
name, compat = sys.argv[1], sys.argv[2]
for package in sorted(os.listdir(compat)):
    if not os.path.isfile(os.path.join(compat, package, "__init__.py")):
        continue
    origin = importlib.util.find_spec(package).origin or ""
    if not origin.startswith(os.path.join(compat, package) + os.sep):
        sys.exit(f"the package {package!r} is imported from {origin}, not from the runtime's "
                 f"{compat}: something installed in the environment shadows it")
if name:
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        sys.exit(f"the recipe's distribution {name!r} is not installed in the environment")
    failed = 0
    for ep in dist.entry_points:
        if ep.group in ("console_scripts", "gui_scripts"):
            continue
        try:
            ep.load()
        except BaseException as exc:
            failed += 1
            traceback.print_exc()
            print(f"entry point {ep.group}:{ep.name} = {ep.value} cannot be imported: "
                  f"{type(exc).__name__}: {exc}")
    if failed:
        sys.exit(1)
"""


# --- the interpreter --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Python:
    path: Path
    version: str            # 3.11.7
    identity: str           # cpython-3.11.7-linux-x86_64: what the key holds


def _interpreter(path: Path) -> _Python:
    """The interpreter at `path`, asked by running it (a pyenv shim of a version that is not
    installed fails here); its path is the base interpreter it runs (not a shim or a venv's)."""
    out = subprocess.run(
        [str(path), "-I", "-c", "import sys, platform, sysconfig; "
         "print(sys.implementation.name, platform.python_version(), sysconfig.get_platform(), "
         "getattr(sys, '_base_executable', None) or sys.executable)"],
        capture_output=True, text=True, timeout=60, check=True).stdout.split()
    name, version, plat, exe = out[0], out[1], out[2], out[3]
    real = Path(exe) if exe and Path(exe).exists() else Path(path)
    return _Python(path=real, version=version, identity=f"{name}-{version}-{plat}")


def _own_python() -> _Python:
    base = Path(getattr(sys, "_base_executable", None) or sys.executable)
    import platform
    import sysconfig
    version = platform.python_version()
    return _Python(path=base if base.exists() else Path(sys.executable), version=version,
                   identity=f"{sys.implementation.name}-{version}-{sysconfig.get_platform()}")


def _choose_python(recipe: RecipeSource | None, uv: str | None) -> _Python:
    """The runtime's own Python unless the recipe's python_requires excludes it; then the Python
    on this host closest to it that satisfies it (and runs the worker), or PythonUnavailable
    naming what is needed. (What the pins can install is tried later: `_resolve_fitting`.)"""
    own = _own_python()
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
    for candidate in _other_pythons(own, recipe, uv):
        return candidate
    raise PythonUnavailable(
        f"The recipe needs Python {spec_text} (python_requires), but this host has "
        f"{_describe_pythons(own, uv)}. Install a Python {spec_text} ({_dotted(MIN_WORKER_PYTHON)} "
        "or newer: the runtime's worker runs in the environment) and run again",
        needed=spec_text, build_log="")


def _other_pythons(failed: _Python, recipe: RecipeSource | None, uv: str | None) -> list[_Python]:
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
    base = _version_tuple(failed.version)[:2]
    chosen: dict[tuple[int, ...], _Python] = {}
    for python in _host_pythons(uv):
        minor = _version_tuple(python.version)[:2]
        if minor == base or minor < MIN_WORKER_PYTHON or minor in chosen:
            continue
        if spec is not None and not spec.contains(python.version, prereleases=True):
            continue
        chosen[minor] = python
    return sorted(chosen.values(), key=lambda p: (abs(_version_tuple(p.version)[1] - base[1]),
                                                  _version_tuple(p.version)))


@functools.lru_cache(maxsize=4)
def _host_pythons(uv: str | None) -> tuple[_Python, ...]:
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

    def ask(path: Path) -> _Python | None:
        try:
            python = _interpreter(path)
        except (OSError, subprocess.SubprocessError, IndexError, ValueError):
            return None
        return python if python.identity.startswith("cpython-") else None

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = [p for p in pool.map(ask, unique) if p is not None]
    by_identity = {}
    for python in found:
        by_identity.setdefault(python.identity, python)
    return tuple(sorted(by_identity.values(), key=lambda p: _version_tuple(p.version),
                        reverse=True))


def _describe_pythons(own: _Python, uv: str | None) -> str:
    versions = sorted({own.version, *(p.version for p in _host_pythons(uv))}, key=_version_tuple)
    return "Python " + ", ".join(versions)


def _available_pythons(uv: str | None) -> str:
    return "this host has " + _describe_pythons(_own_python(), uv)


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _unwrapped(out: str) -> str:
    """uv's output with the lines it wrapped to the terminal's width joined again (a wrapped
    line goes on, indented, on the next)."""
    return re.sub(r"[ \t]*\n[ \t]+(?=[^\s×╰│|])", " ", out)


def _python_reason(out: str) -> str:
    """uv's or pip's sentence saying why the resolution needs another Python, shortened."""
    for line in _unwrapped(out).splitlines():
        if _PYTHON_BOUND.search(line):
            line = re.sub(r"^\W*(?:cause:|hint:|error:)?\s*", "", line.strip(), flags=re.I)
            line = re.sub(r"^Because\s+", "", line)
            line = re.split(r",? and you require|, we can conclude", line)[0]
            return line[:240].rstrip(" ,.")
    return ""


def _needed_from(out: str) -> str:
    out = _unwrapped(out)
    match = _NEEDS_PYTHON.search(out)
    if match:
        return match.group(1).replace(" ", "")
    tags = re.search(r"following Python (?:ABI|version) tags?: (.+)", out)
    if tags:
        return "a Python with wheels: " + tags.group(1).replace("`", "").strip().rstrip(".")
    return "another Python"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def _choose_tool(tool: str | None) -> tuple[str, str | None]:
    wanted = (tool or os.environ.get(ENV_TOOL) or "uv").strip().lower()
    if wanted not in ("uv", "pip"):
        raise ConfigError(f"Unknown environment tool {wanted!r}: expected uv or pip")
    uv = find_uv()
    if wanted == "uv" and uv is None:
        return "pip", None          # uv cannot run here: venv + pip
    return wanted, uv


# --- files ------------------------------------------------------------------------------------

def _env_python(env: Path) -> Path:
    return env / "bin" / "python"


_INSTALLED_SCRIPT = r"""
import json, sys, importlib.metadata as md
out = []
for dist in md.distributions():
    name = dist.metadata["Name"]
    url = None
    direct = dist.read_text("direct_url.json")
    if direct:
        url = json.loads(direct).get("url")
    out.append([name, dist.version, url])
print(json.dumps(out))
"""
_VENV_SEEDS = {"pip", "setuptools", "wheel"}


def _installed(python: Path, *, seeds: bool = False) -> list[str]:
    """What is installed in an environment, as sorted pins (`name==version`, `name @ url` for
    direct references): pip freeze's format, read with importlib.metadata in one start."""
    out = subprocess.run([str(python), "-I", "-c", _INSTALLED_SCRIPT], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    lines = set()
    for name, version, url in json.loads(out):
        if not seeds and _canonical(name) in _VENV_SEEDS:
            continue
        lines.add(f"{_canonical(name)} @ {url}" if url else f"{_canonical(name)}=={version}")
    return sorted(lines)


def _host_pip() -> bool:
    """Whether this interpreter has a pip that can install into another one (pip >= 22.3)."""
    try:
        from importlib.metadata import version
        return _version_tuple(version("pip")) >= (22, 3)
    except Exception:   # no pip, or unreadable metadata
        return False


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    return Path(out)


def _write_pth(env: Path, site: Path) -> None:
    """The runtime's package (through a link folder holding only `runtime`, so nothing else of
    the runtime's own installation leaks in) and runtime/compat, on the environment's path. The
    link folder is named relative to site-packages, so the environment survives its rename.

    compat/ goes right before site-packages (after the standard library): a package installed
    there under the name of one of ours (PyPI's model-authoring-sdk-pyspark installs a top-level
    `sdk`) never shadows it. A plain .pth line would append it after site-packages."""
    links = env / RUNTIME_LINK_DIR
    links.mkdir(exist_ok=True)
    (links / "runtime").symlink_to(_runtime_package(), target_is_directory=True)
    rel = os.path.relpath(links, site)
    compat = str(compat_dir())
    first = ("import sys; _c = " + repr(compat) + "; _s = [i for i, p in enumerate(sys.path) "
             "if p.rstrip('/').endswith('site-packages')]; _c in sys.path or "
             "sys.path.insert(_s[0] if _s else len(sys.path), _c)")
    (site / PTH_FILE).write_text(f"{rel}\n{first}\n")


def _copy_unpacked(recipe: RecipeSource, site: Path, say) -> None:
    """An egg or an unpacked wheel is not something uv or pip installs: copy it into
    site-packages, its EGG-INFO as <name>.egg-info so importlib.metadata sees its entry points."""
    say(f"installing the recipe ({recipe.kind}) from {recipe.path}")
    with tempfile.TemporaryDirectory() as tmp:
        source = recipe.path
        if source.is_file():
            from ..artifacts import safe_extract  # H-recipes' checked extraction
            safe_extract(source, Path(tmp), max_total_bytes=1 << 30, max_entries=100_000)
            source = Path(tmp)
        for entry in source.iterdir():
            if entry.name in ("__pycache__",) or entry.name == "EGG-INFO":
                continue
            target = site / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, target)
        if (source / "EGG-INFO").is_dir():
            name, version = _egg_identity(source)
            # <name>-<version>.egg-info: the form importlib.metadata, pip and uv all read
            shutil.copytree(source / "EGG-INFO",
                            site / f"{name.replace('-', '_')}-{version}.egg-info")


def _egg_identity(path: Path) -> tuple[str, str]:
    """(name, version) of an egg (folder or .egg file), from its PKG-INFO, else its file name
    (`name-version-pyX.Y.egg`)."""
    metadata = read_recipe_metadata(Path(path))
    parts = Path(path).name.removesuffix(".egg").split("-")
    name = metadata.name or parts[0] or "recipe"
    version = metadata.version or (parts[1] if len(parts) > 1 else "0")
    return _canonical(name), version


def _egg_name(path: Path) -> str | None:
    """The distribution name of an egg (folder or .egg file)."""
    return _egg_identity(path)[0]


def _relink_scripts(final: Path, origins: list[Path]) -> None:
    """venv + pip write absolute paths into bin/ scripts: point them at the final folder (uv's
    relocatable environments have none)."""
    new = str(final).encode()
    files = [p for p in (final / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    files.append(final / "pyvenv.cfg")
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:1024]:
            continue
        changed = data
        for origin in origins:
            changed = changed.replace(str(origin).encode(), new)
        if changed != data:
            path.write_bytes(changed)


def _size_mb(folder: Path) -> float:
    """What a folder's files take on disk (hard links into uv's cache counted once)."""
    seen, total = set(), 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total / 2**20


def _is_ready(path: Path) -> bool:
    return (path / META_FILE).is_file() and _env_python(path).exists()


def _read_meta(path: Path) -> dict:
    try:
        return json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _touch(path: Path) -> None:
    try:
        path.touch()
        os.utime(path)
    except OSError:
        pass


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove_stale(root: Path, key: str) -> None:
    """Staging folders of earlier builds of this key that died (we hold its lock)."""
    tmp_root = root / ".tmp"
    if tmp_root.is_dir():
        for entry in tmp_root.glob(f"{key}-*"):
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def _key_lock(root: Path, key: str, timeout_s: float, say) -> Iterator[None]:
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{key}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another process is building environment {key}: waiting for it")
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EnvBuildError(f"waited {timeout_s:g} s for another build of "
                                            f"environment {key}", build_log="") from None
                    time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def key_locked(root: Path, key: str) -> bool:
    """True when some process holds the key's lock (building it) right now."""
    path = root / ".locks" / f"{key}.lock"
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _auto_prune(root: Path, *, keep: str, say) -> None:
    cap = os.environ.get(ENV_MAX_SIZE)
    if not cap:
        return
    from .cache import parse_size, prune_envs
    removed = prune_envs(root.parent, max_size_bytes=parse_size(cap), keep=(keep,))
    for record in removed:
        say(f"pruned environment {record.key} (least recently used; {ENV_MAX_SIZE}={cap})")


# --- small pure helpers ------------------------------------------------------------------------

def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _normalize_pin(line: str) -> str:
    name, sep, rest = line.partition("==")
    if not sep:
        return line.strip()
    return f"{_canonical(name.strip())}=={rest.strip()}"


def _validate_requirement(line: str) -> None:
    from packaging.requirements import InvalidRequirement, Requirement
    try:
        Requirement(line)
    except InvalidRequirement as exc:
        raise ConfigError(f"Invalid requirement {line!r}: {exc}") from None


def _profile_pins(profile: Profile, own: Sequence[str], say) -> list[str]:
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


def _provided_requirement(line: str) -> str | None:
    """The platform library a check's "requires X, which is not installed" line is about."""
    match = _MISSING_REQUIREMENT.search(line)
    return provided_by_runtime(match.group(1)) if match else None
