"""The REST API under /data/sensei: a thin face over the service layer.

Handlers parse the request (headers, query, body), call `Registry`, and write the contract's JSON
shapes and content-type profiles. Every error, ours or the framework's, leaves as the contract's
body `{type, title, status, detail}`.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response

from ..errors import (BadRequest, MLRuntimeError, NotAcceptable, NotFound, PayloadTooLarge,
                      Unprocessable, UnsupportedMediaType)
from ..data_roots import data_roots_for
from ..home import Home
from .auth import authenticate
from .docs import mount_docs
from ..listing import parse_list_query
from ..schemas import (ENGINE, EXPERIMENT, EXPERIMENT_RUN, INSIGHT, MLINSTANCE, MLSERVICE, MODEL,
                       Kind)
from ..registry import Caller, Page, Registry

log = logging.getLogger("runtime.api")

BASE = "/data/sensei"
SENSEI_JSON = "application/vnd.adobe.platform.sensei+json"
_JSON_TYPES = ("application/json", SENSEI_JSON)
# The binary parts the contract names beside each multipart entity part.
_FILE_PARTS = {
    "engine": ("defaultArtifact", "preprocessOverrideArtifact", "featurePipelineOverrideArtifact",
               "trainOverrideArtifact", "batchScoreOverrideArtifact", "validateOverrideArtifact",
               "evaluateOverrideArtifact", "publishOverrideArtifact"),
    "model": ("modelArtifact",),
}
_ACCEPTABLE = ("*/*", "application/*", "application/json", SENSEI_JSON, "application/octet-stream",
               "text/*", "text/plain")   # artifacts are bytes, run logs are text


@dataclass
class ServerSettings:
    home: Home
    tokens: dict[str, Any] = field(default_factory=dict)   # bearer token -> user id | TokenGrant
    max_body_bytes: int = 1 << 20            # JSON bodies
    max_upload_bytes: int = 512 << 20        # multipart uploads (engine and model artifacts)
    execute_runs: bool = True                # POST .../runs executes runs in the background
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)   # per backend name
    run_backend: Optional[str] = None        # the backend of those runs (e.g. "ray"); None: planned
    grace_s: float = 30.0                    # on stop: how long running runs may still finish
    max_concurrent_runs: Optional[int] = None   # None: the host's CPU slots, GPUs and memory cap it
    reconcile_runs: bool = True              # at start: settle runs of a dead server or CLI
    # --data-root folders (else MLRUNTIME_DATA_ROOTS; with tokens and neither: HOME/data)
    data_roots: list[str] = field(default_factory=list)
    warm: Optional[str] = None               # "cold": no warm parents (runtime.warm); None: used
    # MLServices' and Experiments' schedules fire runs (runtime.scheduler); MLRUNTIME_SCHEDULER=off
    schedule_runs: bool = field(default_factory=lambda: os.environ.get(
        "MLRUNTIME_SCHEDULER", "").strip().lower() not in ("off", "0", "false", "no"))


def _media(profile: str) -> str:
    return f"{SENSEI_JSON};profile={profile}"


def _json(doc: Any, profile: str, status: int = 200,
          headers: Optional[dict[str, str]] = None) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")).encode(), status_code=status,
                    media_type=_media(profile), headers=headers)


def _error_response(err: MLRuntimeError) -> Response:
    return Response(json.dumps(err.to_body()).encode(), status_code=err.status,
                    media_type="application/json")


class Api:
    """Request parsing shared by every route."""

    def __init__(self, registry: Registry, settings: ServerSettings) -> None:
        self.registry = registry
        self.settings = settings
        self.local_user = Caller.local().user_id

    def caller(self, request: Request) -> Caller:
        """Who asks, from which org and sandbox (see auth.py); also refuses an unacceptable
        `Accept`. Authentication comes first: without a valid token every route is a 401."""
        caller = authenticate(self.settings.tokens, request.headers,
                              request.client.host if request.client else None, self.local_user)
        self.check_accept(request)
        return caller

    @staticmethod
    def check_accept(request: Request) -> None:
        accept = request.headers.get("accept")
        if not accept:
            return
        for part in accept.split(","):
            media = part.split(";", 1)[0].strip().lower()
            if media in _ACCEPTABLE or media.endswith("+json"):
                return
        raise NotAcceptable(f"Cannot answer with {accept!r}: this API answers JSON "
                            f"({SENSEI_JSON};profile=...)")

    async def read_raw(self, request: Request, limit: int) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"The request body of {int(length)} bytes is over the limit of "
                                  f"{limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def media_type(request: Request) -> str:
        return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def json_body(self, request: Request) -> Any:
        """The JSON body. Like the platform, a body needs a JSON Content-Type: anything else
        (none, or curl's `-d` default, form encoding) is a 415 that names the header to add."""
        media = self.media_type(request)
        if media not in _JSON_TYPES:
            shown = request.headers.get("content-type") or "none"
            raise UnsupportedMediaType(
                f"Unsupported content type {shown!r}: send the header 'Content-Type: "
                "application/json' (curl: -H 'Content-Type: application/json'; -d alone sends "
                f"form encoding) or '{SENSEI_JSON};profile=...'")
        raw = await self.read_raw(request, self.settings.max_body_bytes)
        if not raw.strip():
            raise BadRequest("The request body is empty: a JSON object is required")
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"Malformed JSON body: {exc}") from None

    async def multipart(self, request: Request, entity_part: str) -> tuple[Any, dict[str, bytes]]:
        """The JSON entity part and the binary parts of a multipart/form-data request."""
        length = request.headers.get("content-length")
        limit = self.settings.max_upload_bytes
        if length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"The upload of {int(length)} bytes is over the limit of "
                                  f"{limit} bytes")
        try:
            form = await request.form(max_part_size=limit)
        except Exception as exc:  # starlette raises its own parser errors
            raise BadRequest(f"Malformed multipart body: {exc}") from None
        entity: Any = None
        files: dict[str, bytes] = {}
        allowed = _FILE_PARTS[entity_part]
        for name, value in form.multi_items():
            if name != entity_part and name not in allowed:
                # a part name becomes a file name: only the contract's names, never a path
                raise BadRequest(f"Unknown multipart part {name!r}: expected {entity_part!r} "
                                 f"and optionally {', '.join(repr(a) for a in allowed)}")
            payload = await value.read() if isinstance(value, UploadFile) else value.encode()
            if name == entity_part:
                try:
                    entity = json.loads(payload)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise BadRequest(f"Malformed JSON in the {entity_part!r} part: {exc}") from None
            elif payload:
                files[name] = payload
        if entity is None:
            raise BadRequest(f"The multipart body has no {entity_part!r} part")
        return entity, files

    @staticmethod
    def listing(request: Request, kind: Kind, page: Page) -> Response:
        q = page.query
        base = str(request.url.replace(query=""))
        common = {"limit": q.limit, "orderby": q.orderby_text, "property": q.property_text}
        page_info: dict[str, Any] = {"orderby": q.orderby_text, "property": q.property_text,
                                     "start": str(q.start), "totalCount": page.total,
                                     "count": len(page.children)}
        links: dict[str, Any] = {"self": {"href": f"{base}?{urlencode({'start': q.start, **common})}"}}
        if q.limit and q.start + len(page.children) < page.total:   # limit=0: a count only
            nxt = q.start + q.limit
            page_info["next"] = str(nxt)
            links["next"] = {"href": f"{base}?{urlencode({'start': nxt, **common})}"}
        body = {"children": page.children, "_page": page_info, "_links": links}
        return _json(body, kind.listing_profile)


async def write(operation: Any, *args: Any) -> Any:
    """Runs a registry write on a worker thread: a write may wait for SQLite's lock (another
    process, such as a CLI, writing the same file), and the event loop must keep serving."""
    return await run_in_threadpool(operation, *args)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _list_params(request: Request) -> dict[str, str]:
    """A listing's query parameters; one given twice is a 400 (`orderby` and `property` take
    comma-separated lists, not repeats), never silently the last one."""
    params = request.query_params
    for name in ("start", "limit", "orderby", "property"):
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"The query parameter {name} is given more than once; "
                             "orderby and property take comma-separated lists")
    return dict(params)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this request's path, for a 405's `Allow` header."""
    from starlette.routing import Match

    methods: set[str] = set()
    path = None   # the first route that matches the path is the one that serves it
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if not route_methods or route.matches(request.scope)[0] not in (Match.FULL, Match.PARTIAL):
            continue
        path = path or route.path
        if route.path == path:
            methods |= set(route_methods)
    return sorted(methods)


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


def _document_errors(app: FastAPI) -> None:
    """The OpenAPI the server serves names every status it answers: the error statuses of each
    route (the body `{type, title, status, detail}`), and 405 with `Allow` for other methods."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
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


def _success(detail: str) -> Response:
    return _json({"title": "Success", "status": 200, "detail": detail}, "api-response.v1.json")


def create_app(settings: ServerSettings, registry: Optional[Registry] = None) -> FastAPI:
    """The ASGI app. The registry opens here, not at import."""
    registry = registry or Registry.open(settings.home)
    # With tokens the server holds several users' requests: their data sets stay under the roots.
    registry.data_roots = data_roots_for(settings.home.root, settings.data_roots,
                                         shared=bool(settings.tokens))
    api = Api(registry, settings)
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

        # Scheduled runs take the path of POST .../runs: admit, create, submit_background.
        scheduler = Scheduler(registry, submit=executor.submit_background, admit=executor.admit)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if executor is not None and settings.reconcile_runs:
            summary = await run_in_threadpool(executor.reconcile)
            if summary.total():
                print(f"Start-up: {summary.summary()}", flush=True)
        if scheduler is not None:   # after reconciliation: fires join the queue behind it
            scheduler.start()
        yield
        if scheduler is not None:
            await run_in_threadpool(scheduler.stop)
        if executor is not None:   # running runs get the grace period, then are aborted
            await run_in_threadpool(executor.shutdown, settings.grace_s, app.state.stop_now)

    app = FastAPI(title="MLInstance Runtime — Sensei ML API", version="1.0", lifespan=lifespan,
                  docs_url=None, openapi_url=f"{BASE}/openapi.json", redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None)
    mount_docs(app, BASE, f"{BASE}/openapi.json")   # Swagger UI and ReDoc with local assets
    app.router.redirect_slashes = False   # `/engines/` is no alias of the listing: a 404
    _document_errors(app)
    app.state.registry = registry
    app.state.settings = settings
    app.state.executor = executor
    app.state.scheduler = scheduler
    app.state.stop_now = threading.Event()   # set by a second signal: abort runs at once

    @app.exception_handler(MLRuntimeError)
    async def _runtime_error(request: Request, exc: MLRuntimeError) -> Response:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405) and settings.tokens:
            try:   # with tokens, a request without one learns nothing, not even what exists
                authenticate(settings.tokens, request.headers,
                             request.client.host if request.client else None, api.local_user)
            except MLRuntimeError as denied:
                return _error_response(denied)
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
        response = _error_response(err)
        response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(BadRequest(f"Invalid request: {exc.errors()}"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("Unhandled error on %s %s", request.method, request.url.path)
        return _error_response(MLRuntimeError(
            f"Internal error while serving {request.method} {request.url.path}; "
            "the server log has the details"))

    def _location(request: Request, path: str) -> dict[str, str]:
        return {"Location": str(request.base_url).rstrip("/") + path}

    # -- generic collections ------------------------------------------------------------------

    def add_collection(kind: Kind, *, create: bool = True, update: bool = True,
                       delete: bool = True, bulk_delete: Optional[str] = None,
                       view: Any = None) -> None:
        """`view(caller, doc)`: the document as answered (e.g. an MLService with its status)."""
        path = f"{BASE}/{kind.collection}"
        shown = view or (lambda caller, doc: doc)

        @app.get(path, name=f"list_{kind.collection}")
        async def list_(request: Request) -> Response:
            caller = api.caller(request)
            query = parse_list_query(kind, _list_params(request))
            page = registry.list(kind, caller, query)
            if view is not None:
                page = Page([shown(caller, doc) for doc in page.children], page.total, page.query)
            return api.listing(request, kind, page)

        if create:
            @app.post(path, name=f"create_{kind.name}", status_code=201)
            async def create_(request: Request) -> Response:
                caller = api.caller(request)
                doc = await write(registry.create, kind, caller, await api.json_body(request))
                doc = shown(caller, doc)
                return _json(doc, kind.profile, 201,
                             _location(request, f"{path}/{doc['id']}"))

        if bulk_delete:
            @app.delete(path, name=f"delete_{kind.collection}")
            async def delete_many(request: Request) -> Response:
                caller = api.caller(request)
                await write(registry.delete_where, kind, caller, bulk_delete,
                            request.query_params.get(bulk_delete))
                return _success(f"{kind.title}s successfully deleted")

        @app.get(path + "/{id}", name=f"get_{kind.name}")
        async def get_(request: Request, id: str) -> Response:
            caller = api.caller(request)
            return _json(shown(caller, registry.get(kind, caller, id)), kind.profile)

        if update:
            @app.put(path + "/{id}", name=f"update_{kind.name}")
            async def put_(request: Request, id: str) -> Response:
                caller = api.caller(request)
                body = await api.json_body(request)
                doc = await write(registry.replace, kind, caller, id, body)
                return _json(shown(caller, doc), kind.profile)

        if delete:
            @app.delete(path + "/{id}", name=f"delete_{kind.name}")
            async def delete_(request: Request, id: str) -> Response:
                caller = api.caller(request)
                await write(registry.delete, kind, caller, id)
                return _success(f"{kind.title} deletion was successful")

    # Fixed paths first, so that they are not read as ids.
    @app.get(f"{BASE}/engines/dockerRegistry")
    async def docker_registry(request: Request) -> Response:
        api.caller(request)
        raise NotFound("This runtime runs engines from installed plugins and has no Docker "
                       "registry; register a local engine instead")

    @app.post(f"{BASE}/engines", status_code=201)
    async def create_engine(request: Request) -> Response:
        caller = api.caller(request)
        if api.media_type(request) == "multipart/form-data":
            body, files = await api.multipart(request, "engine")
        else:
            body, files = await api.json_body(request), {}
        doc = await write(registry.create_engine, caller, body, files)
        return _json(doc, ENGINE.profile, 201, _location(request, f"{BASE}/engines/{doc['id']}"))

    @app.put(f"{BASE}/engines/{{id}}")
    async def replace_engine(request: Request, id: str) -> Response:
        """JSON, or multipart with a new `defaultArtifact` (a new artifact version)."""
        caller = api.caller(request)
        if api.media_type(request) == "multipart/form-data":
            body, files = await api.multipart(request, "engine")
        else:
            body, files = await api.json_body(request), {}
        doc = await write(registry.replace_engine, caller, id, body, files)
        return _json(doc, ENGINE.profile)

    @app.post(f"{BASE}/models", status_code=201)
    async def create_model(request: Request) -> Response:
        caller = api.caller(request)
        if api.media_type(request) == "multipart/form-data":
            body, files = await api.multipart(request, "model")
            artifact = files.get("modelArtifact")
        else:
            body, artifact = await api.json_body(request), None
        doc = await write(registry.create_model, caller, body, artifact)
        return _json(doc, MODEL.profile, 201, _location(request, f"{BASE}/models/{doc['id']}"))

    @app.get(f"{BASE}/models/{{id}}/artifact")
    async def model_artifact(request: Request, id: str) -> Response:
        caller = api.caller(request)
        path = registry.model_artifact(caller, id)
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    @app.get(f"{BASE}/insights/metrics")
    async def insight_metrics(request: Request) -> Response:
        api.caller(request)
        return _json(registry.default_metrics(request.query_params.get("algorithm")),
                     "defaultMetricsListing.v1.json")

    # -- experiment runs ----------------------------------------------------------------------

    runs = f"{BASE}/experiments/{{experiment_id}}/runs"

    @app.get(runs)
    async def list_runs(request: Request, experiment_id: str) -> Response:
        caller = api.caller(request)
        query = parse_list_query(EXPERIMENT_RUN, _list_params(request))
        return api.listing(request, EXPERIMENT_RUN,
                           registry.list_runs(caller, experiment_id, query))

    @app.post(runs + "/{run_id}/cancel",
              summary="Cancel an experiment run (an extension of the Sensei contract)",
              description="Stops a PENDING or RUNNING run, whichever process runs it: a queued "
                          "run leaves the queue, a running run's worker process group is stopped "
                          "(SIGTERM, then SIGKILL after 3 s), a Ray job is stopped. The run ends "
                          "ABORTED with the reason in its status message, and the files it wrote "
                          "in its run folder (all but its log) are removed. Answers the run's "
                          "status once it has ended (waiting up to 5 s; a run still ending then "
                          "is answered as it is). A run that already ended is a 409.",
              responses={200: {"description": "The run's status after the cancel"}})
    async def cancel_run(request: Request, experiment_id: str, run_id: str) -> Response:
        caller = api.caller(request)
        registry.get_run(caller, experiment_id, run_id)   # 404 unless it is this experiment's
        user = caller.user_id
        if executor is None:   # --no-execute: nothing runs, the run only changes state
            await write(registry.abort_unowned_run, caller, run_id, f"cancelled by {user}")
        else:
            await write(executor.cancel, caller, run_id, f"cancelled by {user} through the API")
            await run_in_threadpool(executor.wait_ended, caller, run_id, 5.0)
        return _json(registry.run_status(caller, experiment_id, run_id),
                     "experimentRunStatus.v1.json")

    @app.post(runs, status_code=201)
    async def create_run(request: Request, experiment_id: str) -> Response:
        caller = api.caller(request)
        body = await api.json_body(request)
        # Admitted (prepared once: a run this host can never start is a 400, not queued
        # forever), created and handed to the background in one step, in posting order.
        doc = await write(executor.start if executor is not None else registry.create_run,
                          caller, experiment_id, body)
        return _json(doc, EXPERIMENT_RUN.profile, 201,
                     _location(request, f"{BASE}/experiments/{experiment_id}/runs/{doc['id']}"))

    @app.get(runs + "/{run_id}")
    async def get_run(request: Request, experiment_id: str, run_id: str) -> Response:
        caller = api.caller(request)
        return _json(registry.get_run(caller, experiment_id, run_id), EXPERIMENT_RUN.profile)

    @app.get(runs + "/{run_id}/logs/{name}")
    async def run_log(request: Request, experiment_id: str, run_id: str, name: str) -> Response:
        caller = api.caller(request)
        path = registry.run_log(caller, experiment_id, run_id, name)
        return FileResponse(path, media_type="text/plain; charset=utf-8")

    @app.get(runs + "/{run_id}/status")
    async def run_status(request: Request, experiment_id: str, run_id: str) -> Response:
        caller = api.caller(request)
        return _json(registry.run_status(caller, experiment_id, run_id),
                     "experimentRunStatus.v1.json")

    # Transcoding to CoreML, TF, K2 or Deepnet is a hosted-service feature: a Model here has none.
    @app.get(f"{BASE}/models/{{id}}/transcodings")
    async def list_transcodings(request: Request, id: str) -> Response:
        caller = api.caller(request)
        registry.get(MODEL, caller, id)
        page = {"orderby": "created", "property": "deleted==false", "start": "0",
                "totalCount": 0, "count": 0}
        return _json({"children": [], "_page": page, "_links": {"self": {"href": str(request.url)}}},
                     "modelTranscodingListing.v1.json")

    @app.post(f"{BASE}/models/{{id}}/transcodings")
    async def create_transcoding(request: Request, id: str) -> Response:
        caller = api.caller(request)
        registry.get(MODEL, caller, id)
        raise Unprocessable("Model transcodings (CoreML, TF, K2, Deepnet) are not produced by "
                            "this runtime; download the Model's artifact instead")

    @app.get(f"{BASE}/models/{{id}}/transcodings/{{transcoding_id}}")
    async def get_transcoding(request: Request, id: str, transcoding_id: str) -> Response:
        caller = api.caller(request)
        registry.get(MODEL, caller, id)
        raise NotFound(f"Model transcoding {transcoding_id!r} not found: this runtime produces "
                       "no transcodings")

    add_collection(ENGINE, create=False)
    add_collection(MLINSTANCE, bulk_delete="engineId")
    add_collection(EXPERIMENT, bulk_delete="mlInstanceId")
    add_collection(MODEL, create=False)
    add_collection(INSIGHT, update=False, delete=False)
    # -- MLServices: schedules and published Models (runtime.mlservices, runtime.scheduler) ----

    from ..mlservices import ServiceDesk

    desk = ServiceDesk(registry)
    services = f"{BASE}/mlServices/{{id}}"

    def _service_action(name: str, summary: str, description: str, action: Any) -> None:
        @app.post(f"{services}/{name}", name=f"{name}_mlService", summary=summary,
                  description=description,
                  responses={200: {"description": "The MLService with its status"}})
        async def act(request: Request, id: str) -> Response:
            caller = api.caller(request)
            doc = await write(action, caller, id)
            return _json(doc, MLSERVICE.profile)

    _service_action("pause", "Pause an MLService's schedules (an extension of the contract)",
                    "Fires of a paused MLService start no run; they are recorded as skipped in "
                    "its status.", desk.pause)
    _service_action("resume", "Resume an MLService's schedules (an extension of the contract)",
                    "The next fire after now runs; fires skipped while paused are not made up.",
                    desk.resume)
    for task in ("train", "score"):
        _service_action(f"{task}Now", f"Fire an MLService's {task} schedule now (an extension "
                        "of the contract)", f"The scheduler of this server starts the {task} run "
                        "at its next tick, through the same path as a scheduled fire; the "
                        "regular next fire is kept.",
                        lambda caller, id, task=task: desk.run_now(caller, id, task))
    add_collection(MLSERVICE, bulk_delete="mlInstanceId",
                   view=lambda caller, doc: desk.with_status(caller.scope, doc))

    from .web import mount_web   # the runs page at / and its JSON (runtime/api/web)

    mount_web(app, api, registry)
    return app
