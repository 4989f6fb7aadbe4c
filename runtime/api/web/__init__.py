"""The web view of runs, served by `run serve` beside the API: one static page and its JSON.

`/`, `/runs/{runId}` and `/compare?runs=ID,ID` all serve the same page (static/index.html), which
reads its view from the address and fetches the JSON below with the API's own auth (a bearer
token when the server has tokens; the page asks for it). The chart library (uPlot, MIT) is
vendored in static/: nothing is downloaded at install or run time.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from ...errors import BadRequest, Forbidden
from ...run_views import RunViews, TableQuery
from ...registry import Caller, Registry
from .. import deps

STATIC = Path(__file__).parent / "static"   # app.py mounts it at /ui/static
UI_API = "/ui/api"
PAGE = STATIC / "index.html"
NO_STORE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _caller_and_views(request: Request) -> tuple[Caller, RunViews]:
    return deps.caller(request), RunViews(deps.registry(request))


def _json(doc: Any) -> Response:
    return Response(json.dumps(doc, separators=(",", ":"), default=str).encode(),
                    media_type="application/json", headers=NO_STORE)


async def index() -> Response:
    return FileResponse(PAGE, media_type="text/html; charset=utf-8", headers=NO_STORE)


for _path in ("/", "/runs/{run_id}", "/compare", "/services"):
    router.add_api_route(_path, index, methods=["GET"])


# Reads that may ingest a running run's new metric points write to SQLite: a worker thread.
@router.get(f"{UI_API}/runs")
async def runs_table(request: Request) -> Response:
    caller, views = _caller_and_views(request)
    query = TableQuery.parse(dict(request.query_params))
    return _json(await run_in_threadpool(views.table, caller, query))


@router.get(f"{UI_API}/choices")
async def choices(request: Request) -> Response:
    caller, views = _caller_and_views(request)
    return _json(await run_in_threadpool(views.choices, caller))


@router.get(f"{UI_API}/scopes")
async def scopes(request: Request) -> Response:
    """The orgs and sandboxes holding objects that this caller may open (a scoped token
    sees only its own), so the page can offer them."""
    caller, views = _caller_and_views(request)
    found = await run_in_threadpool(views.scopes, caller)
    found["scopes"] = [s for s in found["scopes"] if _may_reach(request, s["org"], s["sandbox"])]
    return _json(found)


def _may_reach(request: Request, org: str, sandbox: str) -> bool:
    headers = {**request.headers, "x-gw-ims-org-id": org, "x-sandbox-name": sandbox}
    try:
        deps.authenticated(request, headers)
    except Forbidden:
        return False
    return True


@router.get(f"{UI_API}/services")
async def services(request: Request) -> Response:
    """The Services view: each MLService with its schedules, status (next and last fires,
    published Model and its metrics, recent runs) and its MLInstance's name."""
    caller = deps.caller(request)
    return _json(await run_in_threadpool(_services, deps.registry(request), caller))


@router.get(f"{UI_API}/runs/{{run_id}}")
async def run_detail(request: Request, run_id: str) -> Response:
    caller, views = _caller_and_views(request)
    return _json(await run_in_threadpool(views.detail, caller, run_id))


@router.get(f"{UI_API}/runs/{{run_id}}/log")
async def run_log(request: Request, run_id: str) -> Response:
    caller, views = _caller_and_views(request)
    try:
        offset = int(request.query_params.get("offset") or 0)
    except ValueError:
        raise BadRequest("offset must be an integer") from None
    return _json(await run_in_threadpool(views.log_chunk, caller, run_id, offset))


@router.get(f"{UI_API}/compare")
async def compare(request: Request) -> Response:
    caller, views = _caller_and_views(request)
    experiment = request.query_params.get("experiment")
    if experiment:   # an Experiment's runs (a sweep's trials), newest first
        return _json(await run_in_threadpool(views.compare_experiment, caller, experiment))
    ids = (request.query_params.get("runs") or "").split(",")
    return _json(await run_in_threadpool(views.compare, caller, ids))


# The series as an extension of the Sensei run resource.
@router.get("/data/sensei/experiments/{experiment_id}/runs/{run_id}/metrics")
async def run_metrics(request: Request, experiment_id: str, run_id: str) -> Response:
    caller, views = _caller_and_views(request)
    views.registry.get_run(caller, experiment_id, run_id)   # 404 unless it is that experiment's
    return _json(await run_in_threadpool(views.series, caller, run_id))


def _services(registry: Registry, caller: Caller) -> dict[str, Any]:
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
