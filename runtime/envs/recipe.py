"""What a recipe asks of its environment, read from its files without running them.

`read_requirements(path)` understands a source folder (setup.py read with `ast`, setup.cfg,
pyproject.toml, requirements.txt), an unpacked egg (EGG-INFO/requires.txt), an unpacked wheel
(*.dist-info/METADATA), and a .whl or .egg file. A setup.py whose `install_requires` is computed
(not a literal) is flagged `dynamic`: the environment builder then lets uv read the metadata by
building the package, the way pip would.
"""
from __future__ import annotations

import ast
import configparser
import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

__all__ = ["RecipeRequirements", "RecipeSource", "read_requirements", "recipe_digest",
           "recipe_source"]

PROJECT_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
# Never part of a recipe's identity: build leftovers and caches.
_SKIP_DIRS = {"__pycache__", ".git", "build", "dist", ".eggs", ".tox", ".venv", ".mypy_cache",
              ".pytest_cache"}


@dataclass(frozen=True)
class RecipeRequirements:
    requirements: list[str] = field(default_factory=list)
    python_requires: str | None = None
    sources: list[str] = field(default_factory=list)     # which files said so
    dynamic: bool = False                                # some requirements are computed at build


@dataclass(frozen=True)
class RecipeSource:
    """A recipe as the builder installs it: `kind` is `project` (a source folder uv/pip can
    install), `wheel` (a .whl file), `egg` (an unpacked egg folder or an .egg file) or `dist-info`
    (an unpacked wheel), copied into site-packages as it is."""

    path: Path
    kind: str
    digest: str
    requirements: RecipeRequirements


def recipe_source(path: Path) -> RecipeSource:
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"Recipe {path} does not exist")
    kind = _kind(path)
    return RecipeSource(path=path, kind=kind, digest=recipe_digest(path),
                        requirements=read_requirements(path))


def _kind(path: Path) -> str:
    if path.is_file():
        if path.suffix == ".whl":
            return "wheel"
        if path.suffix == ".egg":
            return "egg"
        raise ConfigError(f"Recipe {path} is a file but neither a wheel (.whl) nor an egg (.egg)")
    if any((path / name).is_file() for name in PROJECT_FILES):
        return "project"
    if (path / "EGG-INFO").is_dir():
        return "egg"
    if any(path.glob("*.dist-info")):
        return "dist-info"
    raise ConfigError(f"Recipe folder {path} has no {', '.join(PROJECT_FILES)}, EGG-INFO or "
                      "*.dist-info: it is not an installable Python package")


def recipe_digest(path: Path) -> str:
    """SHA-256 over the recipe's files (relative names and contents), build leftovers excluded,
    so the same recipe unpacked in two places has one digest."""
    path = Path(path)
    sha = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        return sha.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            full = Path(root, name)
            rel = full.relative_to(path).as_posix()
            sha.update(rel.encode() + b"\0")
            if full.is_symlink():
                sha.update(b"link:" + os.readlink(full).encode())
            else:
                with open(full, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        sha.update(block)
            sha.update(b"\0")
    return sha.hexdigest()


# --- reading ----------------------------------------------------------------------------------

def read_requirements(path: Path) -> RecipeRequirements:
    """The recipe's declared requirements and `python_requires`, without running its code."""
    path = Path(path)
    if path.is_file():
        return _from_archive(path)
    reqs: list[str] = []
    sources: list[str] = []
    python_requires: str | None = None
    dynamic = False

    pyproject = path / "pyproject.toml"
    if pyproject.is_file():
        found, py_req, dyn = _from_pyproject(pyproject)
        if found or py_req:
            sources.append("pyproject.toml")
        reqs += found
        python_requires = python_requires or py_req
        dynamic = dynamic or dyn
    setup_cfg = path / "setup.cfg"
    if setup_cfg.is_file():
        found, py_req = _from_setup_cfg(setup_cfg)
        if found or py_req:
            sources.append("setup.cfg")
        reqs += found
        python_requires = python_requires or py_req
    setup_py = path / "setup.py"
    if setup_py.is_file():
        found, py_req, dyn = _from_setup_py(setup_py)
        if found or py_req:
            sources.append("setup.py")
        reqs += found
        python_requires = python_requires or py_req
        dynamic = dynamic or dyn
    requirements_txt = path / "requirements.txt"
    if requirements_txt.is_file():
        found = _from_requirements_txt(requirements_txt, root=path)
        if found:
            sources.append("requirements.txt")
        reqs += found
    egg_info = path / "EGG-INFO"
    if egg_info.is_dir():
        found, py_req = _from_egg_info(egg_info)
        sources.append("EGG-INFO")
        reqs += found
        python_requires = python_requires or py_req
    for dist_info in sorted(path.glob("*.dist-info")):
        found, py_req = _from_metadata((dist_info / "METADATA").read_text(errors="replace")
                                       if (dist_info / "METADATA").is_file() else "")
        sources.append(dist_info.name)
        reqs += found
        python_requires = python_requires or py_req
    return RecipeRequirements(requirements=_dedupe(reqs), python_requires=python_requires,
                              sources=sources, dynamic=dynamic)


def _dedupe(reqs: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for req in (r.strip() for r in reqs):
        if req and req not in seen:
            seen.add(req)
            out.append(req)
    return out


def _from_pyproject(path: Path) -> tuple[list[str], str | None, bool]:
    import tomllib
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    project = data.get("project") or {}
    reqs = [str(r) for r in project.get("dependencies") or []]
    dynamic = "dependencies" in (project.get("dynamic") or [])
    if dynamic:
        # setuptools' `dependencies = {file = [...]}` is a plain requirements file: read it.
        spec = (((data.get("tool") or {}).get("setuptools") or {}).get("dynamic") or {}).get(
            "dependencies") or {}
        files = spec.get("file") if isinstance(spec, dict) else None
        if files:
            for name in [files] if isinstance(files, str) else files:
                if (path.parent / name).is_file():
                    reqs += _from_requirements_txt(path.parent / name, root=path.parent)
            dynamic = False
    return reqs, project.get("requires-python"), dynamic


def _from_setup_cfg(path: Path) -> tuple[list[str], str | None]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text())
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from exc
    if not parser.has_section("options"):
        return [], None
    raw = parser.get("options", "install_requires", fallback="")
    reqs = [r for r in (line.strip() for line in raw.splitlines()) if r and not r.startswith("#")]
    return reqs, (parser.get("options", "python_requires", fallback="") or None)


def _from_setup_py(path: Path) -> tuple[list[str], str | None, bool]:
    """install_requires / python_requires of the `setup(...)` call, when they are literals or
    names bound to literals at module level; anything else marks the result dynamic."""
    try:
        tree = ast.parse(path.read_text(errors="replace"), filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path} is not valid Python: {exc}") from exc
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = node.value
    reqs: list[str] = []
    python_requires: str | None = None
    dynamic = False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _is_setup(node.func)):
            continue
        for kw in node.keywords:
            if kw.arg is None:      # setup(**kwargs): cannot be read without running it
                dynamic = True
            elif kw.arg == "install_requires":
                value = _literal(kw.value, names)
                if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                    reqs += list(value)
                elif isinstance(value, str):
                    reqs += [line for line in value.splitlines() if line.strip()]
                else:
                    dynamic = True
            elif kw.arg == "python_requires":
                value = _literal(kw.value, names)
                if isinstance(value, str):
                    python_requires = value
                else:
                    dynamic = True
    return reqs, python_requires, dynamic


def _is_setup(func: ast.AST) -> bool:
    return (isinstance(func, ast.Name) and func.id == "setup") or (
        isinstance(func, ast.Attribute) and func.attr == "setup")


def _literal(node: ast.AST, names: dict[str, ast.AST], depth: int = 0):
    if depth > 5:
        return None
    if isinstance(node, ast.Name) and node.id in names:
        return _literal(names[node.id], names, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left, names, depth + 1), _literal(node.right, names, depth + 1)
        if isinstance(left, list) and isinstance(right, list):
            return left + right
        return None
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e, names, depth + 1) for e in node.elts]
        return items if all(isinstance(i, str) for i in items) else None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _from_requirements_txt(path: Path, *, root: Path, depth: int = 0) -> list[str]:
    """Requirement lines; `-r other.txt` is followed inside the recipe; other options (index
    URLs, `-e`) are not a recipe's to set and are refused."""
    if depth > 5:
        raise ConfigError(f"{path}: -r nests too deep")
    reqs: list[str] = []
    text = path.read_text(errors="replace")
    text = re.sub(r"\\\n", "", text)    # line continuations
    for number, line in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        include = re.fullmatch(r"(?:-r|--requirement)(?:\s+|=|(?<=-r))(\S.*)", line)
        if include:
            name = include.group(1)
            target = (path.parent / name.strip()).resolve()
            if not target.is_relative_to(root.resolve()) or not target.is_file():
                raise ConfigError(f"{path.name}:{number}: {line!r} names a file outside the recipe "
                                  "or one that does not exist")
            reqs += _from_requirements_txt(target, root=root, depth=depth + 1)
        elif line.startswith("-"):
            raise ConfigError(f"{path.name}:{number}: {line!r}: options in a recipe's "
                              "requirements file are not supported (index settings belong to the "
                              "runtime's configuration: UV_INDEX_URL, UV_EXTRA_INDEX_URL)")
        else:
            reqs.append(line)
    return reqs


def _from_egg_info(egg_info: Path) -> tuple[list[str], str | None]:
    reqs: list[str] = []
    requires = egg_info / "requires.txt"
    if requires.is_file():
        section = ""
        for line in requires.read_text(errors="replace").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            extra, _, marker = section.partition(":")
            if extra:            # an optional extra: not installed by default
                continue
            reqs.append(f"{line}; {marker}" if marker else line)
    py_req = None
    pkg_info = egg_info / "PKG-INFO"
    if pkg_info.is_file():
        py_req = _from_metadata(pkg_info.read_text(errors="replace"))[1]
    return reqs, py_req


def _from_metadata(text: str) -> tuple[list[str], str | None]:
    reqs, py_req = [], None
    for line in text.splitlines():
        if not line.strip():
            break                 # the headers end at the first blank line
        key, _, value = line.partition(":")
        if key == "Requires-Dist" and "extra ==" not in value.replace("extra==", "extra =="):
            reqs.append(value.strip())
        elif key == "Requires-Python":
            py_req = value.strip() or None
    return reqs, py_req


def _from_archive(path: Path) -> RecipeRequirements:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if path.suffix == ".whl":
                meta = next((n for n in names if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)), None)
                if meta is None:
                    raise ConfigError(f"{path.name} has no *.dist-info/METADATA: not a wheel")
                reqs, py_req = _from_metadata(zf.read(meta).decode(errors="replace"))
                return RecipeRequirements(reqs, py_req, [meta])
            if path.suffix == ".egg":
                reqs: list[str] = []
                py_req = None
                if "EGG-INFO/requires.txt" in names:
                    import tempfile
                    with tempfile.TemporaryDirectory() as tmp:
                        info = Path(tmp, "EGG-INFO")
                        info.mkdir()
                        for name in ("requires.txt", "PKG-INFO"):
                            if f"EGG-INFO/{name}" in names:
                                (info / name).write_bytes(zf.read(f"EGG-INFO/{name}"))
                        reqs, py_req = _from_egg_info(info)
                return RecipeRequirements(reqs, py_req, ["EGG-INFO"])
    except zipfile.BadZipFile as exc:
        raise ConfigError(f"{path.name} is not a valid zip archive: {exc}") from exc
    raise ConfigError(f"Recipe {path} is a file but neither a wheel (.whl) nor an egg (.egg)")
