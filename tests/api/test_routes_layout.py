"""The API's shape: routes per resource (runtime/api/routes/, each an APIRouter that the app
includes), and nothing under runtime/api but the server imports the app back."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

from fastapi import APIRouter

API = Path(__file__).resolve().parents[2] / "runtime" / "api"


def _imports_the_app(path: Path) -> bool:
    package = list(path.relative_to(API.parents[1]).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            names = [module + [a.name] for a in node.names] + [module]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        else:
            continue
        if any(n[:3] == ["runtime", "api", "app"] for n in names):
            return True
    return False


def test_no_route_and_no_page_imports_the_app():
    offenders = [p.relative_to(API).as_posix() for p in sorted(API.rglob("*.py"))
                 if p.name != "app.py" and p.name != "server.py" and _imports_the_app(p)]
    assert offenders == []


def test_every_resource_module_is_a_router_the_app_includes():
    from runtime.api import app

    modules = [p.stem for p in sorted((API / "routes").glob("*.py"))
               if p.stem not in ("__init__", "collection")]
    assert {"engines", "mlinstances", "experiments", "models", "insights", "mlservices"} <= set(modules)
    for name in modules:
        router = importlib.import_module(f"runtime.api.routes.{name}").router
        assert isinstance(router, APIRouter) and router in app.ROUTERS, name
