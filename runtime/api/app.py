"""The REST API under /data/sensei, a thin face over the service layer: the app is built here
(lifespan, error handlers, docs, the OpenAPI's error statuses) from the routers of routes/ and the
runs page of web/; what the routes share is in deps.py.

Every error, ours or the framework's, leaves as the contract's body `{type, title, status, detail}`.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Iterator, Optional

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..data_roots import data_roots_for
from ..errors import BadRequest, MLRuntimeError
from ..registry import Caller, Registry
from . import web
from .deps import BASE, ServerSettings, authenticated, error_response
from .docs import mount_docs
from .routes import (engines, experiments, insights, invocations, mlinstances, mlservices, models,
                     v2)

__all__ = ["BASE", "ServerSettings", "create_app"]

log = logging.getLogger("runtime.api")

# The routers, each a resource's routes; a resource's fixed paths come before its ids'.
ROUTERS = (engines.router, mlinstances.router, experiments.router, models.router,
           insights.router, mlservices.router, invocations.router, v2.router)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this request's path, for a 405's `Allow` header."""
    from starlette.routing import Match

    methods: set[str] = set()
    path = None   # the first route that matches the path is the one that serves it
    for route in _routes(request.app.router.routes):
        route_methods = getattr(route, "methods", None)
        if not route_methods or route.matches(request.scope)[0] not in (Match.FULL, Match.PARTIAL):
            continue
        path = path or route.path
        if route.path == path:
            methods |= set(route_methods)
    return sorted(methods)


def _routes(routes: Any) -> Iterator[Any]:
    """The routes in the order they are matched. FastAPI before 0.13x copies an included router's
    routes into the app's; later versions keep the router as one entry (`original_router`)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        else:
            yield route


def _add_routes(app: FastAPI) -> list[str]:
    """The resources' routes, straight into the app's table: an included router is one nested
    entry that FastAPI matches twice per request (to choose it, then inside it), a third of a
    GET-by-id's time; these routers carry no prefix, dependencies or tags to lose. Then each
    `GET /{collection}/{id}` that no route before it can match moves to the front: a request
    tries every route in order until one matches, and these are the ones most asked for. A route
    moves only past routes that share no path with it, so every request meets the same route."""
    table = app.router.routes
    for router in ROUTERS:
        table.extend(router.routes)
    declared = [route.path for route in table if hasattr(route, "path")]
    hot = [route for index, route in enumerate(table) if _is_get_by_id(route)
           and not any(_may_share_a_path(before, route) for before in table[:index])]
    table[:] = hot + [route for route in table if route not in hot]
    return declared


def _is_get_by_id(route: Any) -> bool:
    path = getattr(route, "path", "")
    return (isinstance(route, APIRoute) and route.methods == {"GET"} and path.endswith("/{id}")
            and path.startswith(BASE + "/") and path.count("/") == BASE.count("/") + 2)


def _may_share_a_path(route: Any, other: APIRoute) -> bool:
    """Whether some path matches both routes; True when in doubt (a route of another kind, a
    segment mixing text and a parameter). A parameter matches one segment, `{x:path}` the rest."""
    path = getattr(route, "path", None)
    if path is None or not isinstance(route, (APIRoute, Route, Mount)):
        return True
    if isinstance(route, Mount):
        path = path.rstrip("/") + "/{path:path}"
    mine, theirs = path.split("/"), other.path.split("/")
    for index, segment in enumerate(mine):
        if segment.startswith("{") and segment.endswith(":path}"):
            return True if index < len(theirs) else False
        if index >= len(theirs):
            return False
        if "{" not in segment and "{" not in theirs[index] and segment != theirs[index]:
            return False
    return len(mine) == len(theirs)


_ERROR_SCHEMA = {"type": "object", "properties": {
    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
    "detail": {"type": "string"}}}
_ERRORS = {
    "400": "Bad request: a malformed body or query, an invalid field, an unknown listing field",
    "401": "A missing or unknown bearer token (with tokens configured: every route, any path)",
    "403": "The token's grant does not reach the org or sandbox asked for, or a data set (or a "
           "recipe path) lies outside the server's data roots",
    "404": "No such object in this sandbox (deleted objects included), or no such path",
    "406": "The Accept header names nothing this API answers (it answers JSON)",
    "500": "An internal error; the server log has the details",
}
_BODY_ERRORS = {
    "413": "The body is over the server's limit (--max-body-mb; uploads --max-upload-mb)",
    "415": "The body has no JSON (or, where taken, multipart) Content-Type: send "
           "'Content-Type: application/json' (curl -d alone sends form encoding)",
}
_SPECIFIC_ERRORS = {
    ("get", f"{BASE}/engines/dockerRegistry"):
        {"404": "Always: engines are installed plugins here, there is no Docker registry"},
    ("get", f"{BASE}/insights/metrics"): {"404": "The algorithm is not one this runtime knows"},
    ("post", f"{BASE}/models/{{id}}/transcodings"):
        {"422": "Always: this runtime produces no transcodings"},
    ("post", f"{BASE}/experiments/{{experiment_id}}/runs"):
        {"400": "The body is invalid, or the run can never start on this host (it asks for more "
                "CPUs, GPUs or memory than the host has): the detail says which"},
    ("post", f"{BASE}/experiments/{{experiment_id}}/runs/{{run_id}}/cancel"):
        {"404": "No such experiment or run", "409": "The run already ended (DONE, FAILED or "
                                                     "ABORTED): there is nothing to cancel"},
}


def _document_errors(app: FastAPI, declared: list[str]) -> None:
    """The OpenAPI the server serves names every status it answers: the error statuses of each
    route (the body `{type, title, status, detail}`), and 405 with `Allow` for other methods. Its
    paths come in the order `declared` (that of the routes before the hot ones moved)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        paths = schema.get("paths", {})
        schema["paths"] = {path: paths[path] for path in dict.fromkeys([*declared, *paths])
                           if path in paths}
        schema["info"]["description"] = (
            "The Sensei ML API served locally. Every 4xx/5xx body is {type, title, status, "
            "detail}. A method a path does not serve is a 405 whose Allow header lists those it "
            "does. Paths take no trailing slash.")
        content = {"application/json": {"schema": _ERROR_SCHEMA}}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                if responses.get("422", {}).get("description") == "Validation Error":
                    del responses["422"]   # invalid input is a 400 here
                errors = {**_ERRORS, **(_BODY_ERRORS if method in ("post", "put") else {}),
                          **_SPECIFIC_ERRORS.get((method, path), {})}
                for status, text in errors.items():
                    responses.setdefault(status, {"description": text, "content": content})
        schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _prewarm(app: FastAPI) -> None:
    try:
        await invocations.prewarm(app)
    except Exception as exc:   # a server goes on without: the first requests start what is needed
        print(f"Online scoring: warming the published Models failed: {exc}", flush=True)


def create_app(settings: ServerSettings, registry: Optional[Registry] = None) -> FastAPI:
    """The ASGI app. The registry opens here, not at import."""
    registry = registry or Registry.open(settings.home)
    # With tokens the server holds several users' requests: their data sets stay under the roots.
    registry.data_roots = data_roots_for(settings.home.root, settings.data_roots,
                                         shared=bool(settings.tokens))
    executor = None
    if settings.execute_runs:
        from ..runs import RunExecutor
        from ..warm import pools_for

        executor = RunExecutor(registry, default_backend=settings.run_backend,
                               backend_options=settings.backend_options, kind="server",
                               max_concurrent_runs=settings.max_concurrent_runs,
                               warm=pools_for(settings.home.root, kind="server", flag=settings.warm))
    scheduler = None
    if executor is not None and settings.schedule_runs:
        from ..scheduler import Scheduler

        # Scheduled runs take the path of POST .../runs (RunExecutor.start), their claim its hook
        scheduler = Scheduler(registry, runs=executor)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if executor is not None and settings.reconcile_runs:
            summary = await run_in_threadpool(executor.reconcile)
            if summary.total():
                print(f"Start-up: {summary.summary()}", flush=True)
        if scheduler is not None:   # after reconciliation: fires join the queue behind it
            scheduler.start()
        # Online scoring: the published Models' environments and hosts, in the background
        prewarm = asyncio.get_running_loop().create_task(_prewarm(app))
        yield
        prewarm.cancel()
        if getattr(app.state, "serving", None) is not None:   # online scoring's model hosts
            await app.state.serving.aclose()
        if scheduler is not None:
            await run_in_threadpool(scheduler.stop)
        if executor is not None:   # running runs get the grace period, then are aborted
            await run_in_threadpool(executor.shutdown, settings.grace_s, app.state.stop_now)

    app = FastAPI(title="MLInstance Runtime — Sensei ML API", version="1.0", lifespan=lifespan,
                  docs_url=None, openapi_url=f"{BASE}/openapi.json", redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None)
    mount_docs(app, BASE, f"{BASE}/openapi.json")   # Swagger UI and ReDoc with local assets
    app.router.redirect_slashes = False   # `/engines/` is no alias of the listing: a 404
    # The handles the routes' dependencies read (api/deps.py).
    app.state.registry = registry
    app.state.settings = settings
    app.state.executor = executor
    app.state.scheduler = scheduler
    app.state.local_user = Caller.local().user_id   # the caller on loopback without tokens
    app.state.stop_now = threading.Event()   # set by a second signal: abort runs at once

    @app.exception_handler(MLRuntimeError)
    async def _runtime_error(request: Request, exc: MLRuntimeError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405) and settings.tokens:
            try:   # with tokens, a request without one learns nothing, not even what exists
                authenticated(request)
            except MLRuntimeError as denied:
                return error_response(denied)
        path = request.url.path
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            detail = "No such resource: " + path
            if path.endswith("/") and path.rstrip("/"):
                detail += f" (paths take no trailing slash: {path.rstrip('/')})"
        elif exc.status_code == 405:
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed on {path}; allowed: {', '.join(allowed)}"
        else:
            detail = str(exc.detail)
        err = MLRuntimeError(detail, status=exc.status_code, title={
            404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error"))
        err.slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "error")
        response = error_response(err)
        response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(BadRequest(f"Invalid request: {exc.errors()}"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("Unhandled error on %s %s", request.method, request.url.path)
        return error_response(MLRuntimeError(
            f"Internal error while serving {request.method} {request.url.path}; "
            "the server log has the details"))

    _document_errors(app, _add_routes(app))
    app.include_router(web.router)   # the runs page at / and its JSON (runtime/api/web)
    app.mount("/ui/static", StaticFiles(directory=web.STATIC), name="ui-static")
    return app
