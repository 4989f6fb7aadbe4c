"""What an R recipe needs of the host, checked before its run starts: Rscript, the R packages its
code loads, the runtime's R framework (ml.runtime.r, evaluators.r) installed in a library the
runtime owns, and the Python environment reticulate binds.

R itself comes from Debian's packages (APT_COMMAND); nothing here downloads R packages."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

from ...errors import MLRuntimeError

APT_PACKAGES = ("r-base-core", "r-cran-reticulate", "r-cran-jsonlite", "r-cran-codetools")
# What the platform's two public samples load besides (gbm, lubridate, tidyverse, readr).
SAMPLE_PACKAGES = ("r-cran-gbm", "r-cran-lubridate", "r-cran-tidyverse", "r-cran-readr")
APT_COMMAND = ("apt-get install -y --no-install-recommends "
               + " ".join(APT_PACKAGES + SAMPLE_PACKAGES))
FRAMEWORK = ("ml.runtime.r", "evaluators.r")   # installed in this order (evaluators imports ml)
DRIVER_NEEDS = ("jsonlite", "reticulate", "methods", "codetools")
LIBRARY_DIR = "r-library"
# Packages every R has (R's base and recommended packages ship in r-base-core / r-recommended).
BASE = frozenset({"base", "compiler", "datasets", "graphics", "grDevices", "grid", "methods",
                  "parallel", "splines", "stats", "stats4", "tcltk", "tools", "utils"})

_LOADS = (
    re.compile(r"\b(?:library|require|requireNamespace|loadNamespace)\s*\(\s*"
               r"(?:package\s*=\s*)?[\"']?([A-Za-z][A-Za-z0-9.]*)[\"']?\s*[,)]"),
    re.compile(r"\b([A-Za-z][A-Za-z0-9.]*):::?[A-Za-z._`]"),
)
_COMMENT = re.compile(r"#.*$", re.M)
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")


class RNotInstalled(MLRuntimeError):
    """R (Rscript), or an R package a recipe loads, is not installed on this host."""

    status, title, slug = 501, "Missing Dependency", "missing-dependency"


def find_rscript() -> Path:
    """The Rscript this host runs R recipes with; RNotInstalled naming the apt command when none."""
    found = shutil.which(os.environ.get("MLRUNTIME_RSCRIPT") or "Rscript")
    if not found:
        raise RNotInstalled(f"R recipes need R, and Rscript is not on this host's PATH; install "
                            f"it from Debian's packages with: {APT_COMMAND}")
    return Path(found)


def framework_dir() -> Path:
    """runtime/compat/r: the source of the R packages ml.runtime.r and evaluators.r."""
    return Path(__file__).resolve().parents[2] / "compat" / "r"


def _framework_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(framework_dir().rglob("*")):
        if path.is_file():
            h.update(path.relative_to(framework_dir()).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


FACTS_FILE = ".r-hosts.json"
_FACTS: dict[str, dict[str, Any]] = {}


def r_facts(rscript: Path, home: Any = None) -> dict[str, Any]:
    """{"version": "4.2.2", "libraries": [R's own library folders]} of this Rscript: asked of R
    once (an Rscript start is a few tenths of a second, more on a loaded host), then kept in this
    process and under HOME/r-library, keyed by the Rscript's path, size and mtime (an upgrade of
    R changes them) and what adds libraries (R_LIBS_USER, R_LIBS_SITE, the Renviron files)."""
    real = Path(os.path.realpath(rscript))
    stat = real.stat()
    # The start-up files that may add libraries count too (an edit changes their mtime).
    startup = [Path(os.environ.get("R_ENVIRON_USER") or Path.home() / ".Renviron"),
               Path("/etc/R/Renviron.site"), real.parents[1] / "etc" / "Renviron.site"]
    stamps = [str(f.stat().st_mtime_ns) if f.is_file() else "-" for f in startup]
    key = hashlib.sha256("\0".join([str(real), str(stat.st_size), str(stat.st_mtime_ns),
                                     os.environ.get("R_LIBS_USER", ""),
                                     os.environ.get("R_LIBS_SITE", ""), *stamps]
                                    ).encode()).hexdigest()[:16]
    if key in _FACTS:
        return _FACTS[key]
    path = _root(home) / LIBRARY_DIR / FACTS_FILE if home is not None else None
    known: dict[str, Any] = {}
    if path is not None and path.is_file():
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = {}
    if isinstance(known.get(key), dict) and known[key].get("version"):
        _FACTS[key] = known[key]
        return known[key]
    # R's own libraries, as the driver's Rscript sees them (site and user start-up files read),
    # R_LIBS left out: the runtime puts its own library there per run.
    env = {k: v for k, v in os.environ.items() if k != "R_LIBS"}
    out = _rscript(rscript, "cat(paste0('@@', c(as.character(getRversion()), .libPaths())), "
                   "sep = '\\n')", timeout_s=60, env=env, vanilla=False)
    lines = [x[2:] for x in out.splitlines() if x.startswith("@@")]
    facts = {"version": lines[0], "libraries": lines[1:]}
    _FACTS[key] = facts
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        known[key] = facts
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, path)
    return facts


def r_version(rscript: Path, home: Any = None) -> str:
    return r_facts(rscript, home)["version"]


def _root(home: Any) -> Path:
    return Path(home if isinstance(home, (str, os.PathLike)) else home.root)


def library_path(home: Any, version: str) -> Path:
    """HOME/r-library/R-<version>-<framework digest>: one library per R version and per edit of
    the framework's source."""
    return _root(home) / LIBRARY_DIR / f"R-{version}-{_framework_digest()}"


def ensure_library(home: Any, rscript: Path, *, log: Optional[TextIO] = None,
                   version: Optional[str] = None) -> Path:
    """The runtime's R library with the framework installed (R CMD INSTALL, once per R version;
    concurrent runs wait on one lock)."""
    version = version or r_version(rscript, home)
    lib = library_path(home, version)
    if _installed(lib):
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with _locked(lib.parent / f".{lib.name}.lock"):
        if _installed(lib):
            return lib
        tmp = lib.parent / f".tmp-{lib.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        r = rscript.parent / "R"
        command = [str(r) if r.exists() else "R", "CMD", "INSTALL", "--no-test-load",
                   f"--library={tmp}", *(str(framework_dir() / name) for name in FRAMEWORK)]
        if log is not None:
            log.write(f"[r] installing the runtime's R framework ({', '.join(FRAMEWORK)}) into "
                      f"{lib}\n")
            log.flush()
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "R_LIBS": str(tmp)})
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise MLRuntimeError(f"Installing the runtime's R packages failed (R CMD INSTALL exit "
                                 f"{proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")
        (tmp / ".complete").write_text(version + "\n")
        shutil.rmtree(lib, ignore_errors=True)
        os.replace(tmp, lib)
    return lib


def _installed(lib: Path) -> bool:
    return (lib / ".complete").is_file() and all((lib / n / "DESCRIPTION").is_file()
                                                 for n in FRAMEWORK)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the packages a recipe loads --------------------------------------------------------------

def loaded_packages(files: list[Path]) -> list[str]:
    """The R packages the code loads: library(x), require(x), requireNamespace("x"), x::f and
    x:::f, comments and strings other than the package names left out."""
    found: dict[str, None] = {}
    for path in files:
        text = _COMMENT.sub("", path.read_text(encoding="utf-8", errors="replace"))
        for match in _LOADS[0].finditer(text):
            found.setdefault(match.group(1))
        for match in _LOADS[1].finditer(_STRING.sub('""', text)):
            found.setdefault(match.group(1))
    return [name for name in found if name not in BASE]


def description_imports(description: Path) -> list[str]:
    """Package names in a DESCRIPTION's Depends and Imports (R itself and versions left out)."""
    if not description.is_file():
        return []
    fields: dict[str, str] = {}
    current = None
    for line in description.read_text(encoding="utf-8", errors="replace").splitlines():
        if line[:1].isspace() and current:
            fields[current] += " " + line.strip()
        elif ":" in line:
            current, _, value = line.partition(":")
            fields[current.strip()] = value.strip()
    names = []
    for key in ("Depends", "Imports"):
        for item in fields.get(key, "").split(","):
            name = re.sub(r"\(.*?\)", "", item).strip()
            if name and name != "R":
                names.append(name)
    return names


def missing_packages(rscript: Path, lib: Path, names: list[str], home: Any = None) -> list[str]:
    """Which of `names` no library has: the runtime's, R_LIBS', then R's own, in the order R
    searches them. An installed package is a folder with its DESCRIPTION and Meta/package.rds
    (what R's find.package looks for), so this reads the folders rather than start R."""
    if not names:
        return []
    folders = [Path(lib), *(Path(p) for p in os.environ.get("R_LIBS", "").split(os.pathsep) if p),
               *(Path(p) for p in r_facts(rscript, home)["libraries"])]
    return [name for name in names
            if not any((f / name / "DESCRIPTION").is_file() and
                       (f / name / "Meta" / "package.rds").is_file() for f in folders)]


def debian_package(name: str) -> str:
    return "r-cran-" + name.lower()


def check_packages(rscript: Path, lib: Path, files: list[Path], description: Optional[Path],
                   log: Optional[TextIO], home: Any = None) -> None:
    """Fails (RNotInstalled) naming the Debian packages of what the code loads and no library has;
    a DESCRIPTION import no code loads is a note in the log."""
    loads = loaded_packages(files)
    wanted = list(dict.fromkeys([*DRIVER_NEEDS, *loads]))
    missing = missing_packages(rscript, lib, [n for n in wanted if n not in BASE], home)
    if missing:
        debs = " ".join(debian_package(n) for n in missing)
        raise RNotInstalled(
            f"The R recipe loads {', '.join(missing)}, which this host's R does not have: "
            f"install {'it' if len(missing) == 1 else 'them'} with: apt-get install -y "
            f"--no-install-recommends {debs}")
    unused = [n for n in description_imports(description) if description is not None
              and n not in loads and n not in FRAMEWORK and n not in BASE
              and n not in DRIVER_NEEDS]
    if unused and log is not None:
        log.write(f"[r] note: DESCRIPTION imports {', '.join(unused)}, which no R code of the "
                  "recipe loads: not checked, not needed\n")


def _rscript(rscript: Path, code: str, *args: str, timeout_s: float,
             env: Optional[dict[str, str]] = None, vanilla: bool = True) -> str:
    flags = ["--vanilla"] if vanilla else ["--no-save", "--no-restore"]
    proc = subprocess.run([str(rscript), *flags, "-e", code, *args], capture_output=True,
                          text=True, timeout=timeout_s,
                          env=env if env is not None else dict(os.environ))
    if proc.returncode != 0:
        raise MLRuntimeError(f"Rscript failed (exit {proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


# --- before a run ------------------------------------------------------------------------------

PYTHON_PROFILE = "python"    # numpy 1.26: reticulate 1.28 cannot convert numpy 2 arrays


def recipe_files(root: Path) -> list[Path]:
    """The recipe's R sources, R/*.R, in the order they are sourced."""
    return sorted(p for p in (Path(root) / "R").iterdir() if p.is_file()
                  and p.suffix in (".R", ".r")) if (Path(root) / "R").is_dir() else []


def prepare(root: Path, *, home: Any, log: Optional[TextIO], extra_pip: list[str] = ()) -> Path:
    """Everything an R recipe's run needs, before it starts: Rscript, the runtime's R library,
    the packages the recipe's code loads, and the Python environment reticulate binds (the
    `python` profile's, built by uv and cached like a recipe's). Returns that environment's
    interpreter: the worker runs there, and hands it to R as RETICULATE_PYTHON."""
    rscript = find_rscript()
    lib = ensure_library(home, rscript, log=log)
    check_packages(rscript, lib, recipe_files(root), Path(root) / "DESCRIPTION", log, home)
    from ...envs import ensure_env

    env = ensure_env(recipe_dir=None, requirements=[], profile=PYTHON_PROFILE,
                     extra_pip=list(extra_pip), home=home, log=log)
    return Path(env.python)


_READY: dict[tuple[str, str], Path] = {}


def environment(info: Any, recipe_dir: Path, *, home: Any, extra_pip: list[str],
                log: Optional[TextIO]) -> Path:
    """The R kind's environment builder (runtime.recipe_kinds): `prepare`, once per process and
    recipe (a stored recipe never changes); --pip's requirements join the Python environment."""
    key = (str(Path(recipe_dir).resolve()), str(home))
    known = _READY.get(key)
    if known is not None and known.is_file() and not extra_pip:
        return known
    python = prepare(info.root_dir(recipe_dir), home=home, log=log, extra_pip=extra_pip)
    if not extra_pip:
        _READY[key] = python
    return python
