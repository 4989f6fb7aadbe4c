"""The shape of the house holds (benchmarks/house.py): no import circles among runtime's rooms, nor
between files under runtime/ and engines/, no import back up inside a folder but the store factory,
no file over 700 lines; and nothing but the registry reaches the store."""
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
    assert "runs" in graph and "registry" in graph["runs"]   # the graph is really read
    assert house.circles(graph) == []


def test_no_file_under_runtime_or_engines_imports_one_that_imports_it_back():
    house = _house()
    graph, _ = house.file_arrows()
    assert "engines/retail_sales/engine.py" in graph["engines/retail_sales/__init__.py"]   # really read
    assert house.file_circles(graph) == []


def test_no_import_runs_back_up_inside_a_folder_but_the_store_factory():
    house = _house()
    counted, allowed = house.back_up_in_folders(house.file_arrows()[0])
    assert {package for _, package in allowed} <= house.FACTORIES
    assert counted == []


def test_no_file_under_runtime_or_engines_is_over_700_lines():
    house = _house()
    _, lines = house.file_arrows()
    assert "engines/retail_sales/engine.py" in lines and "runtime/worker.py" in lines
    assert house.long_files(lines, 700) == []


def test_only_the_service_layer_reaches_the_store():
    """`registry.store` (or any `.store` attribute) is used by runtime/registry/ and the store
    package only: the faces, the run path and the supervisor ask the registry."""
    offenders = []
    for path in sorted((REPO / "runtime").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(("runtime/store/", "runtime/registry/")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "store":
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


def test_no_file_of_the_code_a_ray_job_uploads_is_named_like_a_working_dir_exclude():
    """The runtime's and the engines' code travel with a Ray job (runtime_env py_modules) under the
    same `excludes` as a working directory (`data`, `datasets`, `out`, ...): a module or folder so
    named would be left out on the cluster."""
    from fnmatch import fnmatch

    from runtime.backends.ray import WORKING_DIR_EXCLUDES

    patterns = [p for p in WORKING_DIR_EXCLUDES if p not in ("__pycache__", "*.pyc")]
    dropped = []
    for top in ("runtime", "engines"):
        for path in sorted((REPO / top).rglob("*")):
            rel = path.relative_to(REPO / top)
            if "__pycache__" in rel.parts or path.suffix == ".pyc":
                continue
            if any(rel.as_posix().startswith(p.rstrip("/")) if "/" in p else
                   any(fnmatch(part, p) for part in rel.parts) for p in patterns):
                dropped.append(f"{top}/{rel.as_posix()}")
    assert "datasets" in patterns   # the excludes are really read
    assert dropped == []
