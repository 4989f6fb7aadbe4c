"""Online scoring on `run serve`: MLflow's scoring server bodies at
`POST /mlServices/{id}/invocations` (the service's published Model) and
`POST /models/{id}/invocations` (that Model), `GET /metrics` in Prometheus' format, and each
MLService's online traffic as JSON for the runs page. The work is runtime.serving's."""
from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import deps
from ..deps import BASE, read_raw

router = APIRouter()
_lock = threading.Lock()
PREWARM_AFTER_S = 0.2


def serving(request: Request) -> Any:
    """The app's runtime.serving.Serving, made on first use (a server that never scores online
    never starts a host nor imports the serving package)."""
    found = getattr(request.app.state, "serving", None)
    return found if found is not None else serving_of(request.app)


def serving_of(app: Any) -> Any:
    state = app.state
    with _lock:
        found = getattr(state, "serving", None)
        if found is None:
            from ...serving.service import Serving

            executor = state.executor
            if executor is None:   # --no-execute: runs never start, hosts start cold
                from ...runs import RunExecutor

                executor = RunExecutor(state.registry, kind="server")
            from ...serving.hosts import ServingOptions

            found = state.serving = Serving(state.registry, executor, executor.warm,
                                            ServingOptions.from_env())
    return found


async def prewarm(app: Any) -> None:
    """Started by `run serve` once it listens: the warm parents, then the hosts, of the Models
    its MLServices publish (MLRUNTIME_ONLINE_PREWARM: models, parents or off; Serving.prewarm).
    No Serving, no host and no parent when it is off or nothing is published."""
    import asyncio

    from starlette.concurrency import run_in_threadpool

    from ...mlservices import ServiceDesk
    from ...registry import Caller
    from ...serving.hosts import ServingOptions

    if ServingOptions.from_env().prewarm == "off":   # the setting read as Serving reads it
        return
    await asyncio.sleep(PREWARM_AFTER_S)   # uvicorn binds its port after the lifespan's start
    published = await run_in_threadpool(ServiceDesk(app.state.registry).published_everywhere)
    if published:
        await serving_of(app).prewarm([(Caller.local(scope.org, scope.sandbox), service_id,
                                        model) for scope, service_id, model in published])


async def _invoke(request: Request, kind: str, target_id: str, route: str) -> Response:
    caller = deps.authenticated(request)
    online = serving(request)
    body = await read_raw(request, online.options.max_bytes)
    return await online.invoke(caller, kind, target_id, body,
                               request.headers.get("content-type", ""), "mlflow", route,
                               request.is_disconnected)


@router.post(f"{BASE}/mlServices/{{id}}/invocations")
async def service_invocations(request: Request, id: str) -> Response:
    return await _invoke(request, "service", id, "mlServices/invocations")


@router.post(f"{BASE}/models/{{id}}/invocations")
async def model_invocations(request: Request, id: str) -> Response:
    return await _invoke(request, "model", id, "models/invocations")


@router.get(f"{BASE}/online/traffic")
async def online_traffic(request: Request) -> Response:
    """Per MLService of the caller's sandbox: requests, errors, p50 and p99 in ms, the Model
    answering, and the same per 5 s over the last 10 minutes (the runs page's charts)."""
    caller = deps.caller(request)
    found = getattr(request.app.state, "serving", None)
    return deps.json_response({"services": found.traffic_summary(caller.scope) if found else {}},
                              "onlineTraffic.v1.json")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    deps.authenticated(request)
    from ...serving.metrics import CONTENT_TYPE

    found = getattr(request.app.state, "serving", None)
    if found is None:
        from ...serving.metrics import ServingMetrics

        return Response(ServingMetrics().exposition(), media_type=CONTENT_TYPE)
    return Response(found.metrics.exposition(), media_type=CONTENT_TYPE)
