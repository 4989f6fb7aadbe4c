"""The shape of the house holds: no import circles among runtime's rooms (benchmarks/house.py),
and nothing but the service layer reaches the store."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _house():
    spec = importlib.util.spec_from_file_location("house", REPO / "benchmarks" / "house.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_room_of_runtime_imports_one_that_imports_it_back():
    house = _house()
    graph, _, _ = house.arrows()
    assert "runs" in graph and "service" in graph["runs"]   # the graph is really read
    assert house.circles(graph) == []


def test_only_the_service_layer_reaches_the_store():
    """`registry.store` (or any `.store` attribute) is used by runtime/service.py and the store
    package only: the faces, the run path and the supervisor ask the service."""
    offenders = []
    for path in sorted((REPO / "runtime").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("runtime/store/") or rel == "runtime/service.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "store":
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
