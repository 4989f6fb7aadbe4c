"""The web view of runs, served by `run serve` beside the API: one static page and its JSON.

`/`, `/runs/{runId}` and `/compare?runs=ID,ID` all serve the same page (static/index.html), which
reads its view from the address and fetches the JSON below with the API's own auth (a bearer
token when the server has tokens; the page asks for it). The chart library (uPlot, MIT) is
vendored in static/: nothing is downloaded at install or run time.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from ...errors import BadRequest, Forbidden
from ...run_views import RunViews, TableQuery
from ..auth import authenticate

if TYPE_CHECKING:
    from ...registry import Registry
    from ..app import Api

STATIC = Path(__file__).parent / "static"
UI_API = "/ui/api"


def mount_web(app: FastAPI, api: "Api", registry: "Registry") -> None:
    views = RunViews(registry)
    page = STATIC / "index.html"
    no_store = {"Cache-Control": "no-cache"}

    def _json(doc: Any) -> Response:
        return Response(json.dumps(doc, separators=(",", ":"), default=str).encode(),
                        media_type="application/json", headers=no_store)

    async def index(request: Request) -> Response:
        return FileResponse(page, media_type="text/html; charset=utf-8", headers=no_store)

    for path in ("/", "/runs/{run_id}", "/compare", "/services"):
        app.add_api_route(path, index, methods=["GET"], include_in_schema=False)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    # Reads that may ingest a running run's new metric points write to SQLite: a worker thread.
    @app.get(f"{UI_API}/runs", include_in_schema=False)
    async def runs_table(request: Request) -> Response:
        caller = api.caller(request)
        query = TableQuery.parse(dict(request.query_params))
        return _json(await run_in_threadpool(views.table, caller, query))

    @app.get(f"{UI_API}/choices", include_in_schema=False)
    async def choices(request: Request) -> Response:
        caller = api.caller(request)
        return _json(await run_in_threadpool(views.choices, caller))

    @app.get(f"{UI_API}/scopes", include_in_schema=False)
    async def scopes(request: Request) -> Response:
        """The orgs and sandboxes holding objects that this caller may open (a scoped token
        sees only its own), so the page can offer them."""
        caller = api.caller(request)
        found = await run_in_threadpool(views.scopes, caller)
        found["scopes"] = [s for s in found["scopes"] if _may_reach(request, s["org"], s["sandbox"])]
        return _json(found)

    def _may_reach(request: Request, org: str, sandbox: str) -> bool:
        headers = {**request.headers, "x-gw-ims-org-id": org, "x-sandbox-name": sandbox}
        try:
            authenticate(api.settings.tokens, headers,
                         request.client.host if request.client else None, api.local_user)
        except Forbidden:
            return False
        return True

    @app.get(f"{UI_API}/services", include_in_schema=False)
    async def services(request: Request) -> Response:
        """The Services view: each MLService with its schedules, status (next and last fires,
        published Model and its metrics, recent runs) and its MLInstance's name."""
        caller = api.caller(request)
        return _json(await run_in_threadpool(_services, registry, caller))

    @app.get(f"{UI_API}/runs/{{run_id}}", include_in_schema=False)
    async def run_detail(request: Request, run_id: str) -> Response:
        caller = api.caller(request)
        return _json(await run_in_threadpool(views.detail, caller, run_id))

    @app.get(f"{UI_API}/runs/{{run_id}}/log", include_in_schema=False)
    async def run_log(request: Request, run_id: str) -> Response:
        caller = api.caller(request)
        try:
            offset = int(request.query_params.get("offset") or 0)
        except ValueError:
            raise BadRequest("offset must be an integer") from None
        return _json(await run_in_threadpool(views.log_chunk, caller, run_id, offset))

    @app.get(f"{UI_API}/compare", include_in_schema=False)
    async def compare(request: Request) -> Response:
        caller = api.caller(request)
        ids = (request.query_params.get("runs") or "").split(",")
        return _json(await run_in_threadpool(views.compare, caller, ids))

    # The series as an extension of the Sensei run resource.
    @app.get("/data/sensei/experiments/{experiment_id}/runs/{run_id}/metrics", include_in_schema=False)
    async def run_metrics(request: Request, experiment_id: str, run_id: str) -> Response:
        caller = api.caller(request)
        registry.get_run(caller, experiment_id, run_id)   # 404 unless the run is in that experiment
        return _json(await run_in_threadpool(views.series, caller, run_id))


def _services(registry: "Registry", caller: Any) -> dict[str, Any]:
    from ...errors import NotFound
    from ...listing import Filter, ListQuery
    from ...mlservices import ServiceDesk
    from ...schemas import MLINSTANCE, MLSERVICE

    services = ServiceDesk(registry)
    query = ListQuery(filters=(Filter("deleted", "==", False, "bool"),),
                      order=(("created", True),), limit=100)
    page = registry.list(MLSERVICE, caller, query)
    out = []
    for row in page.children:
        doc = services.with_status(caller.scope, registry.get_unmasked(MLSERVICE, caller, row["id"]))
        try:
            instance = registry.get(MLINSTANCE, caller, doc.get("mlInstanceId"))
            doc["mlInstanceName"] = instance.get("name")
        except NotFound:
            doc["mlInstanceName"] = None
        out.append(doc)
    return {"services": out, "total": page.total}
