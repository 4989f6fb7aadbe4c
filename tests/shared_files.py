"""Which tests need the project's shared files (`../shared` beside the checkout: the API's reference
contract and the retail data set), read from the tests' source, so that a clone without them skips
exactly those tests, naming the file and where it is expected, and runs everything else.

A module-level name is *shared* when its value names the `shared` folder (`REPO.parent / "shared" /
...`) or another shared name; a module-level function or class is shared when its body uses a
shared name; a name imported from another module of tests/ is shared when it is shared there. A
test needs the files when its function, a fixture it uses (however indirectly), or anything shared
they call uses a shared name. A function that asks `NAME.exists()` of a shared path handles its
absence itself and is left to run.
"""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED = REPO.parent / "shared"

_SHARED_STRING = re.compile(r"(^|[\\/])shared([\\/]|$)")


def present() -> bool:
    return SHARED.is_dir()


def _shared_tail(node: ast.AST, known: dict[str, frozenset[str]]) -> Optional[frozenset[str]]:
    """The shared files an expression names (`REPO.parent / "shared" / "data" / "retail"` ->
    {"data/retail"}; `REFERENCE / "x.yaml"` -> {"reference/x.yaml"}), or None if it names none."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        left = _shared_tail(node.left, known)
        if left is not None:
            right = node.right
            if isinstance(right, ast.Constant) and isinstance(right.value, str):
                return frozenset(f"{p}/{right.value}".strip("/") for p in left)
            return left
        if isinstance(node.right, ast.Constant) and node.right.value == "shared":
            return frozenset({""})
        return _shared_tail(node.right, known)
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SHARED_STRING.search(node.value):
        return frozenset({_SHARED_STRING.split(node.value, maxsplit=1)[-1]})
    found: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id in known:
            found |= known[n.id]
        elif n is not node and isinstance(n, ast.Constant) and isinstance(n.value, str) \
                and _SHARED_STRING.search(n.value):
            found.add(_SHARED_STRING.split(n.value, maxsplit=1)[-1])
    return frozenset(found) if found else None


def _used_names(node: ast.AST) -> set[str]:
    """Names a node uses, `module.attr` included (a tests module imported whole)."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            out.add(f"{n.value.id}.{n.attr}")
    return out


def _literal_files(node: ast.AST) -> frozenset[str]:
    """Shared files a node names itself, in a string or a path expression (`REPO.parent /
    'shared' / 'data' / ...` written inside a test)."""
    found: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
            tail = _shared_tail(n, {})
            if tail and all(t for t in tail):
                found |= tail
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and _SHARED_STRING.search(n.value) \
                and ("/" in n.value or "\\" in n.value):
            found.add(_SHARED_STRING.split(n.value, maxsplit=1)[-1])
    return frozenset(found)


def _checked_for_existence(node: ast.AST) -> set[str]:
    """Names a function asks `.exists()` / `.is_file()` / `.is_dir()` of."""
    out = set()
    for n in ast.walk(node):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and n.func.attr in ("exists", "is_file", "is_dir") and isinstance(n.func.value, ast.Name)):
            out.add(n.func.value.id)
    return out


@lru_cache(maxsize=None)
def shared_names(path: Path) -> dict[str, frozenset[str]]:
    """The module-level names of one tests/ module that stand for (or use) shared files, each
    with the files (relative to the shared folder) it reaches."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return {}
    shared: dict[str, frozenset[str]] = {}
    bodies: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            tail = _shared_tail(node.value, shared)
            for name in (t.id for t in targets if isinstance(t, ast.Name)):
                if tail is not None:
                    shared[name] = tail
                else:
                    bodies[name] = node.value
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bodies[node.name] = node
        elif isinstance(node, ast.Import):
            for alias in node.names:
                source = _tests_module(alias.name, path)
                if source is not None:
                    for name, files in shared_names(source).items():
                        shared[f"{alias.asname or alias.name}.{name}"] = files
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            source = _tests_module(node.module, path)
            if source is not None:
                theirs = shared_names(source)
                for alias in node.names:
                    if alias.name in theirs:
                        shared[alias.asname or alias.name] = theirs[alias.name]
    changed = True
    while changed:   # a function using a shared name (or a shared function) is shared in turn
        changed = False
        for name, body in bodies.items():
            used = (_used_names(body) - _checked_for_existence(body)) & shared.keys()
            files = frozenset().union(*(shared[u] for u in used)) if used else frozenset()
            if used and shared.get(name) != files:
                shared[name] = files
                changed = True
    return shared


def _tests_module(module: str, importer: Path) -> Optional[Path]:
    """The file of tests/ that `from MODULE import ...` reads (tests/ and each folder are on the path)."""
    rel = Path(*module.split("."))
    for base in (importer.parent, TESTS, *[p for p in TESTS.iterdir() if p.is_dir()]):
        for candidate in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _function_uses(func: Any) -> frozenset[str]:
    """The shared files a test or fixture function reaches (relative to the shared folder)."""
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    path = Path(code.co_filename) if code is not None else Path()
    if code is None or not path.is_file() or TESTS not in path.resolve().parents:
        return frozenset()
    names = shared_names(path.resolve())
    node = _function_node(path.resolve(), code.co_firstlineno, code.co_name)
    if node is None:
        return frozenset()
    used = (_used_names(node) - _checked_for_existence(node)) & names.keys()
    return frozenset().union(_literal_files(node), *(names[u] for u in used))


@lru_cache(maxsize=None)
def _functions(path: Path) -> dict[tuple[int, str], ast.AST]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out[(node.lineno, node.name)] = node
            out[(first, node.name)] = node
    return out


def _function_node(path: Path, line: int, name: str) -> Optional[ast.AST]:
    found = _functions(path)
    return found.get((line, name)) or next(
        (n for (ln, nm), n in found.items() if nm == name and abs(ln - line) <= 3), None)


def needs_shared(item: Any) -> frozenset[str]:
    """The shared files a collected test needs (relative to the shared folder); empty if none."""
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        for defs in info.name2fixturedefs.values():
            funcs.extend(d.func for d in defs)
    files = frozenset().union(*(_function_uses(f) for f in funcs if f is not None))
    params = getattr(getattr(item, "callspec", None), "params", {})
    module = getattr(getattr(item, "module", None), "__file__", None)
    if params and module:
        for value in params.values():
            if isinstance(value, str):
                files |= _param_files(Path(module).resolve(), value)
    return files


def _param_files(module: Path, value: str) -> frozenset[str]:
    """A parameter naming a shared function of a tests module the test's module imports from or
    runs by its path (a scenario run by its name in a subprocess)."""
    try:
        tree = ast.parse(module.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return frozenset()
    sources = [_tests_module(node.module, module) for node in tree.body
               if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module]
    sources += [module.parent / n.value for n in ast.walk(tree)   # a script it runs by its path
                if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.endswith(".py")
                and "/" not in n.value and (module.parent / n.value).is_file()]
    for source in sources:
        if source is not None and value in shared_names(source):
            return shared_names(source)[value]
    return frozenset()


def skip_reason(files: frozenset[str]) -> str:
    named = ", ".join(str(SHARED / f) for f in sorted(files)) or str(SHARED)
    return (f"needs the project's shared files ({named}): the `shared` folder beside the checkout, "
            f"with reference/ and data/retail/, is not there")


def require(path: Path) -> None:
    """For a module that reads a shared file as it is imported: skip the whole module without it."""
    import pytest

    if not path.exists():
        pytest.skip(skip_reason(frozenset({str(path.relative_to(SHARED))}) if SHARED in path.parents
                                else frozenset()), allow_module_level=True)
