"""The shape of the house, measured: rooms, floors, import circles, arrows running back up, the
largest file and the function-level imports, from the source alone (nothing is imported).

A room is one top-level module or subpackage of `runtime` (`runtime/execution.py`,
`runtime/backends/`); an arrow is any import of one room by another, function-level imports
included (they are still a dependency, only a later one). A circle is a set of rooms that import
each other round (a strongly connected component of two or more rooms). Floors are the longest
chain of arrows once each circle is folded into one room. An arrow back up is one that closes a
circle: the rooms are ordered so that as few arrows as possible point backwards (Eades-Lin-Smyth's
greedy order, per circle), and the backward ones are counted and listed.

The same, one level down: files. Every `.py` file under `runtime/` and `engines/` is a module; an
import names the file it loads (`from .store import Scope` the package's `__init__.py`, `from . import
sqlite` the submodule), function-level and `TYPE_CHECKING` imports included. A file circle is a set
of files that import each other round. An import of a file's own package (`from . import X` inside
the package, or any package above it) is counted apart: it runs back up inside a folder when that
package's `__init__.py` imports the file in turn, directly or through others (one exception: a store
factory, whose `__init__.py` names the interface and picks the implementation on use). Files over
700 lines are listed.

    python benchmarks/house.py            # the figures
    python benchmarks/house.py --arrows   # and every arrow back up, every circle, every long file
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "runtime"
FILE_PACKAGES = ("runtime", "engines")   # the file-level view covers both
MAX_LINES = 700
# Packages whose __init__.py may import the files that import it: a factory over implementations
# (the store's `open_store` names the interface here and loads its SQLite implementation on use).
FACTORIES = {"runtime/store/__init__.py"}


def room_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if rel.parts else "__init__"


def _package(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1]   # a module's package; for __init__.py, the package itself


def _rooms(node: ast.AST, path: Path) -> list[str]:
    """The rooms of ours an import statement names."""
    if isinstance(node, ast.Import):
        names = [a.name.split(".") for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            pkg = _package(path)
            base = pkg[: len(pkg) - (node.level - 1)]
        else:
            base = []
        mod = base + (node.module.split(".") if node.module else [])
        names = [mod + [a.name] for a in node.names] if len(mod) < 2 else [mod]
    else:
        return []
    out = []
    for parts in names:
        if len(parts) >= 2 and parts[0] == "runtime":
            room = parts[1]
            if (PACKAGE / f"{room}.py").exists() or (PACKAGE / room).is_dir():
                out.append(room)
    return out


def _late_imports(node: ast.AST, inside: bool = False) -> int:
    """Import statements inside a function body (each counted once, however deep)."""
    count = 0
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)) and inside:
            count += 1
        count += _late_imports(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return count


def arrows() -> tuple[dict[str, set[str]], dict[str, int], dict[str, int]]:
    graph: dict[str, set[str]] = defaultdict(set)
    lines: dict[str, int] = {}
    late: dict[str, int] = defaultdict(int)
    for path in sorted(PACKAGE.rglob("*.py")):
        room = room_of(path)
        if room == "__init__":
            continue
        text = path.read_text()
        lines[str(path.relative_to(ROOT))] = text.count("\n")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            for target in _rooms(node, path):
                if target != room:
                    graph[room].add(target)
        late[str(path.relative_to(ROOT))] += _late_imports(tree)
        graph.setdefault(room, set())
    return graph, lines, late


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of two or more rooms."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def back_arrows(graph: dict[str, set[str]], comp: list[str]) -> list[tuple[str, str]]:
    """Eades-Lin-Smyth: order the circle's rooms (sinks last, sources first, else the room with
    the most arrows out less in), then the arrows pointing back against that order."""
    nodes = set(comp)
    out = {v: {w for w in graph[v] if w in nodes} for v in nodes}
    inc = {v: {u for u in nodes if v in out[u]} for v in nodes}
    left, right = [], []
    while nodes:
        changed = True
        while changed:
            changed = False
            for v in sorted(nodes):
                if not (out[v] & nodes):
                    right.insert(0, v); nodes.discard(v); changed = True
                elif not (inc[v] & nodes):
                    left.append(v); nodes.discard(v); changed = True
        if nodes:
            v = max(sorted(nodes), key=lambda n: len(out[n] & nodes) - len(inc[n] & nodes))
            left.append(v)
            nodes.discard(v)
    order = {v: i for i, v in enumerate(left + right)}
    return sorted((u, w) for u in comp for w in out[u] if order[w] < order[u])


def floors(graph: dict[str, set[str]], comps: list[list[str]]) -> int:
    folded = {v: v for v in graph}
    for comp in comps:
        for v in comp:
            folded[v] = "+".join(comp)
    dag: dict[str, set[str]] = defaultdict(set)
    for v, targets in graph.items():
        for w in targets:
            if folded[v] != folded[w]:
                dag[folded[v]].add(folded[w])
    depth: dict[str, int] = {}

    def height(v: str) -> int:
        if v not in depth:
            depth[v] = 1 + max((height(w) for w in dag.get(v, ())), default=0)
        return depth[v]

    return max(height(v) for v in set(folded.values()))


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every file of the file-level view."""
    out: dict[str, Path] = {}
    for top in FILE_PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _file_targets(node: ast.AST, path: Path, modules: dict[str, Path]) -> list[Path]:
    """The files of ours an import statement loads by name."""
    if isinstance(node, ast.Import):
        wanted = [a.name for a in node.names]
        out = []
        for name in wanted:
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts:
                out.append(modules[".".join(parts)])
        return out
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        pkg = _package(path)
        base = pkg[: len(pkg) - (node.level - 1)]
    else:
        base = []
    mod = ".".join(base + (node.module.split(".") if node.module else []))
    out = []
    for alias in node.names:
        if f"{mod}.{alias.name}" in modules:
            out.append(modules[f"{mod}.{alias.name}"])   # a submodule
        elif mod in modules:
            out.append(modules[mod])                     # a name the module (or __init__) defines
    return out


def file_arrows() -> tuple[dict[str, set[str]], dict[str, int]]:
    """File -> the files it imports (repository-relative paths), and each file's line count."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    lines: dict[str, int] = {}
    for path in sorted(set(modules.values())):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        lines[rel] = text.count("\n")
        graph.setdefault(rel, set())
        for node in ast.walk(ast.parse(text)):
            for target in _file_targets(node, path, modules):
                if target != path:
                    graph[rel].add(target.relative_to(ROOT).as_posix())
    return graph, lines


def _own_package(src: str, target: str) -> bool:
    """`target` is the __init__.py of a package that holds `src` (at any depth)."""
    return target.endswith("/__init__.py") and src.startswith(target.removesuffix("__init__.py"))


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w == goal:
                return True
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return False


def file_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Circles between files, imports of a file's own package left to `back_up_in_folders`."""
    sideways = {v: {w for w in ws if not _own_package(v, w)} for v, ws in graph.items()}
    return circles(sideways)


def back_up_in_folders(graph: dict[str, set[str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Imports of a file's own package whose __init__.py imports the file back: (counted, allowed
    as a store factory)."""
    counted, allowed = [], []
    for v in sorted(graph):
        for w in sorted(graph[v]):
            if _own_package(v, w) and _reaches(graph, w, v):
                (allowed if w in FACTORIES else counted).append((v, w))
    return counted, allowed


def long_files(lines: dict[str, int], limit: int = MAX_LINES) -> list[tuple[str, int]]:
    return sorted(((f, n) for f, n in lines.items() if n > limit), key=lambda fn: -fn[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrows", action="store_true", help="list the circles and arrows back up")
    args = parser.parse_args()
    graph, lines, late = arrows()
    comps = circles(graph)
    back = [a for comp in comps for a in back_arrows(graph, comp)]
    largest = max(lines, key=lines.get)
    print(f"rooms            {len(graph)}")
    print(f"floors           {floors(graph, comps)}")
    print(f"circles          {len(comps)}  (sizes {', '.join(str(len(c)) for c in comps) or '-'})")
    print(f"arrows back up   {len(back)}")
    print(f"largest file     {largest} ({lines[largest]} lines, {late.get(largest, 0)} function-level imports)")
    print(f"function-level imports, all files: {sum(late.values())}")
    fgraph, flines = file_arrows()
    fcomps = file_circles(fgraph)
    up, up_allowed = back_up_in_folders(fgraph)
    long = long_files(flines)
    print(f"files            {len(fgraph)}  (runtime/ and engines/)")
    print(f"file circles     {len(fcomps)}  (sizes {', '.join(str(len(c)) for c in fcomps) or '-'})")
    print(f"back up in a folder  {len(up)}  (and {len(up_allowed)} allowed: a store factory)")
    print(f"files over {MAX_LINES} lines  {len(long)}" + (f"  ({', '.join(f'{f} {n}' for f, n in long)})" if long else ""))
    if args.arrows:
        for comp in comps:
            print("circle:", " ".join(comp))
        for u, w in back:
            print(f"back up: {u} -> {w}")
        for comp in fcomps:
            print("file circle:", " ".join(comp))
        for u, w in up:
            print(f"back up in a folder: {u} -> {w}")
        for u, w in up_allowed:
            print(f"allowed (store factory): {u} -> {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
