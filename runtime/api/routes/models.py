"""Models: `/models`, created from JSON or multipart (`modelArtifact`), their artifact's download,
and transcodings, which this runtime never produces."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from ...errors import NotFound, Unprocessable
from ...schemas import MODEL
from .. import deps
from ..deps import BASE, entity_and_files, json_response, location, write
from .collection import add_collection

router = APIRouter()


@router.post(f"{BASE}/models", status_code=201)
async def create_model(request: Request) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    body, files = await entity_and_files(request, "model")
    doc = await write(registry.create_model, caller, body, files.get("modelArtifact"))
    return json_response(doc, MODEL.profile, 201, location(request, f"{BASE}/models/{doc['id']}"))


@router.get(f"{BASE}/models/{{id}}/artifact")
async def model_artifact(request: Request, id: str) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    path = registry.model_artifact(caller, id)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


# Transcoding to CoreML, TF, K2 or Deepnet is a hosted-service feature: a Model here has none.
@router.get(f"{BASE}/models/{{id}}/transcodings")
async def list_transcodings(request: Request, id: str) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    registry.get(MODEL, caller, id)
    page = {"orderby": "created", "property": "deleted==false", "start": "0",
            "totalCount": 0, "count": 0}
    return json_response({"children": [], "_page": page,
                          "_links": {"self": {"href": str(request.url)}}},
                         "modelTranscodingListing.v1.json")


@router.post(f"{BASE}/models/{{id}}/transcodings")
async def create_transcoding(request: Request, id: str) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    registry.get(MODEL, caller, id)
    raise Unprocessable("Model transcodings (CoreML, TF, K2, Deepnet) are not produced by "
                        "this runtime; download the Model's artifact instead")


@router.get(f"{BASE}/models/{{id}}/transcodings/{{transcoding_id}}")
async def get_transcoding(request: Request, id: str, transcoding_id: str) -> Response:
    caller, registry = deps.caller(request), deps.registry(request)
    registry.get(MODEL, caller, id)
    raise NotFound(f"Model transcoding {transcoding_id!r} not found: this runtime produces "
                   "no transcodings")


add_collection(router, MODEL, create=False)
