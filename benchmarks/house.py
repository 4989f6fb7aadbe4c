"""The shape of the house, measured: rooms, floors, import circles, arrows running back up, the
largest file and the function-level imports, from the source alone (nothing is imported).

A room is one top-level module or subpackage of `runtime` (`runtime/execution.py`,
`runtime/backends/`); an arrow is any import of one room by another, function-level imports
included (they are still a dependency, only a later one). A circle is a set of rooms that import
each other round (a strongly connected component of two or more rooms). Floors are the longest
chain of arrows once each circle is folded into one room. An arrow back up is one that closes a
circle: the rooms are ordered so that as few arrows as possible point backwards (Eades-Lin-Smyth's
greedy order, per circle), and the backward ones are counted and listed.

    python benchmarks/house.py            # the figures
    python benchmarks/house.py --arrows   # and every arrow back up, and every circle
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "runtime"


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
    if args.arrows:
        for comp in comps:
            print("circle:", " ".join(comp))
        for u, w in back:
            print(f"back up: {u} -> {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
