"""What a recipe's project files declare, read without running them: the one reader behind the
artifact store (name, version, entry points) and the environment builder (requirements,
python_requires).

`read_recipe_metadata(path)` reads a project folder (setup.py parsed with `ast`, never executed;
setup.cfg; pyproject.toml's [project]; requirements.txt), an unpacked egg (EGG-INFO), an unpacked
wheel (*.dist-info) or a .whl / .egg file. A value setup.py computes (not a literal) is listed in
`dynamic`, as pyproject.toml lists its own. A file that cannot be read is a ConfigError naming it.
"""
from __future__ import annotations

import ast
import configparser
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

__all__ = ["PROJECT_FILES", "RecipeMetadata", "project_marker", "read_recipe_metadata",
           "read_requirement_file"]

PROJECT_FILES = ("setup.py", "setup.cfg", "pyproject.toml")
# Which file says what the project is called, when several do: setuptools' own order (setup()'s
# arguments over setup.cfg), then pyproject.toml, then built metadata.
_NAMING_ORDER = ("setup.py", "setup.cfg", "pyproject.toml", "EGG-INFO", "dist-info")
_MAX_INCLUDE_DEPTH = 5


@dataclass(frozen=True)
class RecipeMetadata:
    """A recipe's declared metadata. `requirements` joins every file that declares some, in the
    order pyproject.toml, setup.cfg, setup.py, requirements.txt, EGG-INFO, *.dist-info."""

    name: Optional[str] = None
    version: Optional[str] = None
    requirements: list[str] = field(default_factory=list)
    python_requires: Optional[str] = None
    entry_points: dict[str, dict[str, str]] = field(default_factory=dict)   # group -> name -> target
    package_dir: Optional[dict[str, str]] = None
    marker: Optional[str] = None        # setup.py | setup.cfg | pyproject.toml | EGG-INFO | dist-info
    sources: list[str] = field(default_factory=list)     # the files requirements were read from
    dynamic: list[str] = field(default_factory=list)     # fields only a build can tell
    # Option lines of a requirements file ("requirements.txt:2: '--index-url ...'"): not
    # requirements; the environment builder refuses them, the artifact store leaves them be.
    requirement_options: list[str] = field(default_factory=list)


def project_marker(folder: Path) -> Optional[str]:
    """What declares the Python project in `folder`: a project file, EGG-INFO (an unpacked egg),
    `dist-info` (an unpacked wheel), or None."""
    folder = Path(folder)
    for name in PROJECT_FILES:
        if (folder / name).is_file():
            return name
    if (folder / "EGG-INFO").is_dir():
        return "EGG-INFO"
    if any(p.is_dir() for p in folder.glob("*.dist-info")):
        return "dist-info"
    return None


def read_recipe_metadata(path: Path) -> RecipeMetadata:
    """The metadata of the project folder, unpacked egg or wheel, or .whl / .egg file at `path`."""
    path = Path(path)
    if path.is_file():
        return _from_archive(path)
    found: dict[str, dict[str, Any]] = {}     # source -> what it declares
    if (path / "pyproject.toml").is_file():
        found["pyproject.toml"] = _pyproject(path / "pyproject.toml")
    if (path / "setup.cfg").is_file():
        found["setup.cfg"] = _setup_cfg(path / "setup.cfg")
    if (path / "setup.py").is_file():
        found["setup.py"] = _setup_py(path / "setup.py")
    if (path / "requirements.txt").is_file():
        found["requirements.txt"] = _requirement_file(path / "requirements.txt", root=path)
    if (path / "EGG-INFO").is_dir():
        found["EGG-INFO"] = _egg_info({name: _text(path / "EGG-INFO" / name)
                                       for name in ("PKG-INFO", "requires.txt", "entry_points.txt")})
    for dist_info in sorted(p for p in path.glob("*.dist-info") if p.is_dir()):
        found[dist_info.name] = _dist_info({name: _text(dist_info / name)
                                            for name in ("METADATA", "entry_points.txt")})
    return _combine(found, project_marker(path), always=("EGG-INFO", ".dist-info"))


def read_requirement_file(path: Path, *, root: Optional[Path] = None) -> RecipeMetadata:
    """The requirement lines of one requirements file (`-r` includes followed, inside `root`)."""
    path = Path(path)
    declared = _requirement_file(path, root=Path(root) if root is not None else path.parent)
    return _combine({path.name: declared}, None)


# --- combining ------------------------------------------------------------------------------------

def _combine(found: dict[str, dict[str, Any]], marker: Optional[str],
             always: tuple[str, ...] = ()) -> RecipeMetadata:
    def naming(source: str) -> int:
        key = "dist-info" if source.endswith(".dist-info") else source
        return _NAMING_ORDER.index(key) if key in _NAMING_ORDER else len(_NAMING_ORDER)

    first: dict[str, Any] = {}
    for source in sorted(found, key=naming):
        for key in ("name", "version", "entry_points", "package_dir"):
            if found[source].get(key) and not first.get(key):
                first[key] = found[source][key]
    requirements: list[str] = []
    python_requires: Optional[str] = None
    sources, dynamic, options = [], [], []
    for source, declared in found.items():       # in reading order
        reqs = declared.get("requirements") or []
        if reqs or declared.get("python_requires") or source.endswith(always):
            sources.append(source)
        requirements += reqs
        python_requires = python_requires or declared.get("python_requires")
        dynamic += [d for d in declared.get("dynamic", ()) if d not in dynamic]
        options += declared.get("options", [])
    version = first.get("version")
    return RecipeMetadata(
        name=None if first.get("name") is None else str(first["name"]),
        version=None if version is None else str(version),
        requirements=list(dict.fromkeys(r.strip() for r in requirements if r.strip())),
        python_requires=python_requires, entry_points=first.get("entry_points") or {},
        package_dir=first.get("package_dir"), marker=marker, sources=sources, dynamic=dynamic,
        requirement_options=options)


def _text(path: Path) -> Optional[str]:
    return path.read_text(errors="replace") if path.is_file() else None


# --- setup.py -------------------------------------------------------------------------------------

class _Unknown:
    """A value setup.py computes when it runs."""


def _evaluate(node: ast.AST, names: dict[str, Any]) -> Any:
    """A literal, with names bound earlier in setup.py and `+` of literals allowed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_evaluate(e, names) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_evaluate(k, names): _evaluate(v, names) for k, v in zip(node.keys, node.values)
                if k is not None}
    if isinstance(node, ast.Name):
        return names.get(node.id, _Unknown())
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _evaluate(node.left, names), _evaluate(node.right, names)
        try:
            return left + right
        except TypeError:
            return _Unknown()
    return _Unknown()


def _known(value: Any) -> bool:
    if isinstance(value, _Unknown):
        return False
    if isinstance(value, dict):
        return all(_known(k) and _known(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_known(v) for v in value)
    return True


def _setup_py(path: Path) -> dict[str, Any]:
    try:
        tree = ast.parse(path.read_text(errors="replace"), filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"The recipe's setup.py is not valid Python: {exc}") from None
    names: dict[str, Any] = {}
    call: Optional[ast.Call] = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = _evaluate(node.value, names)
        if isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Name) and node.func.id == "setup") or
                (isinstance(node.func, ast.Attribute) and node.func.attr == "setup")):
            call = node
    if call is None:
        return {}
    kwargs: dict[str, Any] = {}
    dynamic: list[str] = []
    for kw in call.keywords:
        if kw.arg is None:           # setup(**options): read when it is a literal dict
            spread = _evaluate(kw.value, names)
            if isinstance(spread, dict):
                kwargs.update(spread)
            else:
                dynamic.append("requirements")
            continue
        kwargs[kw.arg] = _evaluate(kw.value, names)
    out: dict[str, Any] = {}
    for key in ("name", "version"):
        if isinstance(kwargs.get(key), (str, int, float)):
            out[key] = str(kwargs[key])
    if "entry_points" in kwargs:
        if _known(kwargs["entry_points"]):
            out["entry_points"] = _entry_points_value(kwargs["entry_points"])
        else:
            dynamic.append("entry_points")
    if "install_requires" in kwargs:
        requires = kwargs["install_requires"]
        if isinstance(requires, list) and all(isinstance(r, str) for r in requires):
            out["requirements"] = [r.strip() for r in requires if r.strip()]
        elif isinstance(requires, str):
            out["requirements"] = _declared_lines(requires)
        else:
            dynamic.append("requirements")
    if "python_requires" in kwargs:
        if isinstance(kwargs["python_requires"], str):
            out["python_requires"] = kwargs["python_requires"]
        else:
            dynamic.append("python_requires")
    if isinstance(kwargs.get("package_dir"), dict) and _known(kwargs["package_dir"]):
        out["package_dir"] = kwargs["package_dir"]
    out["dynamic"] = list(dict.fromkeys(dynamic))
    return out


# --- setup.cfg, pyproject.toml ----------------------------------------------------------------------

def _setup_cfg(path: Path) -> dict[str, Any]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    try:
        parser.read_string(path.read_text(errors="replace"))
    except configparser.Error as exc:
        raise ConfigError(f"The recipe's setup.cfg cannot be read: {exc}") from None
    out: dict[str, Any] = {}
    if parser.has_section("metadata"):
        out["name"] = parser.get("metadata", "name", fallback=None)
        out["version"] = parser.get("metadata", "version", fallback=None)
    if parser.has_section("options"):
        out["requirements"] = _declared_lines(parser.get("options", "install_requires",
                                                         fallback=""))
        out["python_requires"] = parser.get("options", "python_requires", fallback="") or None
        package_dir = parser.get("options", "package_dir", fallback="")
        if package_dir.strip():
            mapping = {}
            for line in package_dir.strip().splitlines():
                key, _, value = line.partition("=")
                mapping[key.strip()] = value.strip()
            out["package_dir"] = mapping
    if parser.has_section("options.entry_points"):
        out["entry_points"] = _entry_points_value(
            {g: v for g, v in parser.items("options.entry_points")})
    return out


def _pyproject(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(errors="replace"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The recipe's pyproject.toml is not valid TOML: {exc}") from None
    project = data.get("project") or {}
    setuptools_cfg = (data.get("tool") or {}).get("setuptools") or {}
    out: dict[str, Any] = {
        "name": project.get("name"), "version": project.get("version"),
        "requirements": [str(r) for r in project.get("dependencies") or []],
        "python_requires": project.get("requires-python"),
        "entry_points": {str(g): {str(k): str(v) for k, v in eps.items()}
                         for g, eps in (project.get("entry-points") or {}).items()
                         if isinstance(eps, dict)},
        "dynamic": [], "options": []}
    if "dependencies" in (project.get("dynamic") or []):
        # setuptools' `dependencies = {file = [...]}` is a plain requirements file: read it.
        spec = (setuptools_cfg.get("dynamic") or {}).get("dependencies") or {}
        files = spec.get("file") if isinstance(spec, dict) else None
        if files:
            for name in [files] if isinstance(files, str) else files:
                if (path.parent / name).is_file():
                    included = _requirement_file(path.parent / name, root=path.parent)
                    out["requirements"] += included["requirements"]
                    out["options"] += included["options"]
        else:
            out["dynamic"].append("requirements")
    if isinstance(setuptools_cfg.get("package-dir"), dict):
        out["package_dir"] = setuptools_cfg["package-dir"]
    return out


# --- requirements files -----------------------------------------------------------------------------

def _declared_lines(text: str) -> list[str]:
    """Requirement lines written in a metadata field (install_requires as text)."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line and not line.startswith("-"):
            out.append(line)
    return out


def _requirement_file(path: Path, *, root: Path, depth: int = 0) -> dict[str, Any]:
    """Requirement lines; `-r other.txt` is followed inside the recipe; other option lines (index
    URLs, `-e`) are kept aside in `options`."""
    if depth > _MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{path.name}: -r nests too deep")
    reqs: list[str] = []
    options: list[str] = []
    text = re.sub(r"\\\n", "", path.read_text(errors="replace"))    # line continuations
    for number, line in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        include = re.fullmatch(r"(?:-r|--requirement)(?:\s+|=|(?<=-r))(\S.*)", line)
        if include:
            target = (path.parent / include.group(1).strip()).resolve()
            if not target.is_relative_to(root.resolve()) or not target.is_file():
                raise ConfigError(f"{path.name}:{number}: {line!r} names a file outside the recipe "
                                  "or one that does not exist")
            inner = _requirement_file(target, root=root, depth=depth + 1)
            reqs += inner["requirements"]
            options += inner["options"]
        elif line.startswith("-"):
            options.append(f"{path.name}:{number}: {line!r}")
        else:
            reqs.append(line)
    return {"requirements": reqs, "options": options}


# --- built metadata: eggs and wheels -----------------------------------------------------------------

def _entry_point_text(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ConfigError(f"Unreadable entry points: {exc}") from None
    return {section: {k.strip(): v.strip() for k, v in parser.items(section)}
            for section in parser.sections()}


def _entry_points_value(value: Any) -> dict[str, dict[str, str]]:
    if isinstance(value, str):
        return _entry_point_text(value)
    if not isinstance(value, dict):
        raise ConfigError(f"setup(entry_points=...) must be a dict or INI text, got "
                          f"{type(value).__name__}")
    out: dict[str, dict[str, str]] = {}
    for group, items in value.items():
        if isinstance(items, str):
            items = [line for line in items.splitlines() if line.strip()]
        parsed: dict[str, str] = {}
        for item in items or []:
            name, sep, target = str(item).partition("=")
            if not sep:
                raise ConfigError(f"Entry point {item!r} in group {group!r} is not "
                                  "'name = target'")
            parsed[name.strip()] = target.strip()
        out[str(group)] = parsed
    return out


def _pkg_info(text: Optional[str]) -> dict[str, Any]:
    """Name, Version, Requires-Python and the Requires-Dist lines no extra asks for."""
    if not text:
        return {}
    from email.parser import Parser

    message = Parser().parsestr(text, headersonly=True)
    requires = [r.strip() for r in message.get_all("Requires-Dist") or []
                if "extra ==" not in r.replace("extra==", "extra ==")]
    return {"name": message.get("Name"), "version": message.get("Version"),
            "python_requires": (message.get("Requires-Python") or "").strip() or None,
            "requirements": requires}


def _egg_info(files: dict[str, Optional[str]]) -> dict[str, Any]:
    info = _pkg_info(files.get("PKG-INFO"))
    out: dict[str, Any] = {"name": info.get("name"), "version": info.get("version"),
                           "python_requires": info.get("python_requires"), "requirements": []}
    section = ""
    for line in (files.get("requires.txt") or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        extra, _, marker = section.partition(":")
        if not extra:           # `[:marker]` applies by default; `[extra]` only on request
            out["requirements"].append(f"{line}; {marker}" if marker else line)
    if files.get("entry_points.txt"):
        out["entry_points"] = _entry_point_text(files["entry_points.txt"] or "")
    return out


def _dist_info(files: dict[str, Optional[str]]) -> dict[str, Any]:
    out = _pkg_info(files.get("METADATA"))
    if files.get("entry_points.txt"):
        out["entry_points"] = _entry_point_text(files["entry_points.txt"] or "")
    return out


def _from_archive(path: Path) -> RecipeMetadata:
    if path.suffix not in (".whl", ".egg"):
        raise ConfigError(f"Recipe {path} is a file but neither a wheel (.whl) nor an egg (.egg)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())

            def read(name: str) -> Optional[str]:
                return zf.read(name).decode(errors="replace") if name in names else None

            if path.suffix == ".whl":
                meta = next((n for n in sorted(names)
                             if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)), None)
                if meta is None:
                    raise ConfigError(f"{path.name} has no *.dist-info/METADATA: not a wheel")
                folder = meta.rpartition("/")[0]
                declared = _dist_info({"METADATA": read(meta),
                                       "entry_points.txt": read(f"{folder}/entry_points.txt")})
                return _combine({meta: declared}, "dist-info", always=(meta,))
            declared = _egg_info({name: read(f"EGG-INFO/{name}")
                                  for name in ("PKG-INFO", "requires.txt", "entry_points.txt")})
            return _combine({"EGG-INFO": declared}, "EGG-INFO", always=("EGG-INFO",))
    except zipfile.BadZipFile as exc:
        raise ConfigError(f"{path.name} is not a valid zip archive: {exc}") from exc
