"""The Open Inference Protocol v2 (KServe, MLServer, Triton) on `run serve`: a model's name is
a Model id or an MLService id (its published Model); a table travels as one input per column."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ...serving.payloads import v2_metadata
from .. import deps
from ..deps import read_raw
from .invocations import serving

router = APIRouter()


def _json(doc: object, status: int = 200) -> Response:
    import json

    return Response(json.dumps(doc).encode(), status_code=status, media_type="application/json")


@router.get("/v2/health/live")
async def live(request: Request) -> Response:
    deps.authenticated(request)
    return _json({"live": True})


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    deps.authenticated(request)
    return _json({"ready": True})


@router.get("/v2/models/{name}")
async def model_metadata(request: Request, name: str) -> Response:
    caller = deps.authenticated(request)
    online = serving(request)
    info = await online.describe(caller, await online.kind_of(caller, name), name)
    return _json(v2_metadata(name, info))


@router.get("/v2/models/{name}/ready")
async def model_ready(request: Request, name: str) -> Response:
    caller = deps.authenticated(request)
    online = serving(request)
    await online.describe(caller, await online.kind_of(caller, name), name)
    return _json({"name": name, "ready": True})


@router.post("/v2/models/{name}/infer")
async def infer(request: Request, name: str) -> Response:
    caller = deps.authenticated(request)
    online = serving(request)
    body = await read_raw(request, online.options.max_bytes)
    kind = await online.kind_of(caller, name)
    return await online.invoke(caller, kind, name, body, request.headers.get("content-type", ""),
                               "v2", "v2/infer", request.is_disconnected)
