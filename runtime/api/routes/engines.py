"""Engines: `/engines`, created and replaced from JSON or multipart (the artifacts beside the
entity part); there is no Docker registry here."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ...errors import NotFound
from ...schemas import ENGINE
from .. import deps
from ..deps import BASE, entity_and_files, json_response, location, write
from .collection import add_collection

router = APIRouter()


# Fixed paths first, so that they are not read as ids.
@router.get(f"{BASE}/engines/dockerRegistry")
async def docker_registry(request: Request) -> Response:
    deps.caller(request)
    raise NotFound("This runtime runs engines from installed plugins and has no Docker "
                   "registry; register a local engine instead")


@router.post(f"{BASE}/engines", status_code=201)
async def create_engine(request: Request) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    body, files = await entity_and_files(request, "engine")
    doc = await write(registry.create_engine, caller, body, files)
    return json_response(doc, ENGINE.profile, 201, location(request, f"{BASE}/engines/{doc['id']}"))


@router.put(f"{BASE}/engines/{{id}}")
async def replace_engine(request: Request, id: str) -> Response:
    """JSON, or multipart with a new `defaultArtifact` (a new artifact version)."""
    caller, registry = deps.caller(request), deps.registry(request)
    body, files = await entity_and_files(request, "engine")
    doc = await write(registry.replace_engine, caller, id, body, files)
    return json_response(doc, ENGINE.profile)


# Its PUT is replace_engine's above (the first route wins); it stays for the OpenAPI it documents.
add_collection(router, ENGINE, create=False)
