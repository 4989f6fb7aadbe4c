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

The folders and files are `layout.py`'s, the Pythons `interpreters.py`'s, requirement lines
`pins.py`'s, and what goes into an environment besides the installed pins `install.py`'s.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, TextIO

from ..digests import digest
from ..errors import ConfigError, EnvBuildError, PythonUnavailable
from .install import copy_unpacked, egg_name, host_pip, installed, relink_scripts, site_packages, write_pth
from .interpreters import (MIN_WORKER_PYTHON, NEEDS_PYTHON, PYTHON_BOUND, available_pythons, choose_python,
                           dotted, needed_from, other_pythons, python_reason, unwrapped)
from .layout import (BUILD_LOG, FREEZE_FILE, IN_FILE, LAST_USED, LAYOUT_VERSION, LOCK_FILE, META_FILE,
                     atomic_write, compat_dir, env_python, envs_dir, is_ready, key_lock, read_meta,
                     remove_stale, runtime_package, runtime_source_root, size_mb, touch, uv_cache_dir)
from .pins import (CHECK_PROBLEM, canonical, normalize_pin, profile_pins, provided_requirement,
                   validate_requirement)
from .profiles import DEFAULT_PROFILE, PLATFORM_LIBRARIES, Profile, get_profile, provided_by_runtime
from .recipe import RecipeSource, recipe_source, requirements_file

__all__ = ["EnvInfo", "EnvPlan", "ensure_env", "envs_dir", "plan_env", "uv_cache_dir",
           "find_uv", "runtime_source_root", "compat_dir"]

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


def prune_uv_cache(home) -> tuple[Path, str | None]:
    """`uv cache prune` of the home's own uv cache: entries nothing refers to, among them the old
    revisions of a source distribution that uv keeps each time an index makes it download the file
    again (pyspark's sdist is 1.3 GB unpacked). Environments keep their hard links. Returns the
    cache and uv's summary, or None as the summary when it was left alone: a cache shared by
    several homes (MLRUNTIME_UV_CACHE_DIR) is pruned by whoever owns it, not one of its homes."""
    from .layout import ENV_UV_CACHE_DIR, uv_cache_dir

    cache = uv_cache_dir(home)
    return cache, None if os.environ.get(ENV_UV_CACHE_DIR) else uv_cache_prune(cache)


def uv_cache_prune(cache: Path) -> str | None:
    """`uv cache prune` of the uv cache at `cache`: uv's summary line, or None when there is no
    uv or no cache there. uv waits for builds using the cache; nothing is forced."""
    uv = find_uv()
    if uv is None or not cache.is_dir():
        return None
    done = subprocess.run([uv, "cache", "prune", "--cache-dir", str(cache)], capture_output=True,
                          text=True, timeout=600, check=False)
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"uv cache prune exited {done.returncode}"


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
        self.python = choose_python(self.recipe, self.uv)
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
            validate_requirement(line)
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
        lines = profile_pins(self.profile, kept, self._say) + kept
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
               "runtime": str(runtime_package()), "provided": sorted(PLATFORM_LIBRARIES)}
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
        return key if isinstance(key, str) and is_ready(self.root / key) else None

    def _remember(self, key: str) -> None:
        atomic_write(self.memo_path, json.dumps({"key": key, "resolved": time.time()}))

    # --- plan and ensure ---------------------------------------------------------------------

    def plan(self) -> EnvPlan:
        key = self._remembered_key(max_age_s=None)
        path = self.root / key if key else None
        base = read_meta(path).get("python") if path else None   # the Python it was made from
        return EnvPlan(key=key, path=path, python=env_python(path) if path else None,
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
            with key_lock(self.root, key, self.timeout_s, self._say):
                if is_ready(self.root / key):
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
                with key_lock(self.root, key, self.timeout_s, self._say):
                    if is_ready(self.root / key):
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
        touch(path / LAST_USED)
        meta = read_meta(path)
        self._say(f"environment {key} ready ({why}): {path}")
        return EnvInfo(python=env_python(path), key=key, path=path, cached=True,
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
        why = python_reason(output) or first_error.detail
        tried = [failed]
        for candidate in other_pythons(failed, self.recipe, self.uv):
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
        tail = (f" Tried Python {versions} (the worker needs {dotted(MIN_WORKER_PYTHON)} or newer); "
                f"{available_pythons(self.uv)}.")
        if isinstance(first_error, PythonUnavailable):
            raise PythonUnavailable(first_error.detail.rstrip(".") + "." + tail,
                                    needed=first_error.needed, build_log=self._transcript())
        raise PythonUnavailable(
            f"The recipe's requirements cannot be installed on any Python of this host: {why}."
            f"{tail} Install a Python these pins support, or change the pins",
            needed=needed_from(output), build_log=self._transcript())

    def _python_bound(self, exc: EnvBuildError) -> bool:
        """Whether a failed resolution failed because of the Python it was made for."""
        return isinstance(exc, PythonUnavailable) or (
            exc.step == "resolve" and bool(PYTHON_BOUND.search(self.last_output)))

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
        lines = installed(env_python(venv))
        # pip cannot leave a package out of a resolution: one that came in through the recipe's
        # own metadata is taken out again
        came = [line.partition("==")[0].partition(" @ ")[0] for line in lines]
        unwanted = [name for name in came if name in PLATFORM_LIBRARIES]
        if unwanted:
            for name in unwanted:
                self._say(f"{name}: provided by the runtime, removed after pip installed it")
            self._run([*self._pip(venv), "uninstall", "--yes", "--quiet", *unwanted],
                      step="resolve")
            lines = installed(env_python(venv))
        return lines, self._recipe_line_name(lines)

    def _recipe_line_name(self, lines: list[str]) -> str | None:
        if self.recipe is None:
            return None
        if self.recipe.kind not in ("project", "wheel"):
            return egg_name(self.recipe.path) if self.recipe.kind == "egg" else None
        uri = self.recipe.path.as_uri()
        for line in lines:
            name, sep, url = line.partition(" @ ")
            if sep and url.strip() == uri:
                return canonical(name)
        raise EnvBuildError(f"the resolution of the recipe's environment does not list the recipe "
                            f"({uri})", build_log=self._transcript())

    def _key(self, lock_lines: list[str], recipe_name: str | None) -> str:
        uri = self.recipe.path.as_uri() if self.recipe else None
        pins = []
        for line in lock_lines:
            name, sep, url = line.partition(" @ ")
            # the recipe counts by content, not by where it was unpacked
            pins.append(f"{canonical(name)} @ recipe:{self.recipe.digest}"
                        if sep and url.strip() == uri else normalize_pin(line))
        doc = {"layout": LAYOUT_VERSION, "python": self.python.identity,
               # the environment links this runtime's package: another checkout gets its own
               "runtime": str(runtime_package()),
               "pins": sorted(pins), "index": self.index_settings(),
               "profile": f"{self.profile.name}@{self.profile.version}",
               "recipe": [self.recipe.kind, self.recipe.digest] if self.recipe else None}
        return digest(doc)[:16]

    # --- the build ----------------------------------------------------------------------------

    def _build(self, key: str, lock_lines: list[str], recipe_name: str | None,
               venv: Path | None) -> EnvInfo:
        final = self.root / key
        remove_stale(self.root, key)
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
            python = env_python(tmp)
            lock_file = tmp / LOCK_FILE
            lock_file.write_text("\n".join(lock_lines) + "\n")
            (tmp / IN_FILE).write_text("\n".join(self._input_lines()) + "\n")
            if self.tool == "uv":
                self._run([self.uv, "pip", "sync", str(lock_file), "--python", str(python),
                           "--link-mode", "hardlink", "--no-python-downloads"],
                          step="install")
            # (pip: installed while resolving)
            site = site_packages(python)
            if self.recipe is not None and self.recipe.kind in ("egg", "dist-info"):
                copy_unpacked(self.recipe, site, self._say)
            write_pth(tmp, site)
            self._check(python, recipe_name)
            freeze = (self._run([self.uv, "pip", "freeze", "--python", str(python)], step="freeze")
                      if self.tool == "uv" else "\n".join(installed(python, seeds=True)) + "\n")
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
            atomic_write(tmp / META_FILE, json.dumps(meta, indent=2))
            touch(tmp / LAST_USED)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        relink_scripts(final, origins)
        self._say(f"environment {key} ready: {meta['pins']} packages, {size_mb(final):,.0f} MB "
                  f"on disk, built in {meta['build_s']:.1f} s: {final}")
        return EnvInfo(python=env_python(final), key=key, path=final, cached=False, tool=self.tool)

    def _check(self, python: Path, recipe_name: str | None) -> None:
        command = ([self.uv, "pip", "check", "--python", str(python)] if self.tool == "uv"
                   else [*self._pip(python.parent.parent), "check"])
        out = self._run(command, step="check", check=False)
        if self.last_returncode != 0:
            # a package requiring a platform library is satisfied: the runtime provides it
            problems = [line for line in out.splitlines() if CHECK_PROBLEM.search(line)]
            if not problems or any(provided_requirement(line) is None for line in problems):
                self._fail("check", out)
            names = sorted({provided_requirement(line) for line in problems})
            self._say(f"check: {', '.join(names)} required but not installed: provided by the "
                      "runtime")
        # The worker must start, and every entry point of the recipe must import, in isolation.
        self._run([str(python), "-I", "-c", _CHECK_SCRIPT, recipe_name or "", str(compat_dir())],
                  step="import check", cwd=self.root)

    # --- helpers ------------------------------------------------------------------------------

    def _make_venv_pip(self, target: Path) -> None:
        # Seeding pip into every environment (ensurepip) is most of a venv's cost: when this
        # process has a pip, that pip installs into the environment (`pip --python`) instead.
        self._host_pip = host_pip()
        self._run([str(self.python.path), "-m", "venv", str(target),
                   *(["--without-pip"] if self._host_pip else [])], step="venv")

    def _pip(self, env: Path) -> list[str]:
        if getattr(self, "_host_pip", None):
            return [sys.executable, "-m", "pip", "--python", str(env_python(env))]
        return [str(env_python(env)), "-m", "pip"]

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
        match = NEEDS_PYTHON.search(unwrapped(out))
        if match and step == "resolve":
            needed = match.group(1).replace(" ", "")
            raise PythonUnavailable(
                f"The recipe's requirements need Python {needed}, but the environment would use "
                f"Python {self.python.version} ({self.python.path}); {available_pythons(self.uv)}. "
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


# --- the tool ---------------------------------------------------------------------------------

def _choose_tool(tool: str | None) -> tuple[str, str | None]:
    wanted = (tool or os.environ.get(ENV_TOOL) or "uv").strip().lower()
    if wanted not in ("uv", "pip"):
        raise ConfigError(f"Unknown environment tool {wanted!r}: expected uv or pip")
    uv = find_uv()
    if wanted == "uv" and uv is None:
        return "pip", None          # uv cannot run here: venv + pip
    return wanted, uv


def _auto_prune(root: Path, *, keep: str, say) -> None:
    cap = os.environ.get(ENV_MAX_SIZE)
    if not cap:
        return
    from .cache import parse_size, prune_envs
    removed = prune_envs(root.parent, max_size_bytes=parse_size(cap), keep=(keep,))
    for record in removed:
        say(f"pruned environment {record.key} (least recently used; {ENV_MAX_SIZE}={cap})")
